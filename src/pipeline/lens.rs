//! The `lens` job: the posterior of a pixelated background source behind a known lens, from an
//! image (HST-like: data, noise map, PSF) or from visibilities (ALMA-like, through the NUFFT
//! composed with the lens), with a score-based prior on the source.
//!
//! The data handling follows autolens' datasets ([`crate::operator::lens::autolens`],
//! [`crate::operator::lens::data`]); the numerics are in [`crate::operator::lens::fit`].

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::{Context, Result};
use crate::io::{HeaderValue, SkyHeader};
use crate::likelihood::GaussianLikelihood;
use crate::observe::Observer;
use crate::operator::lens::autolens::{read_lens_file, LensSystem};
use crate::operator::lens::data::{read_imaging_rows, read_visibilities, RowOrder};
use crate::operator::lens::fit::{
    auto_source_grid, autolens_nufft, correlation, light_image, nnls_source, reach_mask, stiffness,
    true_source, ARCSEC,
};
use crate::operator::lens::{ImageGrid, Lens, SourceGrid};
use crate::operator::{Compose, ForwardOperator, Scaled};
use crate::prior::{default_prior, ScoreModel};
use crate::sample::posterior::{sample_posterior, PosteriorOptions};

/// Which image pixels are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitMask {
    /// Those whose rays reach the source grid ([`reach_mask`]).
    Auto,
    All,
}

impl FitMask {
    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::All => "all",
        }
    }
}

/// What the `lens` job fits, and how.
#[derive(Debug, Clone)]
pub struct LensOptions {
    /// Observed image (FITS), or with `uv` the visibilities (FITS, N × 2: re, im).
    pub data: PathBuf,
    /// Noise σ per pixel, or per re/im component with `uv`.
    pub noise: PathBuf,
    /// PSF (FITS, odd sides, centred); imaging only.
    pub psf: Option<PathBuf>,
    /// Our lens JSON or an autolens tracer.json.
    pub lens: PathBuf,
    /// uv coordinates (FITS, N × 2, wavelengths): fit visibilities instead of an image.
    pub uv: Option<PathBuf>,
    /// Source grid side, pixels (must equal the prior's size).
    pub source_size: usize,
    /// Source pixel, arcsec. `None`: images: the traced extent of the pixels with S/N > 3;
    /// visibilities: θ_E/20.
    pub source_scale: Option<f64>,
    /// Source grid centre `[x, y]`, arcsec. `None`: images: the traced centre of the
    /// significant pixels; visibilities: the lens centre.
    pub source_centre: Option<[f64; 2]>,
    /// Image pixel, arcsec. `None`: the PIXSCAX/CDELT1 of the data; with `uv`, 1/(2.5 u_max).
    pub pixel_scale: Option<f64>,
    /// Row order of the image files (data, noise, PSF).
    pub rows: RowOrder,
    /// Most memory the job may take, bytes; `None`: the memory available now.
    pub max_memory: Option<u64>,
    /// Image-plane grid side in pixels with `uv` (even, at least 8).
    pub image_size: usize,
    /// Rays per image pixel side.
    pub supersample: usize,
    pub mask: FitMask,
    /// Source value at prior value 1, in data units. `None`: the peak of a non-negative
    /// least-squares source.
    pub flux_scale: Option<f64>,
    /// Prior checkpoint folder; `None`: the built-in 64² prior (MiraBest radio galaxies).
    pub prior: Option<PathBuf>,
    pub device: Device,
    pub posterior: PosteriorOptions,
}

/// What a `lens` run found: the source posterior, the fit in the image plane, and the numbers
/// of its summary.
pub struct LensResult {
    /// Posterior samples of the source, data units, each `side²`, row-major.
    pub samples: Vec<Vec<f32>>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub source: SourceGrid,
    /// Header of the source-plane images (samples, mean, std).
    pub source_header: SkyHeader,
    /// The lens file's source on the source grid, when it has one.
    pub truth: Option<Vec<f32>>,
    /// Correlation of the mean with `truth`.
    pub truth_correlation: Option<f64>,
    /// Reduced χ² of each sample, and of their mean.
    pub reduced_chi2_samples: Vec<f64>,
    pub reduced_chi2_mean: f64,
    /// Data fitted (pixels, or real visibility components).
    pub n_data: usize,
    pub flux_scale: f64,
    /// Factor on Γ ([`stiffness`]).
    pub gamma_inflation: f64,
    pub image_grid: ImageGrid,
    /// Header of the image-plane images (model, residual).
    pub image_header: SkyHeader,
    /// Lens-light-subtracted data (images) or the dirty image (visibilities).
    pub data_image: Vec<f32>,
    /// Lensed posterior mean.
    pub model_image: Vec<f32>,
    /// Residual/σ (images; NaN outside the fitted pixels) or residual dirty image.
    pub residual: Vec<f32>,
    pub residual_label: String,
    pub data_unit: String,
    /// What was fitted, in words.
    pub mode: String,
}

