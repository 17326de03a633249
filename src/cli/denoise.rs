//! `interf-image denoise`: posterior deconvolution of an optical image (HST) with a known PSF
//! and a score-based prior. The job (geometry, σ, flux scale, sampling) is
//! [`crate::pipeline::denoise`]; this parses, writes the samples, mean and std of the
//! deconvolved image, the data, the prediction, residuals and residual/σ as FITS and an
//! HTML/PNG report, and prints a summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{check_outputs, output_path, set_threads, MethodArg, SamplingArgs};
use super::interrupt::Terminal;
use super::prior::{device, DeviceArg};
use crate::io::{write_cube, write_image, CubeAxis};
use crate::operator::hst::prep::PsfSampling;
use crate::pipeline::denoise::{denoise, DenoiseOptions, DenoiseResult};
use crate::report::denoise::{write_denoise_report, DenoiseReport};
use crate::sample::posterior::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsfSamplingArg {
    /// The PSF file is sampled on the observed pixels (the usual effective PSF). With
    /// `--upsample f > 1` it is interpolated bilinearly onto the model grid; the block sum then
    /// integrates over the pixel a second time (an effective PSF already includes the pixel),
    /// a mild extra blur of one observed pixel.
    Observed,
    /// The PSF file is sampled on the model grid (1/f of an observed pixel, e.g. an
    /// oversampled TinyTim PSF): used as it is.
    Model,
}

