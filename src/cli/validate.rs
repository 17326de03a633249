//! `interf-image validate`: is the posterior calibrated on this uv coverage? Simulates
//! observations of known truths with the real uv coverage of a Measurement Set and known
//! noise, samples every posterior, and reports TARP coverage, per-pixel interval coverage,
//! reduced χ² and errors (HTML + PNG + JSON + FITS cubes). The job is
//! [`crate::pipeline::validate`]; this file parses, writes and prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::common::{
    check_outputs, format_angle, output_path, parse_angle, set_threads, ComputeArgs, MethodArg,
    SamplingArgs, SelectionArgs,
};
use super::interrupt::Terminal;
use super::prior::{device, DeviceArg, SplitArg};
use crate::io::{write_cube, CubeAxis};
use crate::operator::NufftOptions;
use crate::pipeline::validate::{CalibrationOptions, CalibrationResult, TruthSource};
use crate::prior::{default_prior, ScoreModel};
use crate::report::validate::{write_validate_report, ValidateReport};
use crate::sample::posterior::PosteriorOptions;
use crate::validate::truths::TruthScaling;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TruthScalingArg {
    /// Negatives clipped, each image divided by its own peak (as the prior's training images).
    Peak,
    /// Values are Jy/pixel (divided by --flux-scale for the prior).
    Physical,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("truth_source").required(true).args(["truths", "from_prior"])))]