/// Runs the `lens` job; progress, notes and stopping through `obs`.
pub fn lens(opts: &LensOptions, obs: &dyn Observer) -> Result<LensResult> {
    let post = &opts.posterior;
    if post.n_samples == 0 || post.steps == 0 {
        input_error!("--samples and --steps must be at least 1");
    }
    if !(post.alpha.is_finite() && post.alpha > 0.0) {
        input_error!("--alpha must be positive, got {}", post.alpha);
    }
    let sys = read_lens_file(&opts.lens)?;
    let model = match &opts.prior {
        Some(dir) => ScoreModel::load(dir, &opts.device)?,
        None => default_prior(&opts.device).context("loading the built-in prior")?,
    };
    let side = model.image_size();
    if opts.source_size != side {
        input_error!(
            "--source-size {} but the prior works on {side}×{side} images",
            opts.source_size
        );
    }
    let fit = match &opts.uv {
        None => fit_imaging(opts, &sys, &model, side, obs)?,
        Some(uv) => fit_visibilities(opts, uv, &sys, &model, side, obs)?,
    };
    let Fit {
        samples,
        source,
        chi2,
        chi2_mean,
        n_data,
        flux_scale,
        model_image,
        residual,
        data_image,
        image_grid,
        data_unit,
        residual_label,
        gamma_inflation,
        mode,
    } = fit;

    let n = samples.len();
    let mean = mean_of(&samples);
    let std: Vec<f32> = (0..source.len())
        .map(|i| {
            let v: f64 = samples
                .iter()
                .map(|s| (s[i] - mean[i]) as f64)
                .map(|d| d * d)
                .sum::<f64>()
                / (n.max(2) - 1) as f64;
            v.sqrt() as f32
        })
        .collect();
    let truth = (!sys.source_light.is_empty()).then(|| true_source(&sys, &source));
    let truth_correlation = truth.as_ref().map(|t| correlation(&mean, t));
    let extra = vec![
        ("FLUXSCL".into(), HeaderValue::F64(flux_scale)),
        ("SRCX".into(), HeaderValue::F64(source.centre[0])),
        ("SRCY".into(), HeaderValue::F64(source.centre[1])),
        ("NSAMPLE".into(), HeaderValue::I64(n as i64)),
        ("SEED".into(), HeaderValue::I64(post.seed as i64)),
        (
            "COMMENT".into(),
            HeaderValue::Str("source plane; axes are arcsec offsets, not sky positions".into()),
        ),
    ];
    Ok(LensResult {
        source_header: header(source.scale, &data_unit, extra),
        image_header: header(image_grid.pixel_scale, &data_unit, Vec::new()),
        samples,
        mean,
        std,
        source,
        truth,
        truth_correlation,
        reduced_chi2_samples: chi2,
        reduced_chi2_mean: chi2_mean,
        n_data,
        flux_scale,
        gamma_inflation,
        image_grid,
        data_image,
        model_image,
        residual,
        residual_label,
        data_unit,
        mode,
    })
}

/// Arcsec offsets on the sky's axes: the source plane has no sky position.
fn header(scale_arcsec: f64, bunit: &str, extra: Vec<(String, HeaderValue)>) -> SkyHeader {
    SkyHeader {
        cell_x_deg: scale_arcsec / 3600.0,
        cell_y_deg: scale_arcsec / 3600.0,
        freq_hz: 1.0,
        bunit: bunit.into(),
        extra,
        ..Default::default()
    }
}

struct Fit {
    /// Data units.
    samples: Vec<Vec<f32>>,
    source: SourceGrid,
    chi2: Vec<f64>,
    chi2_mean: f64,
    n_data: usize,
    flux_scale: f64,
    model_image: Vec<f32>,
    residual: Vec<f32>,
    data_image: Vec<f32>,
    image_grid: ImageGrid,
    data_unit: String,
    residual_label: String,
    gamma_inflation: f64,
    mode: String,
}

fn mean_of(samples: &[Vec<f32>]) -> Vec<f32> {
    let n = samples.len() as f32;
    let mut mean = vec![0f32; samples[0].len()];
    for s in samples {
        mean.iter_mut().zip(s).for_each(|(m, v)| *m += v / n);
    }
    mean
}

