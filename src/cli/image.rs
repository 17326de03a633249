//! `interf-image image` (and plain `interf-image VIS.ms`): posterior samples of the sky with a
//! score-based prior, their mean and standard deviation as FITS, and the dirty image and PSF
//! at the same geometry. The job is [`crate::pipeline::image`]; this file parses, writes and
//! prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{
    default_name, format_angle, output_path, parse_angle, set_threads, ComputeArgs, MethodArg,
    SamplingArgs, SelectionArgs,
};
use super::interrupt::Terminal;
use super::prior::{device, DeviceArg};
use crate::imaging::{GainMode, SelfcalOptions, SolutionInterval};
use crate::io::{write_cube, write_image, CubeAxis};
pub use crate::pipeline::image::{
    CellModel, CompactMode, DataKind, LikelihoodKind, NoiseSource, WindowMode,
};
use crate::pipeline::image::{ImageOptions, ImageResult};
// The names other subcommands import from here.
pub use crate::pipeline::image::NoiseSource as NoiseArg;
pub use crate::pipeline::vis::merge_by_frequency;
use crate::prior::{default_prior, ScoreModel};
use crate::report::posterior::{write_report, PosteriorReport};

/// Gains solved in each self-calibration round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelfcalModeArg {
    /// Phase only.
    P,
    /// Amplitude and phase (amplitudes normalised to a geometric mean of 1 per interval).
    Ap,
}

#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// The Measurement Set (opened read-only).
    pub vis: PathBuf,
    /// Prior checkpoint folder (config.json + weights.safetensors). Default: the prior built
    /// into the binary (MiraBest radio galaxies, 64²).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Posterior samples to draw.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Where the likelihood meets the data.
    #[arg(long, value_enum, default_value_t = LikelihoodKind::Auto)]
    pub likelihood: LikelihoodKind,
    /// Oversampling of the gridded likelihood's uv grid (cells of 1/(P·N·Δ)). Averaging throws
    /// away how the visibilities vary inside a cell: on a simulated VLA observation at peak
    /// S/N 1000 the samples fitted every visibility at reduced χ² 1.56 with P = 1 and 1.09
    /// with P = 4, for 2.8× the cells. Each cell's Γ is widened by the number of cells sharing
    /// its P = 1 cell (their rows overlap), as the visibility likelihood's is.
    #[arg(long, default_value_t = 4)]
    pub grid_padding: usize,
    /// How the gridded likelihood models a cell: `exact`, the weighted mean of its visibilities'
    /// own Fourier rows (a dense cells × pixels matrix); `centre`, the Fourier transform at the
    /// cell centre (a masked FFT that scales to large images, with an error that grows with the
    /// source's extent over the field / P); `auto`, exact while the matrix stays under 2²⁶
    /// entries (512 MB).
    #[arg(long, value_enum, default_value_t = CellModel::Auto)]
    pub cell_model: CellModel,
    /// Gridded likelihood: take a cell's σ from the scatter of its visibilities when it holds at
    /// least this many (never below the weights' σ); 0 (default): from the weights (and the
    /// --noise estimate). The scatter also holds the sky's variation across a cell, which the
    /// cell-averaged model already fits, so it overstates σ for bright extended sources.
    #[arg(long, default_value_t = 0)]
    pub cell_scatter_min: usize,
    /// Pixel size (0.5asec, 20masec, …). Default: a third of the theoretical beam.
    #[arg(long)]
    pub scale: Option<String>,
    /// Flux of a prior image's brightest pixel, Jy/pixel. Default: the peak of the dirty image
    /// left once the compact components are fitted (the dirty image's peak without them).
    #[arg(long)]
    pub flux_scale: Option<f64>,
    /// Unresolved bright components (a quasar's core) with a flat prior on their flux, the rest
    /// of the sky under the score prior. `auto`: the pixels of a CLEAN model at the posterior's
    /// geometry that hold ≥ 30 % of the restored brightness at their position, ≥ 20σ and ≥ 1 %
    /// of the brightest component; `off`: the whole sky under the prior.
    #[arg(long, value_enum, default_value_t = CompactMode::Auto)]
    pub compact: CompactMode,
    /// Most compact pixels (`--compact auto`), the brightest first.
    #[arg(long, default_value_t = 32)]
    pub compact_max: usize,
    /// A window (CLEAN mask) for the emission: `auto` keeps the pixels where a positive deep
    /// CLEAN's restored image is above 5σ of its residual, grown by one restoring beam, and
    /// the compact components; outside it the sky is zero. Recommended for sparse (VLBI)
    /// coverage, where the data leave patterns across the whole field unconstrained.
    #[arg(long, value_enum, default_value_t = WindowMode::Off)]
    pub window: WindowMode,
    /// A disk of this radius (e.g. 40uas, 2masec) around the phase centre where the sky may be
    /// non-zero, on its own or intersected with `--window auto`: the compact-source field of
    /// view VLBI imagers assume when the data (closures) cannot place emission themselves.
    #[arg(long)]
    pub window_radius: Option<String>,
    /// Self-calibration rounds before the final posterior (Difmap's habit for VLBI): each
    /// round images the data (at most 16 samples), solves station gains against the mean and
    /// divides them out. χ² is then reported against the corrected data, and against the
    /// data as they came.
    #[arg(long, default_value_t = 0)]
    pub selfcal: usize,
    /// Gains solved in each self-calibration round.
    #[arg(long, value_enum, default_value_t = SelfcalModeArg::Ap)]
    pub selfcal_mode: SelfcalModeArg,
    /// Solution interval: `scan` (time stamps split where they jump by more than five
    /// integrations) or seconds.
    #[arg(long, default_value = "scan")]
    pub selfcal_interval: String,
    /// What the likelihood fits: the visibilities, or closure quantities that station gains
    /// cannot change (non-redundant sets per time stamp, linearised thermal variances, Blackburn
    /// et al. 2020). Closure likelihoods are not linear-Gaussian: they are sampled with DPS, with
    /// no compact components and no self-calibration.
    #[arg(long, value_enum, default_value_t = DataKind::Vis)]
    pub data: DataKind,
    /// Total flux (Jy) the closure likelihoods are held to (±10 %), since closures are blind
    /// to it. Default: the median amplitude of the shortest 5 % of baselines (for EHT data
    /// give the compact flux, e.g. 0.6 Jy for M87, as the intra-site baselines also see the jet).
    #[arg(long)]
    pub total_flux: Option<f64>,
    /// How the visibility noise is set.
    #[arg(long, value_enum, default_value_t = NoiseSource::Auto)]
    pub noise: NoiseSource,
    /// Output prefix. Default: the MS name.
    #[arg(long, value_parser = super::common::output_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Write the results even when the fit is poor (reduced χ² above 100 or not finite).
    #[arg(long)]
    pub allow_poor_fit: bool,
    /// Most memory the network batch may take (e.g. 64GB, 500MB). Default: the memory
    /// available now; a larger --batch is refused before anything is allocated.
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

