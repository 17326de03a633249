//! `interf-image lens`: the posterior of a pixelated background source behind a known lens, from
//! an image (HST-like: data, noise map, PSF) or from visibilities (`--uv`: ALMA-like, through
//! the NUFFT composed with the lens), with a score-based prior on the source. The job is
//! [`crate::pipeline::lens`]; this parses, writes and prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{check_outputs, output_path, MethodArg, SamplingArgs};
use super::interrupt::Terminal;
use super::prior::{device, DeviceArg};
use crate::io::{write_atomic, write_cube, write_image, CubeAxis};
use crate::operator::lens::data::RowOrder;
use crate::pipeline::lens::{lens, FitMask, LensOptions, LensResult};

#[derive(Debug, Clone, Args)]
pub struct LensArgs {
    /// Observed image (FITS; rows bottom-up as DS9 shows them), or with --uv the visibilities
    /// (FITS, N × 2: re, im).
    #[arg(long)]
    pub data: PathBuf,
    /// Noise σ per pixel (same shape as --data), or per re/im component with --uv.
    #[arg(long)]
    pub noise: PathBuf,
    /// PSF (FITS, odd sides, centred); imaging only.
    #[arg(long)]
    pub psf: Option<PathBuf>,
    /// The lens: our JSON (einstein_radius_arcsec, axis_ratio, angle_deg counter-clockwise
    /// from +x (west), centre_arcsec [x, y], shear {gamma_1, gamma_2}) or an autolens
    /// tracer.json. A lens light profile in it is subtracted (PSF-convolved) from image data.
    #[arg(long)]
    pub lens: PathBuf,
    /// uv coordinates (FITS, N × 2, wavelengths): fit visibilities instead of an image.
    #[arg(long)]
    pub uv: Option<PathBuf>,
    /// Source grid side, pixels (must equal the prior's size).
    #[arg(long, default_value_t = 64)]
    pub source_size: usize,
    /// Source pixel, arcsec. Default: images: the traced extent of the pixels with S/N > 3;
    /// visibilities: θ_E/20.
    #[arg(long)]
    pub source_scale: Option<f64>,
    /// Source grid centre "x,y" in arcsec. Default: images: the traced centre of the
    /// significant pixels; visibilities: the lens centre.
    #[arg(long)]
    pub source_centre: Option<String>,
    /// Image pixel, arcsec. Default: the PIXSCAX/CDELT1 of --data; with --uv, 1/(2.5 u_max).
    #[arg(long)]
    pub pixel_scale: Option<f64>,
    /// Row order of the image files (data, noise, PSF).
    #[arg(long, value_enum, default_value_t = RowsArg::Auto)]
    pub rows: RowsArg,
    /// Most memory the job may take (e.g. 64GB). Default: the memory available now; a larger
    /// --image-size is refused before anything is allocated.
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    /// Image-plane grid side in pixels for --uv (even).
    #[arg(long, default_value_t = 512, value_parser = super::common::at_least_one)]
    pub image_size: usize,
    /// Rays per image pixel side.
    #[arg(long, default_value_t = 3, value_parser = super::common::at_least_one)]
    pub supersample: usize,
    /// Which image pixels are fitted: `auto` (those whose rays reach the source grid) or `all`.
    #[arg(long, default_value = "auto")]
    pub mask: String,
    /// Source value at prior value 1, in data units. Default: the peak of a non-negative
    /// least-squares source.
    #[arg(long)]
    pub flux_scale: Option<f64>,
    /// Prior checkpoint folder. Default: the built-in 64² prior (MiraBest radio galaxies).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub samples: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Output prefix: NAME-samples.fits, -mean, -std, -model, -residual, -summary.json, -report.html.
    #[arg(long, value_parser = super::common::output_name)]
    pub name: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Which way up the rows of the image files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RowsArg {
    /// Top row first when the data header has PIXSCAX (autolens), else FITS order.
    Auto,
    /// FITS order: the first row is the bottom of the image (as DS9 shows it).
    Fits,
    /// The first row is the top of the image (arrays written as numpy holds them).
    TopDown,
}

impl From<RowsArg> for RowOrder {
    fn from(r: RowsArg) -> Self {
        match r {
            RowsArg::Auto => Self::Auto,
            RowsArg::Fits => Self::Fits,
            RowsArg::TopDown => Self::TopDown,
        }
    }
}

/// What a run measured; also written as NAME-summary.json.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LensSummary {
    pub mode: String,
    pub n_data: usize,
    pub reduced_chi2_mean: f64,
    pub reduced_chi2_samples: Vec<f64>,
    pub truth_correlation: Option<f64>,
    pub flux_scale: f64,
    pub source_scale_arcsec: f64,
    pub source_centre_arcsec: [f64; 2],
    pub image_pixel_scale_arcsec: f64,
    pub gamma_inflation: f64,
    pub alpha: f32,
    pub corrector_snr: f64,
    pub samples: usize,
    pub steps: usize,
    pub prior: String,
    pub seconds: f64,
}