/// Samples (data units), reduced χ² of each, of their mean, and the Γ inflation.
type Sampled = (Vec<Vec<f32>>, Vec<f64>, f64, f64);

/// Samples with the likelihood over `op` (normalised units), scaled to data units, and the
/// reduced χ² of each and of their mean; also the Γ inflation used.
fn sample(
    model: &ScoreModel,
    op: Box<dyn ForwardOperator>,
    y: Vec<f32>,
    sigma: &[f32],
    flux: f64,
    opts: &PosteriorOptions,
    obs: &dyn Observer,
) -> Result<Sampled> {
    let scaled = Scaled {
        inner: op,
        scale: flux as f32,
    };
    let mut lik = GaussianLikelihood::new(scaled, y, sigma)?;
    let infl = stiffness(lik.operator(), &lik.operator().diag_aat());
    lik.inflate_gamma(&vec![infl as f32; lik.operator().data_len()])?;
    obs.stage(
        "sampling",
        (opts.n_samples.div_ceil(opts.batch.max(1)) * opts.steps) as u64,
    );
    obs.status("sampling");
    let s = sample_posterior(model, &lik, opts, obs)?;
    let chi2: Vec<f64> = s.iter().map(|x| lik.reduced_chi2(x)).collect();
    let chi2_mean = lik.reduced_chi2(&mean_of(&s));
    let phys = s
        .into_iter()
        .map(|x| x.into_iter().map(|v| v * flux as f32).collect())
        .collect();
    Ok((phys, chi2, chi2_mean, infl))
}

fn fit_imaging(
    opts: &LensOptions,
    sys: &LensSystem,
    model: &ScoreModel,
    side: usize,
    obs: &dyn Observer,
) -> Result<Fit> {
    let im = read_imaging_rows(
        &opts.data,
        &opts.noise,
        opts.psf.as_deref(),
        opts.pixel_scale,
        opts.rows,
        obs,
    )?;
    let grid = im.grid;
    let light = light_image(&sys.lens_light, &grid, im.psf.as_ref());
    let sub: Vec<f32> = im.data.iter().zip(&light).map(|(d, l)| d - l).collect();
    let snr: Vec<f32> = sub.iter().zip(&im.noise).map(|(d, s)| d / s).collect();
    let source = auto_source_grid(
        sys,
        &grid,
        &snr,
        side,
        opts.source_scale,
        opts.source_centre,
    )?;
    let build = |mask: Option<Vec<bool>>| {
        Lens::new(
            &sys.mass,
            grid,
            source,
            crate::operator::lens::LensOptions {
                supersample: opts.supersample,
                psf: im.psf.clone(),
                mask,
            },
        )
    };
    let full = build(None)?;
    let mask = match opts.mask {
        FitMask::All => vec![true; grid.len()],
        FitMask::Auto => reach_mask(&full),
    };
    let lens = build(Some(mask.clone()))?;
    let sel = |v: &[f32]| -> Vec<f32> { lens.observed().iter().map(|&p| v[p as usize]).collect() };
    let (y, sigma) = (sel(&sub), sel(&im.noise));
    let flux = flux_scale(opts.flux_scale, &lens, &y, &sigma)?;
    let n_data = y.len();
    let (samples, chi2, chi2_mean, infl) =
        sample(model, Box::new(lens), y, &sigma, flux, &opts.posterior, obs)?;
    let model_image = full.render(&mean_of(&samples));
    let residual: Vec<f32> = sub
        .iter()
        .zip(&model_image)
        .zip(&im.noise)
        .zip(&mask)
        .map(|(((d, m), s), &k)| if k { (d - m) / s } else { f32::NAN })
        .collect();
    Ok(Fit {
        samples,
        source,
        chi2,
        chi2_mean,
        n_data,
        flux_scale: flux,
        model_image,
        residual,
        data_image: sub,
        image_grid: grid,
        data_unit: "DATA".into(),
        residual_label: "(data − lens light − model)/σ over the fitted pixels".into(),
        gamma_inflation: infl,
        mode: format!(
            "image {}×{} at {}″, lens light subtracted, {} fitted pixels ({})",
            grid.ny,
            grid.nx,
            grid.pixel_scale,
            n_data,
            opts.mask.name()
        ),
    })
}

fn flux_scale(
    given: Option<f64>,
    op: &dyn ForwardOperator,
    y: &[f32],
    sigma: &[f32],
) -> Result<f64> {
    match given {
        Some(f) if f.is_finite() && f > 0.0 => Ok(f),
        Some(f) => input_error!("--flux-scale must be positive, got {f}"),
        None => {
            let x = nnls_source(op, y, sigma, 200);
            let peak = x.iter().cloned().fold(0f32, f32::max) as f64;
            if peak > 0.0 {
                Ok(peak)
            } else {
                input_error!("the data show no positive source: give --flux-scale")
            }
        }
    }
}