impl ImageArgs {
    /// The arguments of `interf-image VIS.ms`: every option at its command-line default.
    pub fn defaults_for(vis: PathBuf) -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: ImageArgs,
        }
        <Only as clap::Parser>::parse_from([std::ffi::OsString::from("image"), vis.into()]).args
    }
}

/// The pipeline's options from the command line (angles parsed, nothing read yet).
fn options(args: &ImageArgs) -> anyhow::Result<ImageOptions> {
    Ok(ImageOptions {
        vis: args.vis.clone(),
        selection: args.selection.to_selection()?,
        prior_dir: args.prior.clone(),
        posterior: args.sampling.options(args.samples, MethodArg::Dps),
        likelihood: args.likelihood,
        grid_padding: args.grid_padding,
        cell_model: args.cell_model,
        cell_scatter_min: args.cell_scatter_min,
        scale: args.scale.as_deref().map(parse_angle).transpose()?,
        flux_scale: match args.flux_scale {
            Some(f) if !(f > 0.0 && f.is_finite()) => {
                anyhow::bail!("--flux-scale must be positive, got {f}")
            }
            f => f,
        },
        compact: args.compact,
        compact_max: args.compact_max,
        window: args.window,
        window_radius: args.window_radius.as_deref().map(parse_angle).transpose()?,
        selfcal_rounds: args.selfcal,
        selfcal: SelfcalOptions {
            mode: match args.selfcal_mode {
                SelfcalModeArg::P => GainMode::Phase,
                SelfcalModeArg::Ap => GainMode::AmplitudePhase,
            },
            interval: match args.selfcal_interval.as_str() {
                "scan" => SolutionInterval::Scan,
                s => SolutionInterval::Seconds(s.parse().map_err(|_| {
                    anyhow::anyhow!("--selfcal-interval must be 'scan' or seconds, got '{s}'")
                })?),
            },
            ..Default::default()
        },
        data: args.data,
        total_flux: args.total_flux,
        noise: args.noise,
        nufft: crate::operator::NufftOptions {
            epsilon: args.compute.epsilon,
            ..Default::default()
        },
        max_memory: args.max_memory,
    })
}