const IMAGES: [&str; 5] = ["samples", "mean", "std", "model", "residual"];

pub fn run(args: LensArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    let opts = options(&args)?;
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let inputs: Vec<&Path> = [
        Some(args.data.as_path()),
        Some(args.noise.as_path()),
        Some(args.lens.as_path()),
        args.psf.as_deref(),
        args.uv.as_deref(),
        args.prior.as_deref(),
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
            "model.fits",
            "residual.fits",
            "summary.json",
            "report.html",
        ],
        &inputs,
    )?;
    let paths = IMAGES
        .iter()
        .map(|s| output_path(&args.name, s, &inputs))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let bar = progress();
    let res = lens(&opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let r = res?;

    write_images(&r, &paths)?;
    let sp = write_summary(&args, &r, start)?;
    let html = write_report(&args, &r, start)?;
    eprintln!(
        "reduced χ² of the mean {:.3} over {} data{}; wrote {}-{{samples,mean,std,model,residual}}.fits, {}, {}",
        r.reduced_chi2_mean,
        r.n_data,
        r.truth_correlation
            .map_or(String::new(), |c| format!(", correlation with the true source {c:.3}")),
        args.name,
        sp.display(),
        html.display()
    );
    Ok(())
}

/// The pipeline's options from the arguments (checked as the pipeline cannot: the corrector,
/// the mask and the centre as typed).
fn options(args: &LensArgs) -> anyhow::Result<LensOptions> {
    let s = &args.sampling;
    if !(s.corrector_snr.is_finite() && s.corrector_snr >= 0.0) {
        bail!(
            "--corrector-snr must be 0 or positive, got {}",
            s.corrector_snr
        );
    }
    let mask = match args.mask.as_str() {
        "auto" => FitMask::Auto,
        "all" => FitMask::All,
        m => bail!("--mask must be auto or all, got {m:?}"),
    };
    Ok(LensOptions {
        data: args.data.clone(),
        noise: args.noise.clone(),
        psf: args.psf.clone(),
        lens: args.lens.clone(),
        uv: args.uv.clone(),
        source_size: args.source_size,
        source_scale: args.source_scale,
        source_centre: args.source_centre.as_deref().map(parse_pair).transpose()?,
        pixel_scale: args.pixel_scale,
        rows: args.rows.into(),
        max_memory: args.max_memory,
        image_size: args.image_size,
        supersample: args.supersample,
        mask,
        flux_scale: args.flux_scale,
        prior: args.prior.clone(),
        device: device(args.device)?,
        posterior: s.options(args.samples, MethodArg::Cla),
    })
}

fn progress() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    )
}

fn parse_pair(s: &str) -> anyhow::Result<[f64; 2]> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--source-centre {s:?}: expected \"x,y\" in arcsec"))?;
    match v.as_slice() {
        [x, y] if x.is_finite() && y.is_finite() => Ok([*x, *y]),
        _ => bail!("--source-centre {s:?}: expected \"x,y\" in arcsec"),
    }
}