fn fit_visibilities(
    opts: &LensOptions,
    uv_path: &Path,
    sys: &LensSystem,
    model: &ScoreModel,
    side: usize,
    obs: &dyn Observer,
) -> Result<Fit> {
    if opts.image_size < 8 || !opts.image_size.is_multiple_of(2) {
        input_error!(
            "--image-size must be even and at least 8, got {}",
            opts.image_size
        );
    }
    // Rays (supersample² per pixel, with their interpolation weights), the NUFFT's
    // oversampled grid and a batch of chains' images, estimated before any is allocated.
    let n2 = (opts.image_size as f64).powi(2);
    let s2 = (opts.supersample as f64).powi(2);
    super::resources::check_memory(
        n2 * (64.0 * s2 + 64.0 + 16.0 * opts.posterior.batch as f64),
        &format!("an image plane of {0}×{0} pixels", opts.image_size),
        opts.max_memory,
    )?;
    let vis = read_visibilities(&opts.data, &opts.noise, uv_path)?;
    let umax = vis.uv.iter().map(|[u, v]| u.hypot(*v)).fold(0.0, f64::max);
    if !(umax > 0.0 && umax.is_finite()) && opts.pixel_scale.is_none() {
        input_error!(
            "{}: every uv point is at u = v = 0 (or not finite): no baseline to set the pixel \
             scale from",
            uv_path.display()
        );
    }
    let pixel = match opts.pixel_scale {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => input_error!("--pixel-scale must be positive, got {s}"),
        None => 1.0 / (2.5 * umax) / ARCSEC,
    };
    let grid = ImageGrid {
        ny: opts.image_size,
        nx: opts.image_size,
        pixel_scale: pixel,
    };
    let source = SourceGrid {
        ny: side,
        nx: side,
        scale: opts
            .source_scale
            .unwrap_or(sys.mass.sie.einstein_radius / 20.0),
        centre: opts.source_centre.unwrap_or(sys.mass.sie.centre),
    };
    // Two of each: the sampler's operator owns one pair, the model image and the dirty images
    // need the other.
    let build = || {
        Lens::new(
            &sys.mass,
            grid,
            source,
            crate::operator::lens::LensOptions {
                supersample: opts.supersample,
                psf: None,
                mask: None,
            },
        )
    };
    let lens = build()?;
    let render_lens = build()?;
    let nufft = autolens_nufft(&vis.uv, &grid)?;
    let nufft2 = autolens_nufft(&vis.uv, &grid)?;
    let op = Compose::new(nufft, lens)?;
    let flux = flux_scale(opts.flux_scale, &op, &vis.data, &vis.sigma)?;
    let n_data = vis.data.len();
    let (samples, chi2, chi2_mean, infl) = sample(
        model,
        Box::new(op),
        vis.data.clone(),
        &vis.sigma,
        flux,
        &opts.posterior,
        obs,
    )?;
    let model_image = render_lens.render(&mean_of(&samples));
    // Natural-weighted dirty images of the data and of the residual (Jy/beam).
    let w: Vec<f32> = vis.sigma.iter().map(|s| 1.0 / (s * s)).collect();
    let wsum: f64 = w.iter().step_by(2).map(|&v| v as f64).sum();
    let dirty = |r: &[f32]| -> Vec<f32> {
        let rw: Vec<f32> = r.iter().zip(&w).map(|(a, b)| a * b).collect();
        let mut img = vec![0f32; grid.len()];
        nufft2.adjoint(&rw, &mut img);
        img.iter().map(|v| (*v as f64 / wsum) as f32).collect()
    };
    let mut mv = vec![0f32; n_data];
    nufft2.forward(&model_image, &mut mv);
    let res: Vec<f32> = vis.data.iter().zip(&mv).map(|(d, m)| d - m).collect();
    Ok(Fit {
        samples,
        source,
        chi2,
        chi2_mean,
        n_data,
        flux_scale: flux,
        model_image,
        residual: dirty(&res),
        data_image: dirty(&vis.data),
        image_grid: grid,
        data_unit: "JY/PIXEL".into(),
        residual_label: "residual dirty image (natural weighting, Jy/beam)".into(),
        gamma_inflation: infl,
        mode: format!(
            "{} visibilities, lens image {}² at {:.4}″",
            vis.uv.len(),
            grid.nx,
            grid.pixel_scale
        ),
    })
}