/// The files `image` writes, after `NAME-`.
const FILES: [&str; 8] = [
    "samples.fits",
    "mean.fits",
    "std.fits",
    "dirty.fits",
    "psf.fits",
    "residual.fits",
    "summary.json",
    "report.html",
];

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.compute.threads)?;
    let opts = options(&args)?;
    let dev = device(args.device)?;
    let model = match &args.prior {
        Some(dir) => ScoreModel::load(dir, &dev)?,
        None => default_prior(&dev).context("loading the built-in prior")?,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let res = crate::pipeline::image::image(&model, &opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let res = res?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.vis));
    let inputs: Vec<&Path> = [Some(args.vis.as_path()), args.prior.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    // Sanity gate and output policy before anything is written, so nothing is half-written.
    // Closures: the data's own phases and amplitudes are not trusted, so the gate is the
    // samples' closure χ² (the mean of images free to shift is no fit to judge).
    let gate_chi2 = match res.chi2_closure_mean {
        Some(_) => median_min_max(&res.chi2_lik).0,
        None => res.chi2_mean,
    };
    super::common::check_fit(
        gate_chi2,
        res.mean.iter().map(|&v| v as f64).sum(),
        &[
            ("mean", &res.mean),
            ("std", &res.std),
            ("samples", &res.samples),
        ],
        args.allow_poor_fit,
    )?;
    super::common::check_outputs(&name, &FILES, &inputs)?;
    print_summary(&args, &opts, &res);
    let html = write_outputs(&args, &opts, &res, &name, &inputs)?;
    println!(
        "  wrote {name}-samples.fits, -mean, -std, -dirty, -psf, -residual, -summary.json and {} in {:.1} s",
        html.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Median, smallest and largest of `v` (not empty).
fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn noise_line(res: &ImageResult) -> String {
    match res.noise {
        Some(e) => format!(
            "from {} successive differences (σ² = {:.3e}/w)",
            e.n_pairs, e.weight_factor
        ),
        None => "σ² = 1/WEIGHT".into(),
    }
}

/// What the terminal shows of a result.
fn print_summary(args: &ImageArgs, opts: &ImageOptions, res: &ImageResult) {
    let side = res.side;
    let (chi2_med, chi2_lo, chi2_hi) = median_min_max(&res.chi2);
    println!("{}", args.vis.display());
    println!(
        "  {} samples of {side}×{side} pixels of {} ({} steps, {:?}), {:.1} s sampling",
        res.n_samples,
        format_angle(res.scale),
        opts.posterior.steps,
        res.method,
        res.t_sample.as_secs_f64()
    );
    println!(
        "  {} visibilities ({} data in the {} likelihood), noise {}, flux scale {:.4} Jy/pixel",
        res.n_usable,
        res.n_data,
        if res.chi2_closure_mean.is_some() {
            "closure".to_string()
        } else {
            format!("{:?}", res.likelihood)
        },
        noise_line(res),
        res.flux_scale
    );
    println!(
        "  reduced χ² over all visibilities: mean image {:.3}; samples median \
         {chi2_med:.3} (range {chi2_lo:.3}–{chi2_hi:.3})",
        res.chi2_mean
    );
    if let Some(x) = res.chi2_closure_mean {
        let (m, lo, hi) = median_min_max(&res.chi2_lik);
        println!(
            "  reduced χ² over the {} closures ({:?}): mean image {x:.3}; samples median {m:.3} (range {lo:.3}–{hi:.3})",
            res.n_data, args.data
        );
    }
    if let Some(k) = res.window_pixels {
        println!(
            "  window (CLEAN mask): {k} of {} pixels; zero outside",
            side * side
        );
    }
    if let Some(x) = res.chi2_raw {
        println!(
            "  ({} self-calibration rounds: χ² against the gain-corrected data; the mean against \
             the data as they came: {x:.3})",
            args.selfcal
        );
    }
    if res.likelihood == LikelihoodKind::Gridded {
        println!(
            "  reduced χ² of the samples over the {} gridded cells: median {:.3}",
            res.n_data,
            median_min_max(&res.chi2_lik).0
        );
    }
    if let Some(x) = res.chi2_clean {
        println!(
            "  reduced χ² of the CLEAN model (natural, 1σ auto-threshold) at this geometry: {x:.3}"
        );
    }
    if !res.compact.is_empty() {
        println!(
            "  {} compact components (flat prior on flux), diffuse emission under the prior:",
            res.compact.len()
        );
        for k in res.compact.iter().take(8) {
            println!(
                "    ΔRA {} ΔDec {}: {:.4} ± {:.4} Jy",
                format_angle((k.offset_asec[0] / 3600.0).to_radians()),
                format_angle((k.offset_asec[1] / 3600.0).to_radians()),
                k.flux_mean,
                k.flux_std
            );
        }
        if res.compact.len() > 8 {
            println!("    … {} more in the summary JSON", res.compact.len() - 8);
        }
    }
    let (fmean, fstd) = res.total_flux;
    println!("  total flux {fmean:.4} ± {fstd:.4} Jy");
    println!("  prior check: {}", res.prior_check.line);
}

/// The FITS images, the HTML report and the summary JSON; returns the report's path.
fn write_outputs(
    args: &ImageArgs,
    opts: &ImageOptions,
    res: &ImageResult,
    name: &str,
    inputs: &[&Path],
) -> anyhow::Result<PathBuf> {
    let side = res.side;
    let p = |s: &str| output_path(name, s, inputs);
    write_cube(
        &p("samples")?,
        &res.samples,
        res.n_samples,
        side,
        side,
        &res.header,
        CubeAxis::Sample,
    )?;
    write_image(&p("mean")?, &res.mean, side, side, &res.header)?;
    write_image(&p("std")?, &res.std, side, side, &res.header)?;
    write_image(&p("dirty")?, &res.dirty.dirty, side, side, &res.beam_header)?;
    write_image(&p("psf")?, &res.dirty.psf, side, side, &res.beam_header)?;
    write_image(
        &p("residual")?,
        &res.residual_dirty,
        side,
        side,
        &res.beam_header,
    )?;
    let html = write_report(name, &report(args, opts, res))?;
    // The same numbers for scripts (calibration studies, pipelines), next to the FITS files.
    let jp = p("summary")?.with_extension("json");
    let json = summary_json(args, opts, res);
    crate::io::write_atomic(&jp, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("cannot write {}", jp.display()))?;
    Ok(html)
}

/// The report's summary table.
fn summary_rows(args: &ImageArgs, opts: &ImageOptions, res: &ImageResult) -> Vec<(String, String)> {
    let (fmean, fstd) = res.total_flux;
    let mut rows: Vec<(String, String)> = vec![
        ("Measurement Set".into(), args.vis.display().to_string()),
        ("Prior".into(), opts.prior_name()),
        (
            "Sampling".into(),
            format!(
                "{} samples, {} steps, {:?}, {:?} likelihood, α = {}, seed {}",
                res.n_samples,
                opts.posterior.steps,
                res.method,
                res.likelihood,
                opts.posterior.alpha,
                opts.posterior.seed
            ),
        ),
        (
            "Image".into(),
            format!("{0}×{0} pixels of {1}", res.side, format_angle(res.scale)),
        ),
        (
            "Flux scale".into(),
            format!("{:.4} Jy/pixel at prior value 1", res.flux_scale),
        ),
        ("Total flux".into(), format!("{fmean:.4} ± {fstd:.4} Jy")),
        (
            "Noise".into(),
            match res.noise {
                Some(e) => format!(
                    "σ² = {:.3e}/w from {} successive differences",
                    e.weight_factor, e.n_pairs
                ),
                None => "σ² = 1/WEIGHT".into(),
            },
        ),
        (
            "Reduced χ² of the mean".into(),
            format!("{:.3} over {} visibilities", res.chi2_mean, res.n_usable),
        ),
        (
            "Reduced χ² of the CLEAN model".into(),
            res.chi2_clean.map_or_else(
                || "no CLEAN model".into(),
                |x| format!("{x:.3} (same visibilities and noise)"),
            ),
        ),
        (
            "Compact components".into(),
            match res.compact.first() {
                None => "none: the whole sky under the prior".into(),
                Some(first) => format!(
                    "{} pixels with a flat prior on flux, {:.4} Jy in all (brightest {:.4} ± {:.4} Jy)",
                    res.compact.len(),
                    res.compact.iter().map(|k| k.flux_mean).sum::<f64>(),
                    first.flux_mean,
                    first.flux_std
                ),
            },
        ),
        ("Prior check".into(), res.prior_check.line.clone()),
        ("Dirty image".into(), "natural weighting, Jy/beam".into()),
        (
            "Sampling time".into(),
            format!("{:.1} s", res.t_sample.as_secs_f64()),
        ),
    ];
    if let Some(c) = &res.clean {
        rows.push((
            "CLEAN image".into(),
            format!(
                "natural weighting, {} iterations, {} major cycles, beam {:.2}″ × {:.2}″ PA {:.0}°",
                c.iterations,
                c.major_cycles,
                c.beam.major_deg * 3600.0,
                c.beam.minor_deg * 3600.0,
                c.beam.pa_deg
            ),
        ));
    }
    rows
}

fn report<'a>(args: &ImageArgs, opts: &ImageOptions, res: &'a ImageResult) -> PosteriorReport<'a> {
    PosteriorReport {
        title: format!(
            "{} — posterior ({} samples, {:?})",
            args.vis.file_name().map_or_else(
                || args.vis.display().to_string(),
                |f| f.to_string_lossy().into_owned()
            ),
            res.n_samples,
            res.method
        ),
        ny: res.side,
        nx: res.side,
        pixel_asec: res.scale.to_degrees() * 3600.0,
        dirty: &res.dirty.dirty,
        mean: &res.mean,
        std: &res.std,
        samples: &res.samples,
        n_samples: res.n_samples,
        residual_dirty: &res.residual_dirty,
        clean_image: res.clean.as_ref().map(|c| c.restored.as_slice()),
        chi2: &res.chi2,
        chi2_mean: res.chi2_mean,
        chi2_clean: res.chi2_clean,
        beam_significance: res.beam_significance.as_deref(),
        uv_dist: &res.uv_dist,
        data_amp: &res.data_amp,
        model_amp: &res.model_amp,
        summary: summary_rows(args, opts, res),
    }
}