impl From<PsfSamplingArg> for PsfSampling {
    fn from(p: PsfSamplingArg) -> Self {
        match p {
            PsfSamplingArg::Observed => Self::Observed,
            PsfSamplingArg::Model => Self::Model,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DenoiseArgs {
    /// The observed image (FITS, first image HDU; opened read-only).
    #[arg(long)]
    pub image: PathBuf,
    /// The PSF (FITS), sampled as `--psf-sampling` says; normalised to sum 1 here.
    #[arg(long)]
    pub psf: PathBuf,
    /// Noise σ per observed pixel, in the image's units. Default: 1.4826 × MAD of the pixels
    /// in the image's outer border (a strip of max(4, min(ny, nx)/10) pixels), which is away
    /// from the sources of a cutout centred on them.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Sum BIN×BIN blocks of the image (and of the PSF, its centre kept in the middle of a
    /// block) before anything else: a wider field for the prior's fixed grid (with BIN 4 the
    /// 64² model spans 256 input pixels), at a coarser pixel. σ is estimated after binning.
    #[arg(long, default_value_t = 1, value_parser = super::common::at_least_one)]
    pub bin: usize,
    /// Model pixels per observed pixel (the model grid is the prior's size).
    #[arg(long, default_value_t = 1, value_parser = super::common::at_least_one)]
    pub upsample: usize,
    #[arg(long, value_enum, default_value_t = PsfSamplingArg::Observed)]
    pub psf_sampling: PsfSamplingArg,
    /// Observed pixels on each side of the cutout that the model covers but the data do not.
    #[arg(long, default_value_t = 4)]
    pub margin: usize,
    /// Centre of the cutout, `IY,IX` (0-based pixel of the input: IX along FITS axis 1).
    /// Default: the brightest source.
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub centre: Option<Vec<usize>>,
    /// Shift of the model relative to the PSF, `DY,DX` in model pixels (bilinear).
    #[arg(long, value_delimiter = ',', num_args = 2, allow_hyphen_values = true)]
    pub shift: Option<Vec<f64>>,
    /// Flux of a prior image's brightest pixel (image units per model pixel). Default: the
    /// peak of a quick non-negative deconvolution (100 projected Landweber iterations).
    #[arg(long)]
    pub flux_scale: Option<f64>,
    /// Prior checkpoint folder (config.json + weights.safetensors). Default: the built-in prior
    /// (MiraBest radio galaxies, 64²).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// A learned noise model (checkpoint folder from `interf-image noise train`, trained on
    /// noise-only cutouts of such images) in place of white Gaussian noise of σ. σ is still
    /// estimated (or given) for the residual/σ statistics.
    #[arg(long)]
    pub noise_model: Option<PathBuf>,
    /// Posterior samples to draw.
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub samples: usize,
    /// Output prefix: NAME-mean.fits, NAME-report.html, ...
    #[arg(long, value_parser = super::common::output_name)]
    pub name: String,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn run(args: DenoiseArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.threads)?;
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let inputs: Vec<&Path> = [
        Some(args.image.as_path()),
        Some(args.psf.as_path()),
        args.prior.as_deref(),
        args.noise_model.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    check_outputs(
        &args.name,
        &[
            "samples.fits",
            "mean.fits",
            "std.fits",
            "data.fits",
            "prediction.fits",
            "residual.fits",
            "residual-sigma.fits",
            "report.html",
        ],
        &inputs,
    )?;
    let opts = options(&args)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let res = denoise(&opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let r = res?;

    write_images(&args.name, &r, &inputs)?;
    let (html, pngs) = write_report(&args, &r)?;
    let (c, rs) = (&r.cutout, &r.residual_stats);
    println!(
        "denoise: {}×{} cutout at ({}, {}) of {}, σ = {:.4}, flux scale {:.4}",
        c.shape[0],
        c.shape[1],
        c.origin[0],
        c.origin[1],
        args.image.display(),
        r.sigma,
        r.flux_scale
    );
    println!(
        "  residual/σ of the mean: reduced χ² {:.3}, mean {:.3}, std {:.3}, {:.1} % within ±2σ",
        rs.reduced_chi2,
        rs.mean,
        rs.std,
        100.0 * rs.within_2sigma
    );
    println!(
        "  wrote {}-samples.fits, -mean, -std, -data, -prediction, -residual, -residual-sigma, {} and {} PNGs in {:.1} s (sampling {:.1} s)",
        args.name,
        html.display(),
        pngs.len(),
        start.elapsed().as_secs_f64(),
        r.sampling_seconds
    );
    Ok(())
}

fn options(args: &DenoiseArgs) -> anyhow::Result<DenoiseOptions> {
    Ok(DenoiseOptions {
        image: args.image.clone(),
        psf: args.psf.clone(),
        sigma: args.sigma,
        bin: args.bin,
        upsample: args.upsample,
        psf_sampling: args.psf_sampling.into(),
        margin: args.margin,
        // clap gives exactly two values.
        centre: args.centre.as_ref().map(|c| [c[0], c[1]]),
        shift: args.shift.as_ref().map_or([0.0, 0.0], |s| [s[0], s[1]]),
        flux_scale: args.flux_scale,
        prior: args.prior.clone(),
        noise_model: args.noise_model.clone(),
        device: device(args.device)?,
        posterior: args.sampling.options(args.samples, MethodArg::Cla),
    })
}

/// The FITS outputs: model-grid samples, mean and std; data-grid data, prediction, residual
/// and residual/σ.
fn write_images(name: &str, r: &DenoiseResult, inputs: &[&Path]) -> anyhow::Result<()> {
    let p = |s: &str| output_path(name, s, inputs);
    let (side, [wy, wx]) = (r.side, r.cutout.shape);
    let (mh, dh) = (&r.model_header, &r.data_header);
    let n = r.n_samples;
    write_cube(
        &p("samples")?,
        &r.samples,
        n,
        side,
        side,
        mh,
        CubeAxis::Sample,
    )?;
    write_image(&p("mean")?, &r.mean, side, side, mh)?;
    write_image(&p("std")?, &r.std, side, side, mh)?;
    write_image(&p("data")?, &r.data, wy, wx, dh)?;
    write_image(&p("prediction")?, &r.prediction, wy, wx, dh)?;
    write_image(&p("residual")?, &r.residual, wy, wx, dh)?;
    let rh = &r.residual_sigma_header;
    write_image(&p("residual-sigma")?, &r.residual_sigma, wy, wx, rh)?;
    Ok(())
}

/// NAME-report.html and its PNGs; returns their paths.
fn write_report(args: &DenoiseArgs, r: &DenoiseResult) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let unit_label = if r.bunit.is_empty() {
        "image units".to_string()
    } else {
        r.bunit.clone()
    };
    let asec = r.pixel_asec;
    let f = args.upsample;
    let report = DenoiseReport {
        title: format!(
            "{} — PSF deconvolution posterior ({} samples, {:?})",
            args.image.file_name().map_or_else(
                || args.image.display().to_string(),
                |s| s.to_string_lossy().into_owned()
            ),
            r.n_samples,
            Method::from(args.sampling.method(MethodArg::Cla))
        ),
        unit: &unit_label,
        model_shape: [r.side, r.side],
        model_pixel_asec: asec / f as f64,
        data_shape: r.cutout.shape,
        data_pixel_asec: asec,
        data: &r.data,
        prediction: &r.prediction,
        mean: &r.mean,
        std: &r.std,
        samples: &r.samples,
        n_samples: r.n_samples,
        resid_sigma: &r.residual_sigma,
        summary: report_summary(args, r, &unit_label),
    };
    Ok(write_denoise_report(&args.name, &report)?)
}

/// The report's table: the inputs, the geometry, the noise, the prior and the sampler, and how
/// well the mean fits.
fn report_summary(
    args: &DenoiseArgs,
    r: &DenoiseResult,
    unit_label: &str,
) -> Vec<(String, String)> {
    let (side, f, b) = (r.side, args.upsample, args.bin);
    let [ny, nx] = r.cutout.binned_shape;
    let [ky, kx] = r.psf.shape;
    let [pcy, pcx] = r.psf.centroid;
    let [cy, cx] = r.cutout.centre;
    let (win, cut0) = (r.cutout.shape, r.cutout.origin);
    let asec = r.pixel_asec;
    let method = Method::from(args.sampling.method(MethodArg::Cla));
    let (psf_sum, flux_scale) = (r.psf.sum, r.flux_scale);
    let rs = &r.residual_stats;
    let mut sorted = r.reduced_chi2_samples.clone();
    sorted.sort_by(f64::total_cmp);
    vec![
        ("Image".into(), format!("{} ({ny}×{nx})", args.image.display())),
        (
            "PSF".into(),
            format!(
                "{} ({ky}×{kx}, sum {psf_sum:.6} → 1; centre pixel ({}, {}); centroid at ({pcy:.2}, {pcx:.2}); {} kernel pixels used)",
                args.psf.display(),
                (ky - 1) / 2,
                (kx - 1) / 2,
                r.psf.kernel_pixels
            ),
        ),
        (
            "Cutout".into(),
            format!(
                "{}×{} observed pixels from ({}, {}) (0-based iy, ix{}), centred on ({cy}, {cx}): {}",
                win[0], win[1], cut0[0], cut0[1],
                if b > 1 { format!(", after binning the input {b}×{b}: {ny}×{nx}") } else { String::new() },
                if r.cutout.centre_given { "given" } else { "peak of the PSF-filtered image" }
            ),
        ),
        (
            "Model grid".into(),
            format!(
                "{side}×{side} pixels of {:.4}″ (upsample {f}; PSF {:?}); margin {} observed pixels beyond the data",
                asec / f as f64,
                args.psf_sampling,
                args.margin
            ),
        ),
        (
            "WCS".into(),
            match &r.wcs {
                Some(w) => format!(
                    "from the input ({}, {:.4}″/pixel, rotation {:.3}°{}), re-centred on each output",
                    if w.tan { "TAN" } else { "SIN" },
                    asec,
                    w.rotation_deg(),
                    if w.rotation_deg().abs() > 0.01 { ": NOT kept in the outputs" } else { "" }
                ),
                None => "none in the input: outputs carry placeholder 1″ pixels at RA = Dec = 0".into(),
            },
        ),
        (
            "Noise σ".into(),
            match (args.sigma, r.border) {
                (Some(s), _) => format!("{s} (given)"),
                (None, Some(bn)) => format!(
                    "{:.4} = 1.4826 × MAD of {} pixels in the outer {}-pixel border (median {:.4}; no background subtracted)",
                    bn.sigma, bn.pixels, bn.width, bn.median
                ),
                _ => String::new(),
            },
        ),
        (
            "Flux scale".into(),
            format!(
                "{flux_scale:.4} {unit_label}/model pixel at prior value 1 ({})",
                if args.flux_scale.is_some() { "given" } else { "peak of a 100-iteration non-negative Landweber deconvolution" }
            ),
        ),
        ("Prior".into(), r.prior_name.clone()),
        (
            "Likelihood".into(),
            r.noise_note.clone().unwrap_or_else(|| {
                "Gaussian, white, σ per pixel; convolved approximation with Γ = row sums of AAᵀ"
                    .into()
            }),
        ),
        (
            "Sampling".into(),
            format!(
                "{} samples, {} steps, {:?}, α = {}, seed {}, {:.1} s",
                r.n_samples,
                args.sampling.steps(MethodArg::Cla),
                method,
                args.sampling.alpha,
                args.sampling.seed,
                r.sampling_seconds
            ),
        ),
        (
            "Residual/σ of the mean".into(),
            format!(
                "reduced χ² {:.3}; mean {:.3}, std {:.3}; {:.1} % within ±2σ (N(0,1): 95.4 %); {} pixels",
                rs.reduced_chi2,
                rs.mean,
                rs.std,
                100.0 * rs.within_2sigma,
                rs.pixels
            ),
        ),
        (
            "Reduced χ² of samples".into(),
            format!(
                "median {:.3} (range {:.3}–{:.3})",
                sorted[sorted.len() / 2],
                sorted[0],
                sorted[sorted.len() - 1]
            ),
        ),
        (
            "Flux".into(),
            format!(
                "data {:.1}, prediction {:.1}, model (all of the grid) {:.1} {unit_label}",
                r.data_flux, r.prediction_flux, r.model_flux
            ),
        ),
    ]
}