pub struct ValidateArgs {
    /// Measurement Set whose uv coverage (all unflagged visibilities of the selection) observes
    /// the truths. Opened read-only; its data values are not used.
    #[arg(long)]
    pub like: PathBuf,
    /// Truth images: .npy stack, FITS cube, or FITS with one image per HDU. Each is cropped to
    /// a square and resized to the prior's size.
    #[arg(long)]
    pub truths: Option<PathBuf>,
    /// Draw the truths from the prior itself (the posterior must then be calibrated exactly).
    #[arg(long)]
    pub from_prior: bool,
    /// Number of truths (a file's first N; fewer if the file holds fewer). With --split val or
    /// train, N of that part (all of it when it holds fewer, a seeded choice otherwise).
    #[arg(long, default_value_t = 100, value_parser = super::common::at_least_one)]
    pub n: usize,
    /// Which images of --truths: all, or the prior's held-out validation split (images it
    /// never trained on, as recorded in its config.json by `prior train --val-fraction`), or
    /// its training split. --truths must then be the file the prior was trained on.
    #[arg(long, value_enum, default_value_t = SplitArg::All, requires = "truths")]
    pub split: SplitArg,
    /// Posterior samples per truth.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Gaussian noise σ per real and imaginary part of each visibility, Jy.
    #[arg(long)]
    pub noise: f64,
    /// Output prefix: NAME-validate.html, -validate.json, -validate-{truth,mean,std}.fits.
    #[arg(long, value_parser = super::common::output_name)]
    pub name: String,
    /// Prior checkpoint folder. Default: the built-in prior.
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Steps for drawing truths from the prior. Default: --steps.
    #[arg(long)]
    pub prior_steps: Option<usize>,
    /// Pixel size (0.5asec, …). Default: a third of the theoretical beam, as `image`.
    #[arg(long)]
    pub scale: Option<String>,
    /// Jy/pixel of a prior image value of 1 (sets the truths' brightness against --noise).
    #[arg(long, default_value_t = 1.0)]
    pub flux_scale: f64,
    /// How --truths images are brought to the prior's units.
    #[arg(long, value_enum, default_value_t = TruthScalingArg::Peak)]
    pub truth_scaling: TruthScalingArg,
    /// Use the --truths images as they are. By default each gets N(0, floor²) per pixel
    /// (seeded), the floor being the prior's smallest noise level σ_min in its units: the
    /// score model is trained down to σ_min only, so the density it represents, and every
    /// posterior under it, has that scatter where its training images are exactly 0 (MiraBest's
    /// clipped background). Exact zeros would sit at the centre of each posterior's scatter
    /// and count as covered at every credibility.
    #[arg(long, requires = "truths")]
    pub no_truth_floor: bool,
    /// Bootstrap resamples for the TARP band.
    #[arg(long, default_value_t = 1000, value_parser = super::common::at_least_one)]
    pub bootstrap: usize,
    /// Skip the CLEAN baseline (Cotton–Schwab, Briggs 0, 3σ auto-threshold) of each simulated
    /// observation.
    #[arg(long)]
    pub no_clean: bool,
    /// Truths shown as image panels in the report.
    #[arg(long, default_value_t = 4)]
    pub panels: usize,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Write the results even when the median truth's fit is poor (reduced χ² above 100 or
    /// not finite).
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

/// The files `validate` writes, after `NAME-`.
const FILES: [&str; 5] = [
    "validate-truth.fits",
    "validate-mean.fits",
    "validate-std.fits",
    "validate.json",
    "validate.html",
];

fn options(args: &ValidateArgs) -> anyhow::Result<CalibrationOptions> {
    Ok(CalibrationOptions {
        like: args.like.clone(),
        selection: args.selection.to_selection()?,
        prior_dir: args.prior.clone(),
        truths: match &args.truths {
            Some(path) => TruthSource::File {
                path: path.clone(),
                scaling: match args.truth_scaling {
                    TruthScalingArg::Peak => TruthScaling::Peak,
                    TruthScalingArg::Physical => TruthScaling::Physical,
                },
                split: args.split,
            },
            None => TruthSource::Prior {
                steps: args.prior_steps,
            },
        },
        truth_floor: !args.no_truth_floor,
        n: args.n,
        // Chains of several truths share a batch; the truths are drawn in batches too.
        posterior: PosteriorOptions {
            batch: args.sampling.batch_for(args.n * args.samples),
            ..args.sampling.options(args.samples, MethodArg::Dps)
        },
        noise: args.noise,
        flux_scale: args.flux_scale,
        scale: args.scale.as_deref().map(parse_angle).transpose()?,
        bootstrap: args.bootstrap,
        clean_baseline: !args.no_clean,
        nufft: NufftOptions {
            epsilon: args.compute.epsilon,
            ..Default::default()
        },
        max_memory: args.max_memory,
    })
}

pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.compute.threads)?;
    let opts = options(&args)?;
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let inputs: Vec<&Path> = [
        Some(args.like.as_path()),
        args.truths.as_deref(),
        args.prior.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    check_outputs(&args.name, &FILES, &inputs)?;
    let out_dir = match Path::new(&args.name).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        bail!(
            "output directory {} (from --name {}) does not exist",
            out_dir.display(),
            args.name
        );
    }
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
    let res = crate::pipeline::validate::validate(&model, &opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let res = res?;
    gate(&res, args.allow_poor_fit)?;
    let (summary, title) = summary(&args, &opts, &res);
    let written = write_outputs(&args, &opts, &res, &inputs, &summary, &title, start)?;
    println!("{title}");
    for (k, val) in &summary {
        println!("  {k}: {val}");
    }
    println!(
        "  wrote {written} and {}-validate-{{truth,mean,std}}.fits in {:.1} s",
        args.name,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The sanity gate looks at the median truth: one hard truth is calibration information, a
/// typical one far off means the posteriors did not fit at all.
fn gate(res: &CalibrationResult, allow_poor_fit: bool) -> anyhow::Result<()> {
    let v = &res.validation;
    let mut chi2: Vec<f64> = v.truths.iter().map(|t| t.chi2_mean).collect();
    chi2.sort_by(f64::total_cmp);
    let median = chi2.get(chi2.len() / 2).copied().unwrap_or(f64::NAN);
    let flux: f64 = v.truths.iter().map(|t| t.mean_flux).sum();
    let means: Vec<f32> = v
        .truths
        .iter()
        .flat_map(|t| t.mean.iter().copied())
        .collect();
    let stds: Vec<f32> = v
        .truths
        .iter()
        .flat_map(|t| t.std.iter().copied())
        .collect();
    super::common::check_fit(
        median,
        flux,
        &[("posterior mean", &means), ("posterior std", &stds)],
        allow_poor_fit,
    )
}

/// The truths in words, for the report and the JSON.
fn truth_description(args: &ValidateArgs, n: usize) -> String {
    match &args.truths {
        Some(p) => format!(
            "{} ({n} images{}, {})",
            p.display(),
            match args.split {
                SplitArg::All => "",
                SplitArg::Val => " of the prior's validation split",
                SplitArg::Train => " of the prior's training split",
            },
            match args.truth_scaling {
                TruthScalingArg::Peak => "clipped at 0, each divided by its peak",
                TruthScalingArg::Physical => "Jy/pixel",
            }
        ),
        None => format!("{n} draws from the prior"),
    }
}

/// The report's summary table and title.
fn summary(
    args: &ValidateArgs,
    opts: &CalibrationOptions,
    res: &CalibrationResult,
) -> (Vec<(String, String)>, String) {
    let v = &res.validation;
    let (s, t, p) = (&v.summary, &v.tarp, &opts.posterior);
    let n = v.truths.len();
    let side = res.side;
    let opt = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.4e}"));
    let rows = vec![
        ("Measurement Set".into(), args.like.display().to_string()),
        (
            "Truths".into(),
            match res.truth_floor {
                Some(f) => format!(
                    "{}, plus the prior's resolution floor N(0, {f:.1e}²) per pixel",
                    truth_description(args, n)
                ),
                None => truth_description(args, n),
            },
        ),
        ("Prior".into(), opts.prior_name()),
        (
            "Observation".into(),
            format!(
                "{} visibilities, σ = {} Jy per component, {side}×{side} pixels of {}, {} Jy/pixel at prior value 1",
                res.n_usable, args.noise, format_angle(res.scale), args.flux_scale
            ),
        ),
        (
            "Sampling".into(),
            format!(
                "{} samples per truth, {} steps, {:?}, α = {}, corrector snr {}, seed {}",
                p.n_samples, p.steps, p.method, p.alpha, args.sampling.corrector_snr, p.seed
            ),
        ),
        (
            "TARP".into(),
            format!(
                "largest deviation {:.3} at α = {:.2} ({:+.3}), band ±{:.3}, KS p = {:.3}: {}",
                t.max_deviation,
                t.max_deviation_alpha,
                t.max_deviation_signed,
                t.band_half_width,
                t.ks_p_value,
                t.verdict.describe()
            ),
        ),
        (
            "Pixel coverage 68 % / 95 %".into(),
            format!(
                "{:.3} / {:.3} (source pixels {:.3} / {:.3})",
                s.coverage_68, s.coverage_95, s.source_coverage_68, s.source_coverage_95
            ),
        ),
        (
            "Reduced χ²".into(),
            format!(
                "samples median {:.3} (16–84 %: {:.3}–{:.3}); means {:.3}; truths {:.3}",
                s.chi2_samples_median,
                s.chi2_samples_q16,
                s.chi2_samples_q84,
                s.chi2_mean_median,
                s.chi2_truth_median
            ),
        ),
        (
            "RMSE (Jy/pixel)".into(),
            format!(
                "posterior mean {:.4e}; zero image {:.4e}; at CLEAN resolution: mean {}, CLEAN {}; CLEAN vs truth {}",
                s.rmse_mean,
                s.rmse_zero,
                opt(s.rmse_mean_beam),
                opt(s.rmse_clean_beam),
                opt(s.rmse_clean_truth)
            ),
        ),
        ("Sampling time".into(), format!("{:.1} s", res.t_sample)),
    ];
    let title = format!(
        "Calibration on {} — {} truths × {} samples",
        args.like.file_name().map_or_else(
            || args.like.display().to_string(),
            |f| f.to_string_lossy().into_owned()
        ),
        n,
        p.n_samples
    );
    (rows, title)
}

/// The truth/mean/std cubes, the JSON and the report; returns the report's files in words.
fn write_outputs(
    args: &ValidateArgs,
    opts: &CalibrationOptions,
    res: &CalibrationResult,
    inputs: &[&Path],
    summary: &[(String, String)],
    title: &str,
    start: Instant,
) -> anyhow::Result<String> {
    let v = &res.validation;
    let side = res.side;
    let cube = |what: &str, get: &dyn Fn(&crate::validate::TruthResult) -> &[f32]| {
        let planes: Vec<f32> = v.truths.iter().flat_map(|t| get(t).to_vec()).collect();
        let p = output_path(&args.name, &format!("validate-{what}"), inputs)?;
        write_cube(
            &p,
            &planes,
            v.truths.len(),
            side,
            side,
            &res.header,
            CubeAxis::Sample,
        )
        .with_context(|| format!("writing {}", p.display()))
    };
    cube("truth", &|t| &t.truth)?;
    cube("mean", &|t| &t.mean)?;
    cube("std", &|t| &t.std)?;
    let p = &opts.posterior;
    let json = json!({
        "measurement_set": args.like.display().to_string(),
        "visibilities": res.n_usable,
        "truths": truth_description(args, v.truths.len()),
        "prior": opts.prior_name(),
        "settings": {
            "n": v.truths.len(), "samples": p.n_samples, "steps": p.steps, "method": format!("{:?}", p.method),
            "alpha": p.alpha, "corrector_snr": args.sampling.corrector_snr, "seed": p.seed,
            "noise_jy": args.noise, "flux_scale_jy_per_pixel": args.flux_scale,
            "truth_floor": res.truth_floor,
            "pixel_arcsec": res.scale.to_degrees() * 3600.0, "image_size": side, "batch": p.batch,
        },
        "tarp": v.tarp,
        "summary": v.summary,
        "truth_indices": res.truth_indices,
        "per_truth": v.truths,
        "timing_s": { "sampling": res.t_sample, "total": start.elapsed().as_secs_f64() },
    });
    let json_path = PathBuf::from(format!("{}-validate.json", args.name));
    crate::io::write_atomic(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;
    let report = ValidateReport {
        title: title.to_string(),
        side,
        pixel_asec: res.scale.to_degrees() * 3600.0,
        validation: v,
        summary: summary.to_vec(),
        panels: args.panels,
    };
    let (html, tarp_png) = write_validate_report(&args.name, &report)?;
    Ok(format!(
        "{}, {}, {}",
        html.display(),
        tarp_png.display(),
        json_path.display()
    ))
}
