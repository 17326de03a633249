//! `interf-image validate`: is the posterior calibrated on this uv coverage? Simulates
//! observations of known truths with the real uv coverage of a Measurement Set and known
//! noise, samples every posterior, and reports TARP coverage, per-pixel interval coverage,
//! reduced χ² and errors (HTML + PNG + JSON + FITS cubes).

use super::common::{ComputeArgs, SamplingArgs};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::common::{
    check_network_batch, check_outputs, count_usable, longest_baseline, output_path, parse_angle,
    read_with_progress, set_threads, sky_header, SelectionArgs,
};
use super::interrupt::interrupted_or;
use super::prior::{device, DeviceArg, SplitArg};
use crate::imaging::beam::add_restored;
use crate::imaging::{clean, CleanOptions, ImagingOptions, Weighting};
use crate::io::{write_cube, CubeAxis, HeaderValue};
use crate::operator::{ImageGeometry, Nufft, NufftOptions};
use crate::pipeline::vis::{merge_by_frequency, vis_gamma_factors};
use crate::prior::{default_prior, ScoreModel};
use crate::report::validate::{write_validate_report, ValidateReport};
use crate::sample::posterior::PosteriorOptions;
use crate::validate::truths::{self, TruthScaling};
use crate::validate::{validate, BaselineFn, BaselineImage, ValidateOptions};
use ms_io::{VisChunk, VisFile};

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

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.compute.threads)?;
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    if args.samples < 2 {
        bail!("--samples must be at least 2");
    }
    if !(args.noise > 0.0 && args.noise.is_finite()) {
        bail!("--noise must be a positive σ in Jy, got {}", args.noise);
    }
    if !(args.flux_scale > 0.0 && args.flux_scale.is_finite()) {
        bail!("--flux-scale must be positive, got {}", args.flux_scale);
    }
    if args.prior_steps == Some(0) {
        bail!("--prior-steps must be at least 1");
    }
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let inputs: Vec<&std::path::Path> = [
        Some(args.like.as_path()),
        args.truths.as_deref(),
        args.prior.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    check_outputs(
        &args.name,
        &[
            "validate-truth.fits",
            "validate-mean.fits",
            "validate-std.fits",
            "validate.json",
            "validate.html",
        ],
        &inputs,
    )?;
    let out_dir = match std::path::Path::new(&args.name).parent() {
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
    if let Some(t) = &args.truths {
        if !t.is_file() {
            bail!("truth images {}: no such file", t.display());
        }
    }

    let dev = device(args.device)?;
    let model = match &args.prior {
        Some(dir) => ScoreModel::load(dir, &dev)?,
        None => default_prior(&dev).context("loading the built-in prior")?,
    };
    let side = model.image_size();
    // Chains of several truths share a batch; the truths are drawn (forward only) in batches too.
    let batch = args.sampling.batch_for(args.n * args.samples);
    check_network_batch(
        &model.config().network,
        batch,
        args.sampling.method == super::common::MethodArg::Dps,
        args.max_memory,
    )?;
    let selection = args.selection.to_selection()?;
    // MsError names the path already.
    let ms = VisFile::open(&args.like)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&selection)?;
    let chunks = merge_by_frequency(read_with_progress(&ms, &selection)?);
    let n_usable = count_usable(&chunks, &args.like)?;
    let c = match chunks.as_slice() {
        [c] => c,
        _ => bail!(
            "{} has spectral windows with different channel frequencies; select one with --spw",
            args.like.display()
        ),
    };
    let scale = match &args.scale {
        Some(s) => parse_angle(s)?,
        None => (1.0 / 3.0) / longest_baseline(&chunks),
    };
    let geometry = ImageGeometry::new(side, side, scale, scale)?;
    let nufft_opts = NufftOptions {
        epsilon: args.compute.epsilon,
        ..Default::default()
    };
    let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
    let nufft = Nufft::new(geometry, &c.uvw, &c.freq, Some(&mask), &nufft_opts)?;

    // Truths, in the prior's normalised units; which images of the file, when a split chose.
    let mut truth_indices: Option<Vec<usize>> = None;
    let truths = match &args.truths {
        Some(path) => {
            let scaling = match args.truth_scaling {
                TruthScalingArg::Peak => TruthScaling::Peak,
                TruthScalingArg::Physical => TruthScaling::Physical,
            };
            let mut t = truths::from_file(path, side, scaling, args.flux_scale)?;
            match args.split {
                SplitArg::All => t.truncate(args.n),
                which => {
                    let spec = args
                        .prior
                        .as_deref()
                        .map_or_else(|| "default".to_string(), |p| p.display().to_string());
                    let idx = super::prior::split_indices(
                        &spec,
                        path,
                        t.len(),
                        which,
                        args.n,
                        args.sampling.seed,
                    )?;
                    t = idx.iter().map(|&i| std::mem::take(&mut t[i])).collect();
                    truth_indices = Some(idx);
                }
            }
            t
        }
        None => {
            let steps = args.prior_steps.unwrap_or(args.sampling.steps);
            let b = bar((args.n.div_ceil(batch) * steps) as u64, "truths");
            let t = truths::from_prior(
                &model,
                args.n,
                steps,
                batch,
                args.sampling.seed ^ 0x7247,
                &super::interrupt::Terminal::bar(&b),
            )?;
            b.finish_and_clear();
            t
        }
    };
    let n = truths.len();

    let opts = ValidateOptions {
        posterior: PosteriorOptions {
            batch,
            ..args.sampling.options(args.samples)
        },
        flux_scale: args.flux_scale as f32,
        sigma: args.noise as f32,
        gamma_factors: Some(vis_gamma_factors(c, &geometry)),
        n_bootstrap: args.bootstrap,
    };
    let b = bar(
        ((n * args.samples).div_ceil(batch) * args.sampling.steps) as u64,
        "sampling",
    );
    let t_sample = Instant::now();
    // The CLEAN baseline images each simulated data set as WSClean would the real one.
    let clean_opts = {
        let mut o = ImagingOptions::new(geometry, Weighting::Briggs(0.0));
        o.nufft = nufft_opts.clone();
        o
    };
    let used: Vec<usize> = (0..c.weight.len()).filter(|&k| c.weight[k] > 0.0).collect();
    let w_sim = (1.0 / (args.noise * args.noise)) as f32;
    let baseline = |y: &[f32]| -> Result<BaselineImage, String> {
        let mut vis = vec![num_complex::Complex::new(0.0f32, 0.0); c.vis.len()];
        let mut weight = vec![0.0f32; c.weight.len()];
        for (&k, p) in used.iter().zip(y.chunks(2)) {
            vis[k] = num_complex::Complex::new(p[0], p[1]);
            weight[k] = w_sim;
        }
        let sim = VisChunk {
            spw: c.spw,
            uvw: c.uvw.clone(),
            antenna1: c.antenna1.clone(),
            antenna2: c.antenna2.clone(),
            time: c.time.clone(),
            freq: c.freq.clone(),
            vis,
            weight,
        };
        let r = clean(
            std::slice::from_ref(&sim),
            &clean_opts,
            &CleanOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        let beam = r.pixel_beam;
        let convolve = move |img: &[f32]| {
            let mut out = vec![0.0f32; side * side];
            add_restored(img, side, side, &beam, &mut out);
            out
        };
        // Σ of the beam of peak 1 on the pixel grid: a unit point source restored.
        let mut delta = vec![0.0f32; side * side];
        delta[(side / 2) * side + side / 2] = 1.0;
        let beam_area: f64 = convolve(&delta).iter().map(|&v| v as f64).sum();
        Ok(BaselineImage {
            restored: r.restored,
            convolve: Box::new(convolve),
            beam_area,
        })
    };
    let baseline_ref: Option<&BaselineFn> = if args.no_clean { None } else { Some(&baseline) };
    let v = validate(
        &model,
        &nufft,
        &truths,
        &opts,
        baseline_ref,
        &super::interrupt::Terminal::bar(&b),
    )
    .map_err(|e| match e {
        crate::validate::ValidateError::Sampling(e) => interrupted_or(e),
        crate::validate::ValidateError::Interrupted(i) => i.into(),
        e => e.into(),
    })?;
    b.finish_and_clear();
    super::interrupt::check()?;
    let t_sample = t_sample.elapsed().as_secs_f64();
    {
        // The gate looks at the median truth: one hard truth is calibration information, a
        // typical one far off means the posteriors did not fit at all.
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
            args.allow_poor_fit,
        )?;
    }

    // Products.
    let asec = scale.to_degrees() * 3600.0;
    let truth_desc = match &args.truths {
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
    };
    let prior_name = args.prior.as_ref().map_or_else(
        || "built-in (MiraBest 64)".to_string(),
        |p| p.display().to_string(),
    );
    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/PIXEL");
    header.extra = vec![
        ("PRIOR".into(), HeaderValue::Str(prior_name.clone())),
        ("NSAMPLES".into(), HeaderValue::I64(args.samples as i64)),
        (
            "NSTEPS".into(),
            HeaderValue::I64(args.sampling.steps as i64),
        ),
        ("SEED".into(), HeaderValue::I64(args.sampling.seed as i64)),
        ("ALPHA".into(), HeaderValue::F64(args.sampling.alpha as f64)),
        ("FLUXSCL".into(), HeaderValue::F64(args.flux_scale)),
        ("NOISE".into(), HeaderValue::F64(args.noise)),
    ];
    let cube = |what: &str, get: &dyn Fn(&crate::validate::TruthResult) -> &[f32]| {
        let planes: Vec<f32> = v.truths.iter().flat_map(|t| get(t).to_vec()).collect();
        let p = output_path(&args.name, &format!("validate-{what}"), &inputs)?;
        write_cube(
            &p,
            &planes,
            v.truths.len(),
            side,
            side,
            &header,
            CubeAxis::Sample,
        )
        .with_context(|| format!("writing {}", p.display()))
    };
    cube("truth", &|t| &t.truth)?;
    cube("mean", &|t| &t.mean)?;
    cube("std", &|t| &t.std)?;

    let s = &v.summary;
    let t = &v.tarp;
    let json = json!({
        "measurement_set": args.like.display().to_string(),
        "visibilities": n_usable,
        "truths": truth_desc,
        "prior": prior_name,
        "settings": {
            "n": n, "samples": args.samples, "steps": args.sampling.steps, "method": format!("{:?}", opts.posterior.method),
            "alpha": args.sampling.alpha, "corrector_snr": args.sampling.corrector_snr, "seed": args.sampling.seed,
            "noise_jy": args.noise, "flux_scale_jy_per_pixel": args.flux_scale,
            "pixel_arcsec": asec, "image_size": side, "batch": args.sampling.batch,
        },
        "tarp": t,
        "summary": s,
        "truth_indices": truth_indices,
        "per_truth": v.truths,
        "timing_s": { "sampling": t_sample, "total": start.elapsed().as_secs_f64() },
    });
    let json_path = PathBuf::from(format!("{}-validate.json", args.name));
    crate::io::write_atomic(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;

    let opt = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.4e}"));
    let summary = vec![
        ("Measurement Set".into(), args.like.display().to_string()),
        ("Truths".into(), truth_desc.clone()),
        ("Prior".into(), prior_name.clone()),
        (
            "Observation".into(),
            format!(
                "{n_usable} visibilities, σ = {} Jy per component, {side}×{side} pixels of {}, {} Jy/pixel at prior value 1",
                args.noise, super::common::format_angle(scale), args.flux_scale
            ),
        ),
        (
            "Sampling".into(),
            format!(
                "{} samples per truth, {} steps, {:?}, α = {}, corrector snr {}, seed {}",
                args.samples, args.sampling.steps, opts.posterior.method, args.sampling.alpha, args.sampling.corrector_snr, args.sampling.seed
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
        ("Sampling time".into(), format!("{t_sample:.1} s")),
    ];
    let report = ValidateReport {
        title: format!(
            "Calibration on {} — {} truths × {} samples",
            args.like.file_name().map_or_else(
                || args.like.display().to_string(),
                |f| f.to_string_lossy().into_owned()
            ),
            n,
            args.samples
        ),
        side,
        pixel_asec: asec,
        validation: &v,
        summary: summary.clone(),
        panels: args.panels,
    };
    let (html, tarp_png) = write_validate_report(&args.name, &report)?;
    println!("{}", report.title);
    for (k, val) in &summary {
        println!("  {k}: {val}");
    }
    println!(
        "  wrote {}, {}, {} and {}-validate-{{truth,mean,std}}.fits in {:.1} s",
        html.display(),
        tarp_png.display(),
        json_path.display(),
        args.name,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