/// NAME-{samples,mean,std,model,residual}.fits, at `paths` in that order.
fn write_images(r: &LensResult, paths: &[PathBuf]) -> anyhow::Result<()> {
    let side = r.source.nx;
    let (sh, ih, g) = (&r.source_header, &r.image_header, &r.image_grid);
    let flat: Vec<f32> = r.samples.iter().flatten().copied().collect();
    write_cube(
        &paths[0],
        &flat,
        r.samples.len(),
        side,
        side,
        sh,
        CubeAxis::Sample,
    )?;
    write_image(&paths[1], &r.mean, side, side, sh)?;
    write_image(&paths[2], &r.std, side, side, sh)?;
    write_image(&paths[3], &r.model_image, g.ny, g.nx, ih)?;
    write_image(&paths[4], &r.residual, g.ny, g.nx, ih)?;
    Ok(())
}

/// NAME-summary.json; returns its path.
fn write_summary(args: &LensArgs, r: &LensResult, start: Instant) -> anyhow::Result<PathBuf> {
    let summary = LensSummary {
        mode: r.mode.clone(),
        n_data: r.n_data,
        reduced_chi2_mean: r.reduced_chi2_mean,
        reduced_chi2_samples: r.reduced_chi2_samples.clone(),
        truth_correlation: r.truth_correlation,
        flux_scale: r.flux_scale,
        source_scale_arcsec: r.source.scale,
        source_centre_arcsec: r.source.centre,
        image_pixel_scale_arcsec: r.image_grid.pixel_scale,
        gamma_inflation: r.gamma_inflation,
        alpha: args.sampling.alpha,
        corrector_snr: args.sampling.corrector_snr,
        samples: r.samples.len(),
        steps: args.sampling.steps(MethodArg::Cla),
        prior: args
            .prior
            .as_ref()
            .map_or("built-in (MiraBest)".into(), |p| p.display().to_string()),
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&summary)?;
    let sp = PathBuf::from(format!("{}-summary.json", args.name));
    write_atomic(&sp, json.as_bytes()).with_context(|| format!("writing {}", sp.display()))?;
    Ok(sp)
}

/// NAME-report.html; returns its path.
fn write_report(args: &LensArgs, r: &LensResult, start: Instant) -> anyhow::Result<PathBuf> {
    let (n, g, src) = (r.samples.len(), &r.image_grid, &r.source);
    let side = src.nx;
    let flat: Vec<f32> = r.samples.iter().flatten().copied().collect();
    let report = crate::report::lens::LensReport {
        title: format!("Lensed source posterior: {}", args.name),
        image_ny: g.ny,
        image_nx: g.nx,
        image_pixel_asec: g.pixel_scale,
        data: &r.data_image,
        model: &r.model_image,
        residual: &r.residual,
        residual_label: &r.residual_label,
        data_unit: &r.data_unit,
        source_side: side,
        source_pixel_asec: src.scale,
        mean: &r.mean,
        std: &r.std,
        samples: &flat,
        n_samples: n,
        truth: r.truth.as_deref(),
        summary: vec![
            ("mode".into(), r.mode.clone()),
            ("data fitted".into(), format!("{}", r.n_data)),
            (
                "reduced χ² of the mean".into(),
                format!("{:.3}", r.reduced_chi2_mean),
            ),
            (
                "correlation with the true source".into(),
                r.truth_correlation
                    .map_or("(no truth given)".into(), |c| format!("{c:.3}")),
            ),
            (
                "flux scale".into(),
                format!("{:.4} {}", r.flux_scale, r.data_unit),
            ),
            (
                "source grid".into(),
                format!(
                    "{side}² × {:.4}″ centred ({:.3}″, {:.3}″)",
                    src.scale, src.centre[0], src.centre[1]
                ),
            ),
            (
                "samples × steps".into(),
                format!("{n} × {}", args.sampling.steps(MethodArg::Cla)),
            ),
            (
                "time".into(),
                format!("{:.1} s", start.elapsed().as_secs_f64()),
            ),
        ],
    };
    Ok(crate::report::lens::write_lens_report(&args.name, &report)?)
}