fn summary_json(args: &ImageArgs, opts: &ImageOptions, res: &ImageResult) -> serde_json::Value {
    let (fmean, fstd) = res.total_flux;
    serde_json::json!({
        "measurement_set": args.vis,
        "prior": opts.prior_name(),
        "method": format!("{:?}", res.method).to_lowercase(),
        "likelihood": format!("{:?}", res.likelihood).to_lowercase(),
        "samples": res.n_samples,
        "steps": opts.posterior.steps,
        "seed": opts.posterior.seed,
        "alpha": opts.posterior.alpha,
        "image_size": res.side,
        "pixel_arcsec": res.scale.to_degrees() * 3600.0,
        "flux_scale_jy_per_pixel": res.flux_scale,
        "noise_factor": res.noise_factor,
        "n_visibilities": res.n_usable,
        "n_likelihood_data": res.n_data,
        "reduced_chi2_mean_image": res.chi2_mean,
        "reduced_chi2_clean_model": res.chi2_clean,
        "selfcal": res.selfcal,
        "window_pixels": res.window_pixels,
        "reduced_chi2_mean_image_uncalibrated_data": res.chi2_raw,
        "compact_components": res.compact.iter().map(|k| serde_json::json!({
            "pixel_yx": k.pixel_yx,
            "offset_arcsec_ra_dec": k.offset_asec,
            "flux_jy": { "mean": k.flux_mean, "std": k.flux_std },
        })).collect::<Vec<_>>(),
        "reduced_chi2_samples": res.chi2,
        "reduced_chi2_samples_likelihood_data": res.chi2_lik,
        "data": format!("{:?}", args.data).to_lowercase(),
        "reduced_chi2_mean_closures": res.chi2_closure_mean,
        "total_flux_jy": { "mean": fmean, "std": fstd },
        "prior_check": res.prior_check.check,
        "sampling_seconds": res.t_sample.as_secs_f64(),
    })
}
