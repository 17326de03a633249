//! `interf-image image` (and plain `interf-image VIS.ms`): posterior samples of the sky with a
//! score-based prior, their mean and standard deviation as FITS, and the dirty image and PSF
//! at the same geometry.

pub use super::common::MethodArg;
use super::common::{ComputeArgs, SamplingArgs};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{
    check_network_batch, count_usable, default_name, format_angle, longest_baseline, output_path,
    parse_angle, read_with_progress, set_threads, sky_header, SelectionArgs,
};
use super::prior::{device, DeviceArg};
use crate::imaging::{
    clean_window, compact_pixels, estimate_noise, make_dirty_and_psf, solve_gains, CompactOptions,
    GainMode, ImagingOptions, SelfcalOptions, SolutionInterval, Weighting,
};
use crate::io::{write_cube, write_image, CubeAxis, HeaderValue};
use crate::likelihood::closure::ClosureLikelihood;
use crate::likelihood::{CompactMarginal, GaussianLikelihood};
use crate::operator::nufft::ms2dirty;
use crate::operator::{
    cell_multiplicity, CellAveraged, CellNoise, ForwardOperator, Gridded, GriddedVisibilities,
    ImageGeometry, Masked, Nufft, NufftOptions, Scaled,
};
use crate::prior::{default_prior, ScoreModel};
use crate::report::posterior::{write_report, PosteriorReport};
use crate::sample::posterior::{sample_posterior, Method, PosteriorOptions};
use ms_io::{VisChunk, VisFile};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LikelihoodArg {
    /// `visibilities` up to 100 000 usable visibilities (exact, still cheap), `gridded` beyond.
    Auto,
    /// Visibilities averaged into the cells of a uv grid matched to the image (Dia et al.
    /// 2023), each cell modelled exactly as the mean of its visibilities: sampling cost
    /// independent of the number of visibilities (gridding them once is linear in it).
    Gridded,
    /// Every unflagged visibility through the NUFFT: exact, cost grows with the data.
    Visibilities,
}

/// Which quantities of the visibilities the likelihood fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataArg {
    /// The complex visibilities (calibrated data).
    Vis,
    /// Closure phases only (VLBI data whose station phases cannot be trusted), with a
    /// total-flux constraint for the scale.
    Cphase,
    /// Closure phases and log closure amplitudes (neither station phases nor amplitudes
    /// trusted), with a total-flux constraint; the EHT's choice.
    CphaseLcamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CellModelArg {
    Auto,
    Exact,
    Centre,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompactArg {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WindowArg {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelfcalModeArg {
    /// Phase only.
    P,
    /// Amplitude and phase (amplitudes normalised to a geometric mean of 1 per interval).
    Ap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NoiseArg {
    /// σ from the scatter of successive integrations, shaped by the MS weights.
    Auto,
    /// σ² = 1/WEIGHT as written in the Measurement Set.
    Weights,
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
    #[arg(long, value_enum, default_value_t = LikelihoodArg::Auto)]
    pub likelihood: LikelihoodArg,
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
    #[arg(long, value_enum, default_value_t = CellModelArg::Auto)]
    pub cell_model: CellModelArg,
    /// Gridded likelihood: take a cell's σ from the scatter of its visibilities when it holds at
    /// least this many (never below the weights' σ); 0 (default): from the weights (and the
    /// --noise estimate). The scatter also holds the sky's variation across a cell, which the
    /// cell-averaged model already fits, so it overstates σ for bright extended sources.
    #[arg(long, default_value_t = 0)]
    pub cell_scatter_min: usize,
    /// Pixel size (0.5asec, 20masec, …). Default: a quarter of the theoretical beam.
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
    #[arg(long, value_enum, default_value_t = CompactArg::Auto)]
    pub compact: CompactArg,
    /// Most compact pixels (`--compact auto`), the brightest first.
    #[arg(long, default_value_t = 32)]
    pub compact_max: usize,
    /// A window (CLEAN mask) for the emission: `auto` keeps the pixels where a positive deep
    /// CLEAN's restored image is above 5σ of its residual, grown by one restoring beam, and
    /// the compact components; outside it the sky is zero. Recommended for sparse (VLBI)
    /// coverage, where the data leave patterns across the whole field unconstrained.
    #[arg(long, value_enum, default_value_t = WindowArg::Off)]
    pub window: WindowArg,
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
    #[arg(long, value_enum, default_value_t = DataArg::Vis)]
    pub data: DataArg,
    /// Total flux (Jy) the closure likelihoods are held to (±10 %), since closures are blind
    /// to it. Default: the median amplitude of the shortest 5 % of baselines (for EHT data
    /// give the compact flux, e.g. 0.6 Jy for M87, as the intra-site baselines also see the jet).
    #[arg(long)]
    pub total_flux: Option<f64>,
    /// How the visibility noise is set.
    #[arg(long, value_enum, default_value_t = NoiseArg::Auto)]
    pub noise: NoiseArg,
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

/// Every usable visibility (weight > 0) as (re, im) and its σ per component, `√(factor/w)`.
pub(crate) fn usable_data(c: &VisChunk, factor: f64) -> (Vec<f32>, Vec<f32>) {
    let (mut y, mut sigma) = (Vec::new(), Vec::new());
    for (v, &w) in c.vis.iter().zip(&c.weight).filter(|(_, &w)| w > 0.0) {
        let s = (factor / w as f64).sqrt() as f32;
        y.extend([v.re, v.im]);
        sigma.extend([s, s]);
    }
    (y, sigma)
}

/// Chunks that share a frequency list become one, so that one NUFFT plan covers them.
pub(crate) fn merge_by_frequency(chunks: Vec<VisChunk>) -> Vec<VisChunk> {
    let mut out: Vec<VisChunk> = Vec::new();
    for c in chunks {
        match out.iter_mut().find(|o| o.freq == c.freq) {
            Some(o) => {
                o.uvw.extend(c.uvw);
                o.antenna1.extend(c.antenna1);
                o.antenna2.extend(c.antenna2);
                o.time.extend(c.time);
                o.vis.extend(c.vis);
                o.weight.extend(c.weight);
            }
            None => out.push(c),
        }
    }
    out
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.compute.threads)?;
    if args.samples == 0 || args.sampling.steps == 0 {
        bail!("--samples and --steps must be at least 1");
    }
    let dev = device(args.device)?;
    let model = match &args.prior {
        Some(dir) => ScoreModel::load(dir, &dev)?,
        None => default_prior(&dev).context("loading the built-in prior")?,
    };
    let side = model.image_size();
    check_network_batch(
        &model.config().network,
        args.sampling.batch_for(args.samples),
        args.sampling.method == MethodArg::Dps,
        args.max_memory,
    )?;
    let selection = args.selection.to_selection()?;
    let ms = VisFile::open(&args.vis)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&selection)?;
    let mut chunks = merge_by_frequency(read_with_progress(&ms, &selection)?);
    let n_usable = count_usable(&chunks, &args.vis)?;
    let scale = match &args.scale {
        Some(s) => parse_angle(s)?,
        // A third of the theoretical beam: fine enough to resolve the beam, wide enough at the
        // prior's 64 pixels to hold a source of a few beams (3C 273's core and jet).
        None => (1.0 / 3.0) / longest_baseline(&chunks),
    };
    let geometry = ImageGeometry::new(side, side, scale, scale)?;
    let nufft_opts = NufftOptions {
        epsilon: args.compute.epsilon,
        ..Default::default()
    };

    let closures = args.data != DataArg::Vis;
    if closures && args.selfcal > 0 {
        bail!(
            "--selfcal fits station gains, which --data {:?} is already blind to: drop one of them",
            args.data
        );
    }
    if closures && args.sampling.method == MethodArg::Cla {
        eprintln!("closure likelihood: sampling with DPS (the convolved approximation needs a linear-Gaussian likelihood)");
    }
    let opts = PosteriorOptions {
        method: if closures {
            Method::Dps
        } else {
            args.sampling.method.into()
        },
        ..args.sampling.options(args.samples)
    };
    // Self-calibration rounds: a posterior (at most 16 samples) gives a model, station gains
    // are solved against it and divided out, and the next round images the corrected data.
    let raw_chunks = (args.selfcal > 0).then(|| chunks.clone());
    let mut selfcal_log = Vec::new();
    for round in 0..args.selfcal {
        let short = PosteriorOptions {
            n_samples: opts.n_samples.min(16),
            ..opts.clone()
        };
        let pass = posterior_pass(
            &args,
            &model,
            &chunks,
            geometry,
            &nufft_opts,
            &short,
            n_usable,
        )?;
        let sol = {
            let c = &chunks[0];
            let mv = full_model_vis(c, &pass.model_vis);
            solve_gains(c, &mv, &selfcal_options(&args)?)?
        };
        sol.apply(&mut chunks[0]);
        let (amp, phase) = sol.rms();
        eprintln!(
            "self-calibration round {}: mean's χ² {:.3} before; {} gains over {} intervals, rms |g|−1 {:.4}, phase {:.2}°",
            round + 1, pass.chi2_mean, sol.n_solved(), sol.intervals.len(), amp, phase
        );
        selfcal_log.push(serde_json::json!({
            "round": round + 1,
            "reduced_chi2_mean_before": pass.chi2_mean,
            "gains_solved": sol.n_solved(),
            "intervals": sol.intervals.len(),
            "rms_amplitude": amp,
            "rms_phase_deg": phase,
        }));
    }
    // `model` names the model visibilities below; the prior stays reachable as this.
    let model_prior = &model;
    let Pass {
        dirty,
        noise,
        factor,
        vis_nufft,
        clean_baseline,
        compact_px,
        flux_scale,
        samples,
        diffuse,
        chi2_lik,
        t_sample,
        n_data,
        likelihood,
        phys,
        mean,
        std,
        window,
        chi2_mean,
        model_vis: model,
        chi2_closure_mean,
    } = posterior_pass(
        &args,
        &model,
        &chunks,
        geometry,
        &nufft_opts,
        &opts,
        n_usable,
    )?;
    let c = &chunks[0];
    let npix = side * side;
    let n = samples.len() as f64;
    // With self-calibration, the mean against the data as they came, for honesty.
    let chi2_raw = raw_chunks.as_ref().map(|raw| {
        let f = match args.noise {
            NoiseArg::Auto => estimate_noise(raw).map_or(1.0, |e| e.weight_factor),
            NoiseArg::Weights => 1.0,
        };
        visibility_chi2(&vis_nufft, &raw[0], f, &mean).0
    });
    // The samples against the data themselves, whatever the likelihood met: for the gridded
    // likelihood the cells are fewer than the visibilities and blind to variation inside a
    // cell, so its own χ² is not the yardstick.
    let chi2: Vec<f64> = phys
        .chunks(npix)
        .map(|s| visibility_chi2(&vis_nufft, c, factor, s).0)
        .collect();
    let (residual_dirty, uv_dist, data_amp, model_amp) =
        residual_products(c, &model, &geometry, &nufft_opts, dirty.stats.weight_sum)?;
    // CLEAN's model against the same visibilities and noise: the yardstick a user knows.
    let chi2_clean = clean_baseline
        .as_ref()
        .map(|cb| visibility_chi2(&vis_nufft, c, factor, &cb.model).0);
    let compact = compact_summary(&compact_px, &phys, &geometry);
    // Significance at CLEAN's resolution: each sample convolved with the restoring beam, so
    // that the posterior and CLEAN are judged on the same footing (a pixel of the mean is far
    // smaller than a beam, and its significance per pixel far lower).
    let beam_significance = clean_baseline
        .as_ref()
        .map(|cb| beam_significance(&phys, samples.len(), &geometry, &cb.pixel_beam));

    // Where the samples sit among the images the prior was made for (Feng et al. 2023).
    let prior_check = super::prior_check::prior_check(
        model_prior,
        args.prior.as_deref(),
        &diffuse,
        args.sampling.seed,
    )?;
    drop(diffuse);

    let name = args.name.clone().unwrap_or_else(|| default_name(&args.vis));
    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/PIXEL");
    header.extra = vec![
        ("PRIOR".into(), HeaderValue::Str(prior_name(&args))),
        (
            "METHOD".into(),
            HeaderValue::Str(format!("{:?}", opts.method).to_uppercase()),
        ),
        ("NSAMPLES".into(), HeaderValue::I64(samples.len() as i64)),
        (
            "NSTEPS".into(),
            HeaderValue::I64(args.sampling.steps as i64),
        ),
        ("SEED".into(), HeaderValue::I64(args.sampling.seed as i64)),
        ("ALPHA".into(), HeaderValue::F64(args.sampling.alpha as f64)),
        ("FLUXSCL".into(), HeaderValue::F64(flux_scale)),
        ("NOISEFAC".into(), HeaderValue::F64(factor)),
    ];
    let inputs: Vec<&std::path::Path> = [Some(args.vis.as_path()), args.prior.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    // Sanity gate and output policy before anything is written, so nothing is half-written.
    // Closures: the data's own phases and amplitudes are not trusted, so the gate is the
    // samples' closure χ² (the mean of images free to shift is no fit to judge).
    let gate_chi2 = match chi2_closure_mean {
        Some(_) => {
            let mut s = chi2_lik.clone();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        }
        None => chi2_mean,
    };
    super::common::check_fit(
        gate_chi2,
        mean.iter().map(|&v| v as f64).sum(),
        &[("mean", &mean), ("std", &std), ("samples", &phys)],
        args.allow_poor_fit,
    )?;
    let files = [
        "samples.fits",
        "mean.fits",
        "std.fits",
        "dirty.fits",
        "psf.fits",
        "residual.fits",
        "summary.json",
        "report.html",
    ];
    super::common::check_outputs(&name, &files, &inputs)?;
    let p = |s: &str| output_path(&name, s, &inputs);
    write_cube(
        &p("samples")?,
        &phys,
        samples.len(),
        side,
        side,
        &header,
        CubeAxis::Sample,
    )?;
    write_image(&p("mean")?, &mean, side, side, &header)?;
    write_image(&p("std")?, &std, side, side, &header)?;
    let mut beam_header = sky_header(&info, field_id, &chunks, scale, "JY/BEAM");
    beam_header.extra = vec![("WEIGHTNG".into(), HeaderValue::Str("natural".into()))];
    write_image(&p("dirty")?, &dirty.dirty, side, side, &beam_header)?;
    write_image(&p("psf")?, &dirty.psf, side, side, &beam_header)?;
    write_image(&p("residual")?, &residual_dirty, side, side, &beam_header)?;

    let asec = |r: f64| r.to_degrees() * 3600.0;
    let median_min_max = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (s[s.len() / 2], s[0], s[s.len() - 1])
    };
    let (chi2_med, chi2_lo, chi2_hi) = median_min_max(&chi2);
    let total_flux: Vec<f64> = phys
        .chunks(npix)
        .map(|s| s.iter().map(|&v| v as f64).sum())
        .collect();
    let fmean = total_flux.iter().sum::<f64>() / n;
    let fstd = (total_flux.iter().map(|f| (f - fmean).powi(2)).sum::<f64>() / n).sqrt();
    println!("{}", args.vis.display());
    println!(
        "  {} samples of {side}×{side} pixels of {} ({} steps, {:?}), {:.1} s sampling",
        samples.len(),
        format_angle(scale),
        args.sampling.steps,
        opts.method,
        t_sample.as_secs_f64()
    );
    println!(
        "  {} visibilities ({} data in the {} likelihood), noise {}, flux scale {:.4} Jy/pixel",
        n_usable,
        n_data,
        if chi2_closure_mean.is_some() {
            "closure".to_string()
        } else {
            format!("{likelihood:?}")
        },
        match noise {
            Some(e) => format!(
                "from {} successive differences (σ² = {:.3e}/w)",
                e.n_pairs, e.weight_factor
            ),
            None => "σ² = 1/WEIGHT".into(),
        },
        flux_scale
    );
    println!(
        "  reduced χ² over all visibilities: mean image {chi2_mean:.3}; samples median \
         {chi2_med:.3} (range {chi2_lo:.3}–{chi2_hi:.3})"
    );
    if let Some(x) = chi2_closure_mean {
        println!(
            "  reduced χ² over the {n_data} closures ({:?}): mean image {x:.3}; samples median {:.3} (range {:.3}–{:.3})",
            args.data,
            median_min_max(&chi2_lik).0,
            median_min_max(&chi2_lik).1,
            median_min_max(&chi2_lik).2
        );
    }
    let window_pixels = window.as_ref().map(|w| w.iter().filter(|&&m| m).count());
    if let Some(k) = window_pixels {
        println!("  window (CLEAN mask): {k} of {npix} pixels; zero outside");
    }
    if let Some(x) = chi2_raw {
        println!(
            "  ({} self-calibration rounds: χ² against the gain-corrected data; the mean against \
             the data as they came: {x:.3})",
            args.selfcal
        );
    }
    if likelihood == LikelihoodArg::Gridded {
        println!(
            "  reduced χ² of the samples over the {n_data} gridded cells: median {:.3}",
            median_min_max(&chi2_lik).0
        );
    }
    if let Some(x) = chi2_clean {
        println!(
            "  reduced χ² of the CLEAN model (natural, 1σ auto-threshold) at this geometry: {x:.3}"
        );
    }
    if !compact.is_empty() {
        println!(
            "  {} compact components (flat prior on flux), diffuse emission under the prior:",
            compact.len()
        );
        for k in compact.iter().take(8) {
            println!(
                "    ΔRA {} ΔDec {}: {:.4} ± {:.4} Jy",
                format_angle((k.offset_asec[0] / 3600.0).to_radians()),
                format_angle((k.offset_asec[1] / 3600.0).to_radians()),
                k.flux_mean,
                k.flux_std
            );
        }
        if compact.len() > 8 {
            println!("    … {} more in the summary JSON", compact.len() - 8);
        }
    }
    println!("  total flux {fmean:.4} ± {fstd:.4} Jy");
    println!("  prior check: {}", prior_check.line);
    let summary = vec![
        ("Measurement Set".into(), args.vis.display().to_string()),
        ("Prior".into(), prior_name(&args)),
        (
            "Sampling".into(),
            format!(
                "{} samples, {} steps, {:?}, {:?} likelihood, α = {}, seed {}",
                samples.len(),
                args.sampling.steps,
                opts.method,
                likelihood,
                args.sampling.alpha,
                args.sampling.seed
            ),
        ),
        (
            "Image".into(),
            format!("{side}×{side} pixels of {}", format_angle(scale)),
        ),
        (
            "Flux scale".into(),
            format!("{flux_scale:.4} Jy/pixel at prior value 1"),
        ),
        ("Total flux".into(), format!("{fmean:.4} ± {fstd:.4} Jy")),
        (
            "Noise".into(),
            match noise {
                Some(e) => format!(
                    "σ² = {:.3e}/w from {} successive differences",
                    e.weight_factor, e.n_pairs
                ),
                None => "σ² = 1/WEIGHT".into(),
            },
        ),
        (
            "Reduced χ² of the mean".into(),
            format!("{chi2_mean:.3} over {n_usable} visibilities"),
        ),
        (
            "Reduced χ² of the CLEAN model".into(),
            chi2_clean.map_or_else(
                || "no CLEAN model".into(),
                |x| format!("{x:.3} (same visibilities and noise)"),
            ),
        ),
        (
            "Compact components".into(),
            if compact.is_empty() {
                "none: the whole sky under the prior".into()
            } else {
                format!(
                    "{} pixels with a flat prior on flux, {:.4} Jy in all (brightest {:.4} ± {:.4} Jy)",
                    compact.len(),
                    compact.iter().map(|k| k.flux_mean).sum::<f64>(),
                    compact[0].flux_mean,
                    compact[0].flux_std
                )
            },
        ),
        ("Prior check".into(), prior_check.line.clone()),
        ("Dirty image".into(), "natural weighting, Jy/beam".into()),
        (
            "Sampling time".into(),
            format!("{:.1} s", t_sample.as_secs_f64()),
        ),
    ];
    let mut summary = summary;
    if let Some(c) = &clean_baseline {
        summary.push((
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
    let report = PosteriorReport {
        title: format!(
            "{} — posterior ({} samples, {:?})",
            args.vis.file_name().map_or_else(
                || args.vis.display().to_string(),
                |f| f.to_string_lossy().into_owned()
            ),
            samples.len(),
            opts.method
        ),
        ny: side,
        nx: side,
        pixel_asec: asec(scale),
        dirty: &dirty.dirty,
        mean: &mean,
        std: &std,
        samples: &phys,
        n_samples: samples.len(),
        residual_dirty: &residual_dirty,
        clean_image: clean_baseline.as_ref().map(|c| c.restored.as_slice()),
        chi2: &chi2,
        chi2_mean,
        chi2_clean,
        beam_significance: beam_significance.as_deref(),
        uv_dist: &uv_dist,
        data_amp: &data_amp,
        model_amp: &model_amp,
        summary,
    };
    let html = write_report(&name, &report)?;
    // The same numbers for scripts (calibration studies, pipelines), next to the FITS files.
    let json = serde_json::json!({
        "measurement_set": args.vis,
        "prior": prior_name(&args),
        "method": format!("{:?}", opts.method).to_lowercase(),
        "likelihood": format!("{likelihood:?}").to_lowercase(),
        "samples": samples.len(),
        "steps": args.sampling.steps,
        "seed": args.sampling.seed,
        "alpha": args.sampling.alpha,
        "image_size": side,
        "pixel_arcsec": asec(scale),
        "flux_scale_jy_per_pixel": flux_scale,
        "noise_factor": factor,
        "n_visibilities": n_usable,
        "n_likelihood_data": n_data,
        "reduced_chi2_mean_image": chi2_mean,
        "reduced_chi2_clean_model": chi2_clean,
        "selfcal": selfcal_log,
        "window_pixels": window_pixels,
        "reduced_chi2_mean_image_uncalibrated_data": chi2_raw,
        "compact_components": compact.iter().map(|k| serde_json::json!({
            "pixel_yx": k.pixel_yx,
            "offset_arcsec_ra_dec": k.offset_asec,
            "flux_jy": { "mean": k.flux_mean, "std": k.flux_std },
        })).collect::<Vec<_>>(),
        "reduced_chi2_samples": chi2,
        "reduced_chi2_samples_likelihood_data": chi2_lik,
        "data": format!("{:?}", args.data).to_lowercase(),
        "reduced_chi2_mean_closures": chi2_closure_mean,
        "total_flux_jy": { "mean": fmean, "std": fstd },
        "prior_check": prior_check.check,
        "sampling_seconds": t_sample.as_secs_f64(),
    });
    let jp = p("summary")?.with_extension("json");
    crate::io::write_atomic(&jp, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("cannot write {}", jp.display()))?;
    println!(
        "  wrote {name}-samples.fits, -mean, -std, -dirty, -psf, -residual, -summary.json and {} in {:.1} s",
        html.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One posterior run on `chunks`: noise, classic products, CLEAN, compact components, flux
/// scale, the samples, their mean and std, and the mean's χ².
#[allow(clippy::too_many_arguments)]
fn posterior_pass(
    args: &ImageArgs,
    model: &ScoreModel,
    chunks: &[VisChunk],
    geometry: ImageGeometry,
    nufft_opts: &NufftOptions,
    opts: &PosteriorOptions,
    n_usable: usize,
) -> anyhow::Result<Pass> {
    let side = geometry.nx;
    // Classic products at the posterior's geometry, natural weighting (what the likelihood sees).
    let mut img_opts = ImagingOptions::new(geometry, Weighting::Natural);
    img_opts.nufft = nufft_opts.clone();
    let dirty = make_dirty_and_psf(chunks, &img_opts)?;
    if let Some(f) = args.flux_scale {
        if !(f > 0.0 && f.is_finite()) {
            bail!("--flux-scale must be positive, got {f}");
        }
    }

    // Noise per real component of each usable visibility.
    let noise = match args.noise {
        NoiseArg::Auto => estimate_noise(chunks),
        NoiseArg::Weights => None,
    };
    let factor = noise.map_or(1.0, |n| n.weight_factor);

    // The likelihood, in the prior's normalised units (flux scale folded into the operator).
    let c = match chunks {
        [c] => c,
        _ => bail!(
            "{} has spectral windows with different channel frequencies; select one with --spw",
            args.vis.display()
        ),
    };
    // Every usable visibility, its σ, and one NUFFT plan for the likelihood and the χ².
    let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
    let vis_nufft = Nufft::new(geometry, &c.uvw, &c.freq, Some(&mask), nufft_opts)?;
    let (y_vis, sigma_vis) = usable_data(c, factor);

    // Two CLEANs at the posterior's geometry (natural weighting, as the likelihood), 0.1 s
    // each, both deep (1σ, as a careful user cleans a bright source: at 3σ of a residual
    // still full of the core's sidelobes CLEAN stopped after 79 components on 3C 273, χ² 147
    // against 3.1 at 1σ). The report's baseline is WSClean's kind, negative components
    // allowed; compact components are looked for in a positive-only one, since they are
    // emission and on the sparse VLBA coverage of 3C 279 CLEAN with negative components
    // diverged (χ² 8·10²⁹).
    let deep_clean = |allow_negative: bool, what: &str| {
        crate::imaging::clean(
            chunks,
            &img_opts,
            &crate::imaging::CleanOptions {
                niter: 10_000,
                auto_threshold: Some(1.0),
                allow_negative,
                ..Default::default()
            },
        )
        .map_err(|e| eprintln!("warning: no {what}: {e}"))
        .ok()
    };
    let clean_baseline = deep_clean(true, "CLEAN image in the report");
    let clean_positive = match (args.compact, args.window) {
        (CompactArg::Off, WindowArg::Off) => None,
        _ => deep_clean(false, "compact components or window (CLEAN failed)"),
    };
    let compact_px = match &clean_positive {
        Some(cb) if args.compact == CompactArg::Auto && args.data == DataArg::Vis => {
            compact_pixels(
                &cb.model,
                &cb.restored,
                cb.residual_sigma,
                &CompactOptions {
                    max_pixels: args.compact_max,
                    ..Default::default()
                },
            )
        }
        _ => Vec::new(),
    };
    // The window: where the positive CLEAN's restored image is above 5σ of its residual,
    // grown by one restoring beam (major axis), and every compact pixel.
    let window = match (args.window, &clean_positive) {
        (WindowArg::Off, _) => None,
        (WindowArg::Auto, Some(cb)) => Some(clean_window(
            &cb.restored,
            side,
            side,
            cb.residual_sigma,
            5.0,
            cb.pixel_beam.major,
            &compact_px,
        )),
        (WindowArg::Auto, None) => bail!(
            "--window auto needs a CLEAN image of {}, and CLEAN failed (see the warning above); \
             use --window off",
            args.vis.display()
        ),
    };
    let window = match &args.window_radius {
        None => window,
        Some(r) => {
            let disk = disk_window(side, parse_angle(r)? / geometry.dx.abs());
            Some(match window {
                Some(w) => w.iter().zip(&disk).map(|(&a, &b)| a && b).collect(),
                None => disk,
            })
        }
    };
    if let Some(w) = &window {
        if !w.iter().any(|&m| m) {
            bail!(
                "the window (--window auto: emission above 5σ in the CLEAN image, and \
                 --window-radius) of {} holds no pixel; use --window off or a larger radius",
                args.vis.display()
            );
        }
    }
    // The compact fluxes by least squares with no diffuse emission, in Jy/pixel: the prior's
    // flux scale is the peak of what they leave in the dirty image, so the diffuse emission
    // fills the prior's range however bright the core.
    let diffuse_dirty = if compact_px.is_empty() {
        dirty.dirty.clone()
    } else {
        let base = GaussianLikelihood::new(&vis_nufft, y_vis.clone(), &sigma_vis)?;
        let cm = CompactMarginal::new(base, compact_px.clone())?;
        let zero = vec![0.0f32; geometry.len()];
        let compact_ls = cm.with_fluxes(&zero, &cm.best_fluxes(&zero)?);
        let mut mv = vec![0.0f32; vis_nufft.data_len()];
        vis_nufft.forward(&compact_ls, &mut mv);
        residual_products(c, &mv, &geometry, nufft_opts, dirty.stats.weight_sum)?.0
    };
    let diffuse_peak = diffuse_dirty
        .iter()
        .enumerate()
        .filter(|(k, _)| window.as_ref().is_none_or(|w| w[*k]))
        .map(|(_, &v)| v)
        .fold(f32::MIN, f32::max);
    // Closures: the total flux they are held to, and (the dirty image of data with
    // uncalibrated phases being no guide) a flux scale at which the prior's typical image holds it.
    let closure_total = match args.data {
        DataArg::Vis => None,
        _ => Some(match args.total_flux {
            Some(f) if f > 0.0 && f.is_finite() => f,
            Some(f) => bail!("--total-flux must be positive, got {f}"),
            None => shortest_baseline_flux(c),
        }),
    };
    let flux_scale =
        match args.flux_scale {
            Some(f) => f,
            None if closure_total.is_some() => {
                prior_flux_scale(model, closure_total.unwrap_or(1.0), args.sampling.seed)?
            }
            None if diffuse_peak > 0.0 => diffuse_peak as f64,
            None => bail!(
            "the dirty image has no positive peak ({diffuse_peak} Jy/beam{}): give --flux-scale",
            if compact_px.is_empty() { "" } else { " once the compact components are fitted" }
        ),
        };

    let batches = args.samples.div_ceil(args.sampling.batch_for(args.samples));
    let bar = ProgressBar::new((batches * args.sampling.steps) as u64).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message("sampling");
    let t_sample = Instant::now();
    let scale_f32 = flux_scale as f32;
    // On a simulated 3C 273 observation the exact visibility likelihood fitted the data far
    // better (reduced χ² 5 against 7500 for the mean, over all visibilities) than the gridded
    // one, whose cell-centre approximation dominates for bright extended emission; gridding
    // pays only when the visibilities are too many to evaluate at every step.
    let likelihood = match args.likelihood {
        LikelihoodArg::Auto if n_usable <= 100_000 => LikelihoodArg::Visibilities,
        LikelihoodArg::Auto => LikelihoodArg::Gridded,
        l => l,
    };
    let mut chi2_closure_mean = None;
    let (draws, n_data) = match likelihood {
        _ if args.data != DataArg::Vis => {
            let total = closure_total.unwrap_or(1.0);
            let lik = closure_likelihood(
                args, c, &geometry, nufft_opts, factor, scale_f32, total, &window,
            )?;
            let mut samples =
                sample_posterior(model, &lik, opts, &super::interrupt::Terminal::bar(&bar))
                    .map_err(super::interrupt::interrupted_or)?;
            // Closure phases carry no absolute position: each sample is free to shift, and
            // their mean would smear. Without a window to pin it, every sample's centre of
            // light is moved to the phase centre (whole pixels, zero fill), as VLBI imagers
            // centre closure-only images.
            if window.is_none() {
                samples.iter_mut().for_each(|x| recentre(x, side));
            }
            let chi2_lik = samples.iter().map(|x| lik.reduced_chi2(x)).collect();
            let n = samples.len().max(1) as f32;
            let mut m = vec![0.0f32; geometry.len()];
            for x in &samples {
                m.iter_mut().zip(x).for_each(|(a, &b)| *a += b / n);
            }
            if let Some(w) = &window {
                m.iter_mut()
                    .zip(w)
                    .filter(|(_, &k)| !k)
                    .for_each(|(a, _)| *a = 0.0);
            }
            chi2_closure_mean = Some(lik.reduced_chi2(&m));
            let (np, na) = lik.counts();
            eprintln!("closure likelihood: {np} closure phases, {na} log closure amplitudes");
            let diffuse = samples.clone();
            (
                SkyDraws {
                    samples,
                    diffuse,
                    chi2_lik,
                },
                np + na,
            )
        }
        LikelihoodArg::Gridded => {
            let cell_noise = match args.cell_scatter_min {
                0 => CellNoise::Weights,
                n => CellNoise::Scatter { min_count: n },
            };
            let grid = |exact: bool| -> anyhow::Result<GriddedVisibilities> {
                let mut b = GriddedVisibilities::builder(geometry, args.grid_padding)?;
                if exact {
                    b = b.exact();
                }
                b.add(&c.uvw, &c.freq, &c.vis, &c.weight)?;
                Ok(b.finish(factor, cell_noise))
            };
            // Gridding is cheap next to sampling: grid once to count the cells, and again
            // with the exact rows when they fit.
            let coarse = grid(false)?;
            let exact = match args.cell_model {
                CellModelArg::Exact => true,
                CellModelArg::Centre => false,
                CellModelArg::Auto => coarse.n_cells() * geometry.len() <= 1 << 26,
            };
            let grid = if exact { grid(true)? } else { coarse };
            let (y, sigma) = grid.data_and_sigma();
            let inner: Box<dyn ForwardOperator> = if exact {
                Box::new(CellAveraged::new(&grid)?)
            } else {
                Box::new(Gridded::new(&grid)?)
            };
            let op = windowed(
                Scaled {
                    inner,
                    scale: scale_f32,
                },
                &window,
            )?;
            let mut lik = GaussianLikelihood::new(op, y, &sigma)?;
            lik.inflate_gamma(&grid.gamma_factors())?;
            let lik = CompactMarginal::new(lik, compact_px.clone())?;
            (
                sample_sky(model, &lik, opts, &bar, args.sampling.seed)?,
                grid.n_cells(),
            )
        }
        LikelihoodArg::Visibilities | LikelihoodArg::Auto => {
            let op = windowed(
                Scaled {
                    inner: &vis_nufft,
                    scale: scale_f32,
                },
                &window,
            )?;
            let mut lik = GaussianLikelihood::new(op, y_vis.clone(), &sigma_vis)?;
            lik.inflate_gamma(&vis_gamma_factors(c, &geometry))?;
            let lik = CompactMarginal::new(lik, compact_px.clone())?;
            (
                sample_sky(model, &lik, opts, &bar, args.sampling.seed)?,
                n_usable,
            )
        }
    };
    let SkyDraws {
        mut samples,
        diffuse,
        chi2_lik,
    } = draws;
    // Outside the window the pixels never met the data: they are the prior's, not the sky.
    if let Some(w) = &window {
        for s in &mut samples {
            s.iter_mut()
                .zip(w)
                .filter(|(_, &m)| !m)
                .for_each(|(v, _)| *v = 0.0);
        }
    }
    bar.finish_and_clear();
    super::interrupt::check()?;
    let t_sample = t_sample.elapsed();
    let npix = side * side;
    let phys: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.iter().map(|v| v * flux_scale as f32))
        .collect();
    let n = samples.len() as f64;
    let mut mean = vec![0.0f64; npix];
    let mut sq = vec![0.0f64; npix];
    for s in phys.chunks(npix) {
        for (k, &v) in s.iter().enumerate() {
            mean[k] += v as f64 / n;
            sq[k] += (v as f64).powi(2) / n;
        }
    }
    let std: Vec<f32> = mean
        .iter()
        .zip(&sq)
        .map(|(m, s)| (s - m * m).max(0.0).sqrt() as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    // χ² of the mean against every visibility (whatever the likelihood used).
    let (chi2_mean, model_vis) = visibility_chi2(&vis_nufft, c, factor, &mean);
    Ok(Pass {
        dirty,
        noise,
        factor,
        vis_nufft,
        clean_baseline,
        compact_px,
        flux_scale,
        samples,
        diffuse,
        chi2_lik,
        t_sample,
        n_data,
        likelihood,
        phys,
        mean,
        std,
        chi2_mean,
        model_vis,
        window,
        chi2_closure_mean,
    })
}

/// The closure likelihood of `c` on the prior's units (flux scale folded into the operator,
/// window applied), with its total-flux constraint.
#[allow(clippy::too_many_arguments)]
fn closure_likelihood<'a>(
    args: &ImageArgs,
    c: &VisChunk,
    geometry: &ImageGeometry,
    nufft_opts: &NufftOptions,
    factor: f64,
    scale: f32,
    total: f64,
    window: &Option<Vec<bool>>,
) -> anyhow::Result<ClosureLikelihood<Box<dyn ForwardOperator + 'a>>> {
    use crate::likelihood::closure::{closure_phases, log_closure_amplitudes};
    // Closures index visibilities in the chunk's rows × channels layout: a NUFFT over all of
    // them (unusable ones are never referenced).
    let nufft = Nufft::new(*geometry, &c.uvw, &c.freq, None, nufft_opts)?;
    let mut phases = Vec::new();
    let mut amplitudes = Vec::new();
    for ch in 0..c.n_chan() {
        phases.extend(closure_phases(c, ch, factor));
        if args.data == DataArg::CphaseLcamp {
            amplitudes.extend(log_closure_amplitudes(c, ch, factor));
        }
    }
    if phases.is_empty() && amplitudes.is_empty() {
        bail!(
            "{}: no closure can be formed (closure phases need three stations observing at the              same time stamp)",
            args.vis.display()
        );
    }
    let op = windowed(
        Scaled {
            inner: nufft,
            scale,
        },
        window,
    )?;
    let lik = ClosureLikelihood::new(op, phases, amplitudes)?
        .with_total_flux(total / scale as f64, 0.1 * total / scale as f64);
    eprintln!(
        "closure likelihood: total flux held to {total:.4} ± {:.4} Jy",
        0.1 * total
    );
    Ok(lik)
}

/// The pixels of a `side²` image within `radius_px` of the phase centre pixel (`side/2`).
fn disk_window(side: usize, radius_px: f64) -> Vec<bool> {
    let c = (side / 2) as f64;
    (0..side * side)
        .map(|k| ((k / side) as f64 - c).hypot((k % side) as f64 - c) <= radius_px)
        .collect()
}

/// Shifts a `side²` image by whole pixels so that the centre of light of its positive part
/// falls on the phase centre pixel (`side/2`), filling with zeros.
fn recentre(x: &mut [f32], side: usize) {
    let (mut w, mut cy, mut cx) = (0.0f64, 0.0f64, 0.0f64);
    for (k, &v) in x.iter().enumerate().filter(|(_, &v)| v > 0.0) {
        w += v as f64;
        cy += v as f64 * (k / side) as f64;
        cx += v as f64 * (k % side) as f64;
    }
    if w <= 0.0 {
        return;
    }
    let c = (side / 2) as isize;
    let dy = c - (cy / w).round() as isize;
    let dx = c - (cx / w).round() as isize;
    let src = x.to_vec();
    x.iter_mut().for_each(|v| *v = 0.0);
    let n = side as isize;
    for y in 0..n {
        for xx in 0..n {
            let (ty, tx) = (y + dy, xx + dx);
            if (0..n).contains(&ty) && (0..n).contains(&tx) {
                x[(ty * n + tx) as usize] = src[(y * n + xx) as usize];
            }
        }
    }
}

/// The Jy/pixel of a prior image's value 1 at which the prior's typical image (the median
/// over 8 unconditional draws of 100 steps, a few seconds) holds `total` Jy.
pub(crate) fn prior_flux_scale(model: &ScoreModel, total: f64, seed: u64) -> anyhow::Result<f64> {
    let d = super::prior::Draw {
        n: 8,
        steps: 100,
        sampler: super::prior::SamplerArg::Em,
        snr: 0.0,
        corrector_steps: 0,
        batch: 8,
        seed: seed ^ 0xF1A5_0000,
        denoise: true,
    };
    let npix = model.image_size() * model.image_size();
    let draws = super::prior::draw_samples(model, &d, &ProgressBar::hidden())?;
    let mut sums: Vec<f64> = draws
        .chunks(npix)
        .map(|x| x.iter().map(|&v| v.max(0.0) as f64).sum())
        .collect();
    sums.sort_by(f64::total_cmp);
    let typical = sums[sums.len() / 2];
    if typical.is_nan() || typical <= 0.0 {
        bail!("the prior's draws hold no positive flux: give --flux-scale");
    }
    Ok(total / typical)
}

/// The median amplitude of the usable visibilities on the shortest 5 % of uv distances: the
/// total flux of a source those baselines do not resolve.
pub(crate) fn shortest_baseline_flux(c: &VisChunk) -> f64 {
    let nc = c.n_chan();
    let mut by_uv: Vec<(f64, f64)> = (0..c.vis.len())
        .filter(|&k| c.weight[k] > 0.0)
        .map(|k| {
            let (r, ch) = (k / nc, k % nc);
            let uv = c.uvw[r][0].hypot(c.uvw[r][1]) * c.freq[ch];
            (uv, c.vis[k].norm() as f64)
        })
        .collect();
    by_uv.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = (by_uv.len() / 20).max(1).min(by_uv.len());
    let mut amp: Vec<f64> = by_uv[..n].iter().map(|p| p.1).collect();
    amp.sort_by(f64::total_cmp);
    amp.get(amp.len() / 2).copied().unwrap_or(0.0)
}

/// `op` restricted to the window's pixels, when there is one.
fn windowed<'a, A: ForwardOperator + 'a>(
    op: A,
    window: &Option<Vec<bool>>,
) -> anyhow::Result<Box<dyn ForwardOperator + 'a>> {
    Ok(match window {
        Some(w) => Box::new(Masked::new(op, w.clone())?),
        None => Box::new(op),
    })
}

/// What [`posterior_pass`] returns.
struct Pass {
    dirty: crate::imaging::DirtyProducts,
    noise: Option<crate::imaging::NoiseEstimate>,
    factor: f64,
    vis_nufft: Nufft,
    clean_baseline: Option<crate::imaging::CleanResult>,
    compact_px: Vec<usize>,
    flux_scale: f64,
    samples: Vec<Vec<f32>>,
    /// What the prior drew, prior units (see [`SkyDraws`]).
    diffuse: Vec<Vec<f32>>,
    chi2_lik: Vec<f64>,
    t_sample: std::time::Duration,
    n_data: usize,
    likelihood: LikelihoodArg,
    /// Samples in Jy/pixel, one after another.
    phys: Vec<f32>,
    mean: Vec<f32>,
    std: Vec<f32>,
    chi2_mean: f64,
    /// Model visibilities of the mean, `[re, im, …]` per usable visibility.
    model_vis: Vec<f32>,
    window: Option<Vec<bool>>,
    /// `--data` with closures: the mean's reduced χ² over the closures.
    chi2_closure_mean: Option<f64>,
}

/// Model visibilities (`[re, im, …]` per usable visibility) spread over every visibility of
/// `c` (zero where unusable), the layout the gain solver takes.
fn full_model_vis(c: &VisChunk, usable: &[f32]) -> Vec<num_complex::Complex<f32>> {
    let mut out = vec![num_complex::Complex::new(0.0f32, 0.0); c.vis.len()];
    let used = (0..c.vis.len()).filter(|&k| c.weight[k] > 0.0);
    for (k, v) in used.zip(usable.chunks(2)) {
        out[k] = num_complex::Complex::new(v[0], v[1]);
    }
    out
}

fn selfcal_options(args: &ImageArgs) -> anyhow::Result<SelfcalOptions> {
    Ok(SelfcalOptions {
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
    })
}
/// Posterior skies (prior units) with the compact fluxes drawn in.
struct SkyDraws {
    samples: Vec<Vec<f32>>,
    /// What the prior drew (the samples without their compact fluxes), prior units.
    diffuse: Vec<Vec<f32>>,
    /// Reduced χ² of each sky over the likelihood's own data (cells for the gridded one).
    chi2_lik: Vec<f64>,
}

/// The diffuse images from the reverse diffusion under the compact-marginal likelihood, then
/// each one's compact fluxes from their exact conditional: joint posterior draws.
fn sample_sky<A: ForwardOperator>(
    model: &ScoreModel,
    lik: &CompactMarginal<A>,
    opts: &PosteriorOptions,
    bar: &ProgressBar,
    seed: u64,
) -> anyhow::Result<SkyDraws> {
    let diffuse = sample_posterior(model, lik, opts, &super::interrupt::Terminal::bar(bar))
        .map_err(super::interrupt::interrupted_or)?;
    // A stream of its own, so that the diffuse draws do not depend on the compact ones.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_C0DE_0000_0001);
    let mut out = SkyDraws {
        samples: Vec::with_capacity(diffuse.len()),
        diffuse: Vec::new(),
        chi2_lik: Vec::with_capacity(diffuse.len()),
    };
    for x in &diffuse {
        let f = lik.draw_fluxes(x, &mut rng)?;
        let sky = lik.with_fluxes(x, &f);
        out.chi2_lik.push(lik.base().reduced_chi2(&sky));
        out.samples.push(sky);
    }
    out.diffuse = diffuse;
    Ok(out)
}

/// mean/std over the samples (Jy/pixel, back to back) each convolved with `beam`.
fn beam_significance(
    samples: &[f32],
    n: usize,
    g: &ImageGeometry,
    beam: &crate::imaging::PixelBeam,
) -> Vec<f32> {
    let npix = g.len();
    let (mut m1, mut m2) = (vec![0.0f64; npix], vec![0.0f64; npix]);
    let mut conv = vec![0.0f32; npix];
    for s in samples.chunks(npix).take(n) {
        conv.iter_mut().for_each(|v| *v = 0.0);
        crate::imaging::beam::add_restored(s, g.nx, g.ny, beam, &mut conv);
        for ((a, b), &v) in m1.iter_mut().zip(m2.iter_mut()).zip(&conv) {
            *a += v as f64;
            *b += (v as f64).powi(2);
        }
    }
    let k = n.max(1) as f64;
    m1.iter()
        .zip(&m2)
        .map(|(&a, &b)| {
            let (mean, var) = (a / k, (b / k - (a / k).powi(2)).max(0.0));
            if var > 0.0 {
                (mean / var.sqrt()) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// One compact component of the posterior.
struct CompactComponent {
    pixel_yx: [usize; 2],
    /// ΔRA, ΔDec from the phase centre, arcsec.
    offset_asec: [f64; 2],
    flux_mean: f64,
    flux_std: f64,
}

/// Each compact pixel's flux over the samples (Jy/pixel): the component and the diffuse
/// emission under it together — the split between the two is the prior's, the sum the data's.
fn compact_summary(pixels: &[usize], samples: &[f32], g: &ImageGeometry) -> Vec<CompactComponent> {
    let npix = g.len();
    let n = (samples.len() / npix).max(1) as f64;
    pixels
        .iter()
        .map(|&p| {
            let (iy, ix) = (p / g.nx, p % g.nx);
            let f: Vec<f64> = samples.chunks(npix).map(|s| s[p] as f64).collect();
            let mean = f.iter().sum::<f64>() / n;
            let std = (f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            // l = (nx/2 − ix)·Δx is ΔRA (east positive), m = (iy − ny/2)·Δy is ΔDec.
            let asec = |r: f64| r.to_degrees() * 3600.0;
            CompactComponent {
                pixel_yx: [iy, ix],
                offset_asec: [
                    asec(((g.nx / 2) as f64 - ix as f64) * g.dx),
                    asec((iy as f64 - (g.ny / 2) as f64) * g.dy),
                ],
                flux_mean: mean,
                flux_std: std,
            }
        })
        .collect()
}

type ResidualProducts = (Vec<f32>, Vec<f64>, Vec<f32>, Vec<f32>);

/// The dirty image of the residual visibilities (natural weighting, Jy/beam) and, per usable
/// visibility, uv distance and the amplitudes of data and model.
fn residual_products(
    c: &VisChunk,
    model: &[f32],
    geometry: &ImageGeometry,
    nufft_opts: &NufftOptions,
    weight_sum: f64,
) -> anyhow::Result<ResidualProducts> {
    let mut resid = vec![num_complex::Complex::new(0.0f32, 0.0); c.vis.len()];
    let (mut uv, mut da, mut ma) = (Vec::new(), Vec::new(), Vec::new());
    let used = (0..c.vis.len()).filter(|&k| c.weight[k] > 0.0);
    for (k, m) in used.zip(model.chunks(2)) {
        let mv = num_complex::Complex::new(m[0], m[1]);
        resid[k] = c.vis[k] - mv;
        let (r, ch) = (k / c.n_chan(), k % c.n_chan());
        let f = c.freq[ch] / 299_792_458.0;
        uv.push((c.uvw[r][0].powi(2) + c.uvw[r][1].powi(2)).sqrt() * f);
        da.push(c.vis[k].norm());
        ma.push(mv.norm());
    }
    let img = ms2dirty(geometry, &c.uvw, &c.freq, &resid, &c.weight, nufft_opts)?;
    let res = img.iter().map(|v| (v / weight_sum) as f32).collect();
    Ok((res, uv, da, ma))
}

/// Per usable visibility (`[re, im, …]`), the number of usable visibilities in its uv cell:
/// the convolved likelihood's Γ factors ([`crate::operator::cell_multiplicity`]).
pub(crate) fn vis_gamma_factors(c: &VisChunk, g: &ImageGeometry) -> Vec<f32> {
    let uv: Vec<(f64, f64)> = (0..c.weight.len())
        .filter(|&k| c.weight[k] > 0.0)
        .map(|k| {
            let r = k / c.n_chan();
            let f = c.freq[k % c.n_chan()] / 299_792_458.0;
            (c.uvw[r][0] * f, c.uvw[r][1] * f)
        })
        .collect();
    cell_multiplicity(&uv, g)
        .into_iter()
        .flat_map(|m| [m, m])
        .collect()
}

/// Reduced χ² of a physical image (Jy/pixel) against every usable visibility, and the model
/// visibilities.
fn visibility_chi2(op: &Nufft, c: &VisChunk, factor: f64, image: &[f32]) -> (f64, Vec<f32>) {
    let (chi2, model) = crate::imaging::fit::chunk_chi2(op, c, factor, image);
    (chi2 / model.len() as f64, model)
}

fn prior_name(args: &ImageArgs) -> String {
    args.prior.as_ref().map_or_else(
        || "built-in (MiraBest 64)".into(),
        |p| p.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob off centre lands with its centre of light on the centre pixel, flux kept; an
    /// image with nothing positive is left alone.
    #[test]
    fn recentre_moves_the_centre_of_light() {
        let n = 16;
        let mut x = vec![0.0f32; n * n];
        x[3 * n + 4] = 2.0;
        x[3 * n + 5] = 2.0;
        x[4 * n + 4] = -0.5;
        recentre(&mut x, n);
        // Centre of light of the positive part: (3, 4.5) rounds to (3, 5) → moved by (5, 3).
        assert_eq!(x[8 * n + 7], 2.0);
        assert_eq!(x[8 * n + 8], 2.0);
        assert_eq!(x[9 * n + 7], -0.5);
        assert_eq!(x.iter().filter(|&&v| v != 0.0).count(), 3);
        let disk = disk_window(9, 2.0);
        assert_eq!(disk.iter().filter(|&&m| m).count(), 13);
        assert!(disk[4 * 9 + 4] && disk[2 * 9 + 4] && !disk[2 * 9 + 3]);
        let mut neg = vec![-1.0f32; 4];
        recentre(&mut neg, 2);
        assert_eq!(neg, vec![-1.0; 4]);
    }

    /// The shortest 5 % of baselines: their median amplitude, whatever the longer ones hold.
    #[test]
    fn shortest_baselines_give_the_total_flux() {
        let n = 100;
        let c = VisChunk {
            uvw: (0..n).map(|k| [k as f64 + 1.0, 0.0, 0.0]).collect(),
            antenna1: vec![0; n],
            antenna2: vec![1; n],
            time: vec![0.0; n],
            freq: vec![1e9],
            vis: (0..n)
                .map(|k| num_complex::Complex::new(if k < 5 { 3.0 } else { 0.1 }, 0.0))
                .collect(),
            weight: vec![1.0; n],
            ..Default::default()
        };
        assert_eq!(shortest_baseline_flux(&c), 3.0);
    }
}
