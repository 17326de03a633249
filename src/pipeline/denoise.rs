//! The `denoise` job: posterior deconvolution of an optical image (HST) with a known PSF and a
//! score-based prior. Samples, mean and std of the deconvolved image, the prediction (mean
//! through the operator), residuals and residual/σ, with their headers.
//!
//! Geometry: the prior works on a fixed n×n model grid (64² for the built-in prior). With
//! `upsample f` a model pixel is 1/f of an observed pixel, so the model covers n/f observed
//! pixels; of those, a `margin` on each side is left out of the data so that sources just
//! outside the cutout can spill their PSF wings into it without the model having to fake them
//! at its edge. The cutout is centred on the brightest source (the peak of the image filtered
//! with the PSF) unless `centre` says otherwise.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use super::{Context, Result};
use crate::io::{read_image, FitsImage, HeaderValue, SkyHeader};
use crate::likelihood::{GaussianLikelihood, LearnedNoiseLikelihood, LikelihoodScore};
use crate::observe::Observer;
use crate::operator::hst::prep::{
    bin_image, bin_psf, border_noise, nnls_peak, refine_psf, BorderNoise, PsfSampling,
};
use crate::operator::hst::wcs::InputWcs;
use crate::operator::{DataWindow, ForwardOperator, Hst, HstOptions, Scaled};
use crate::prior::{default_prior, ScoreModel};
use crate::sample::posterior::{sample_posterior, PosteriorOptions};

/// What the `denoise` job deconvolves, and how.
#[derive(Debug, Clone)]
pub struct DenoiseOptions {
    /// The observed image (FITS, first image HDU).
    pub image: PathBuf,
    /// The PSF (FITS), sampled as `psf_sampling` says; normalised to sum 1 here.
    pub psf: PathBuf,
    /// Noise σ per observed pixel, in the image's units. `None`: 1.4826 × MAD of the image's
    /// outer border ([`border_noise`]).
    pub sigma: Option<f64>,
    /// Sum `bin × bin` blocks of the image and of the PSF before anything else.
    pub bin: usize,
    /// Model pixels per observed pixel (the model grid is the prior's size).
    pub upsample: usize,
    pub psf_sampling: PsfSampling,
    /// Observed pixels on each side of the cutout that the model covers but the data do not.
    pub margin: usize,
    /// Centre of the cutout, `[iy, ix]` (0-based pixel of the binned input). `None`: the
    /// brightest source.
    pub centre: Option<[usize; 2]>,
    /// Shift of the model relative to the PSF, `[dy, dx]` in model pixels (bilinear).
    pub shift: [f64; 2],
    /// Flux of a prior image's brightest pixel (image units per model pixel). `None`: the
    /// peak of a quick non-negative deconvolution.
    pub flux_scale: Option<f64>,
    /// Prior checkpoint folder; `None`: the built-in prior (MiraBest radio galaxies, 64²).
    pub prior: Option<PathBuf>,
    /// A learned noise model's checkpoint folder, in place of white Gaussian noise of σ.
    pub noise_model: Option<PathBuf>,
    pub device: Device,
    pub posterior: PosteriorOptions,
}

/// Where the data were cut from the (binned) input.
#[derive(Debug, Clone, Copy)]
pub struct Cutout {
    /// Observed pixels used, `[ny, nx]`.
    pub shape: [usize; 2],
    /// First pixel used, `[iy, ix]` (0-based, binned input).
    pub origin: [usize; 2],
    /// The pixel it is centred on, and whether it was given (else the peak of the
    /// PSF-filtered image).
    pub centre: [usize; 2],
    pub centre_given: bool,
    /// The input after binning, `[ny, nx]`.
    pub binned_shape: [usize; 2],
}

/// The PSF as used (after binning).
#[derive(Debug, Clone)]
pub struct PsfInfo {
    pub shape: [usize; 2],
    /// Sum of the file's pixels (normalised to 1 for use).
    pub sum: f64,
    /// Flux-weighted centroid `[y, x]`, pixels.
    pub centroid: [f64; 2],
    /// Kernel pixels the operator keeps.
    pub kernel_pixels: usize,
}

/// Residual/σ of the posterior mean over the data pixels.
#[derive(Debug, Clone, Copy)]
pub struct ResidualStats {
    pub reduced_chi2: f64,
    pub mean: f64,
    pub std: f64,
    /// Fraction within ±2σ.
    pub within_2sigma: f64,
    /// Pixels counted (the finite ones).
    pub pixels: usize,
}

/// What a `denoise` run found.
pub struct DenoiseResult {
    /// Samples in image units per model pixel, `[k][iy][ix]`.
    pub samples: Vec<f32>,
    pub n_samples: usize,
    /// Model grid side (the prior's).
    pub side: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The cutout's data, `cutout.shape`, row-major (0 where the input is NaN).
    pub data: Vec<f32>,
    /// The mean through the operator.
    pub prediction: Vec<f32>,
    /// data − prediction, NaN where the input is NaN.
    pub residual: Vec<f32>,
    pub residual_sigma: Vec<f32>,
    /// Headers of the model-grid images, of the data-grid images, and of residual/σ.
    pub model_header: SkyHeader,
    pub data_header: SkyHeader,
    pub residual_sigma_header: SkyHeader,
    pub cutout: Cutout,
    pub psf: PsfInfo,
    /// The input's WCS, when it has a celestial one.
    pub wcs: Option<InputWcs>,
    /// Observed (binned) pixel, arcsec.
    pub pixel_asec: f64,
    /// The input's BUNIT (may be empty).
    pub bunit: String,
    pub sigma: f64,
    /// The border estimate of σ (also when σ was given).
    pub border: Option<BorderNoise>,
    pub flux_scale: f64,
    pub prior_name: String,
    /// The learned noise model used, in words; `None` for white Gaussian noise.
    pub noise_note: Option<String>,
    /// Reduced χ² of each sample.
    pub reduced_chi2_samples: Vec<f64>,
    pub residual_stats: ResidualStats,
    /// Sums of the data, of the prediction, and of the mean over the whole model grid.
    pub data_flux: f64,
    pub prediction_flux: f64,
    pub model_flux: f64,
    pub sampling_seconds: f64,
}

/// Reads a FITS image's first plane; an error naming the file otherwise.
fn read_plane(path: &Path, what: &str) -> Result<(FitsImage, usize, usize, Vec<f64>)> {
    if !path.exists() {
        input_error!("{what} {}: no such file", path.display());
    }
    let img = read_image(path).with_context(|| format!("reading the {what} {}", path.display()))?;
    let (ny, nx, data) = img.single_plane(what)?;
    Ok((img, ny, nx, data))
}

/// The binned image and PSF, and σ.
struct Inputs {
    img: FitsImage,
    ny: usize,
    nx: usize,
    pix: Vec<f64>,
    psf: Vec<f64>,
    psf_shape: [usize; 2],
    psf_sum: f64,
    sigma: f64,
    border: Option<BorderNoise>,
}

fn read_inputs(opts: &DenoiseOptions) -> Result<Inputs> {
    let (img, ny0, nx0, pix0) = read_plane(&opts.image, "image")?;
    let n_finite = pix0.iter().filter(|v| v.is_finite()).count();
    if n_finite == 0 {
        input_error!(
            "image {}: no finite pixel (all {} are NaN or infinite)",
            opts.image.display(),
            pix0.len()
        );
    }
    let (_, ky0, kx0, psf0) = read_plane(&opts.psf, "PSF")?;
    if let Some(i) = psf0.iter().position(|v| !v.is_finite()) {
        input_error!(
            "PSF {}: pixel ({}, {}) is {}; a PSF must be finite everywhere",
            opts.psf.display(),
            i / kx0,
            i % kx0,
            psf0[i]
        );
    }
    let psf_sum: f64 = psf0.iter().sum();
    let psf_abs: f64 = psf0.iter().map(|v| v.abs()).sum();
    if psf_sum <= 1e-12 * psf_abs || psf_abs == 0.0 {
        input_error!(
            "PSF {}: its pixels sum to {psf_sum:e}; a PSF needs a positive sum to be normalised",
            opts.psf.display()
        );
    }
    let b = opts.bin;
    if b == 0 || b > ny0 || b > nx0 {
        input_error!("--bin {b} must be at least 1 and at most the image size {ny0}×{nx0}");
    }
    let (ny, nx, pix) = bin_image(&pix0, ny0, nx0, b);
    let (psf, psf_shape) = bin_psf(&psf0, [ky0, kx0], b);
    let border = border_noise(&pix, ny, nx);
    let sigma = match opts.sigma {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => input_error!("--sigma must be positive, got {s}"),
        None => match border {
            Some(BorderNoise { sigma: s, .. }) if s > 0.0 => s,
            _ => input_error!(
                "image {}: cannot estimate σ from its border (too few finite pixels, or no \
                 scatter): give --sigma",
                opts.image.display()
            ),
        },
    };
    Ok(Inputs {
        img,
        ny,
        nx,
        pix,
        psf,
        psf_shape,
        psf_sum,
        sigma,
        border,
    })
}

/// Runs the `denoise` job; progress and stopping through `obs`.
pub fn denoise(opts: &DenoiseOptions, obs: &dyn Observer) -> Result<DenoiseResult> {
    let post = &opts.posterior;
    if post.n_samples == 0 || post.steps == 0 {
        input_error!("--samples and --steps must be at least 1");
    }
    let f = opts.upsample;
    if f == 0 {
        input_error!("--upsample must be at least 1");
    }
    // Inputs first, so that bad files fail before the prior loads.
    let inp = read_inputs(opts)?;
    let (ny, nx, [ky, kx]) = (inp.ny, inp.nx, inp.psf_shape);
    let model = match &opts.prior {
        Some(dir) => ScoreModel::load(dir, &opts.device)?,
        None => default_prior(&opts.device).context("loading the built-in prior")?,
    };
    let side = model.image_size();
    if side % f != 0 {
        input_error!("--upsample {f} must divide the prior's image size {side}");
    }
    let n_coarse = side / f;
    if 2 * opts.margin >= n_coarse {
        input_error!(
            "--margin {} leaves no data: the model covers {n_coarse} observed pixels",
            opts.margin
        );
    }
    let win = [
        (n_coarse - 2 * opts.margin).min(ny),
        (n_coarse - 2 * opts.margin).min(nx),
    ];
    let win_origin = [(n_coarse - win[0]) / 2, (n_coarse - win[1]) / 2];
    let cutout = cutout(opts, &inp, win)?;
    let cut0 = cutout.origin;

    // The operator on the model grid.
    let (psf_model, psf_shape) = match (opts.psf_sampling, f) {
        (PsfSampling::Observed, f) if f > 1 => refine_psf(&inp.psf, [ky, kx], f),
        _ => (inp.psf.clone(), [ky, kx]),
    };
    let make_hst = || {
        Hst::new(
            &psf_model,
            psf_shape,
            [side, side],
            &HstOptions {
                factor: f,
                shift: opts.shift,
                window: Some(DataWindow {
                    origin: win_origin,
                    shape: win,
                }),
            },
        )
        .with_context(|| format!("PSF {}", opts.psf.display()))
    };
    let hst = make_hst()?;
    let sigma = inp.sigma;
    let mut y = Vec::with_capacity(win[0] * win[1]);
    let mut sig = Vec::with_capacity(win[0] * win[1]);
    let mut weight = Vec::with_capacity(win[0] * win[1]);
    for wy in 0..win[0] {
        for wx in 0..win[1] {
            let v = inp.pix[(cut0[0] + wy) * nx + cut0[1] + wx];
            // A missing pixel carries no information: data 0 with an enormous σ.
            let ok = v.is_finite();
            y.push(if ok { v as f32 } else { 0.0 });
            sig.push(if ok {
                sigma as f32
            } else {
                1e12 * sigma as f32
            });
            weight.push(if ok { 1.0f32 } else { 0.0 });
        }
    }
    let n_used = weight.iter().filter(|&&w| w > 0.0).count();
    if n_used == 0 {
        input_error!(
            "image {}: every pixel of the {}×{} cutout at ({}, {}) is NaN",
            opts.image.display(),
            win[0],
            win[1],
            cut0[0],
            cut0[1]
        );
    }
    let flux_scale = match opts.flux_scale {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => input_error!("--flux-scale must be positive, got {s}"),
        None => {
            let p = nnls_peak(&hst, &y, &weight, 100) as f64;
            // NaN (no finite data) fails this too.
            if p.is_nan() || p <= 0.0 {
                input_error!(
                    "image {}: no positive signal in the cutout to set the flux scale: give \
                     --flux-scale",
                    opts.image.display()
                );
            }
            p
        }
    };

    let batches = post.n_samples.div_ceil(post.batch.max(1));
    obs.stage("sampling", (batches * post.steps) as u64);
    obs.status("sampling");
    let t_sample = Instant::now();
    // The convolved approximation keeps only diag(AAᵀ) = Γ, but neighbouring pixels see the
    // same PSF: ‖AAᵀ‖ ≈ f² while Γ ≈ Σ PSF² (~1/50 for HST), so the likelihood score would be
    // about 50× stiffer than the approximation assumes and the reverse SDE diverges. Each
    // datum's Γ becomes its row sum of AAᵀ, (AAᵀ1)_p (which bounds ‖AAᵀ‖, Gershgorin), as
    // `image` inflates Γ by cell multiplicity.
    let row_sums = {
        let mut back = vec![0.0f32; hst.image_len()];
        let mut rows = vec![0.0f32; hst.data_len()];
        hst.adjoint(&vec![1.0; hst.data_len()], &mut back);
        hst.forward(&back, &mut rows);
        rows
    };
    let scaled = |op: Hst| Scaled {
        inner: op,
        scale: flux_scale as f32,
    };
    let (samples, chi2, noise_note) = match &opts.noise_model {
        None => {
            let factors: Vec<f32> = row_sums
                .iter()
                .zip(hst.diag_aat())
                .map(|(r, g)| if g > 0.0 { (r / g).max(1.0) } else { 1.0 })
                .collect();
            let mut lik = GaussianLikelihood::new(scaled(hst), y.clone(), &sig)?;
            lik.inflate_gamma(&factors)?;
            let s = sample_posterior(&model, &lik, post, obs)?;
            let chi2: Vec<f64> = s.iter().map(|x| lik.reduced_chi2(x)).collect();
            (s, chi2, None)
        }
        Some(dir) => {
            if n_used < y.len() {
                input_error!(
                    "--noise-model: the cutout of {} has {} NaN pixels; the learned noise \
                     model needs every pixel",
                    opts.image.display(),
                    y.len() - n_used
                );
            }
            if post.alpha != 1.0 {
                input_error!("--alpha is not supported with --noise-model");
            }
            let nm = ScoreModel::load(dir, &opts.device)
                .with_context(|| format!("loading the noise model {}", dir.display()))?;
            let mut lik = LearnedNoiseLikelihood::new(scaled(hst), y.clone(), win, nm)
                .with_context(|| format!("noise model {}", dir.display()))?;
            // γ as the largest row sum of AAᵀ, for the reason given above.
            let gmax = row_sums.iter().fold(0.0f64, |m, &r| m.max(r as f64));
            lik.set_gamma(gmax * flux_scale * flux_scale)?;
            let s = sample_posterior(&model, &lik, post, obs)?;
            let chi2: Vec<f64> = s
                .iter()
                .map(|x| LikelihoodScore::reduced_chi2(&lik, x))
                .collect();
            let note = format!(
                "learned noise model {} (trained noise rms {:.4})",
                dir.display(),
                lik.noise_rms()
            );
            (s, chi2, Some(note))
        }
    };
    crate::observe::check(obs)?;
    let sampling_seconds = t_sample.elapsed().as_secs_f64();
    // The likelihood took the operator: a second one for the products.
    let hst = make_hst()?;
    let bad = samples
        .iter()
        .filter(|s| s.iter().any(|v| !v.is_finite()))
        .count();
    if bad > 0 {
        // Nothing to return: a NaN image is no result.
        input_error!(
            "{bad} of {} chains diverged (non-finite pixels); the likelihood is too stiff for \
             {} steps of {:?}: use more --steps, --method cla, or a smaller --alpha",
            samples.len(),
            post.steps,
            post.method
        );
    }

    // Products in physical units (image units per model pixel).
    let npix = side * side;
    let fs = flux_scale as f32;
    let phys: Vec<f32> = samples.iter().flatten().map(|v| v * fs).collect();
    let ns = samples.len() as f64;
    let (mut mean, mut sq) = (vec![0.0f64; npix], vec![0.0f64; npix]);
    for s in phys.chunks(npix) {
        for (k, &v) in s.iter().enumerate() {
            mean[k] += v as f64 / ns;
            sq[k] += (v as f64).powi(2) / ns;
        }
    }
    let std: Vec<f32> = mean
        .iter()
        .zip(&sq)
        .map(|(m, s)| (s - m * m).max(0.0).sqrt() as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let mut pred = vec![0.0f32; hst.data_len()];
    hst.forward(&mean, &mut pred);
    let resid: Vec<f32> = y
        .iter()
        .zip(&pred)
        .zip(&weight)
        .map(|((y, p), w)| if *w > 0.0 { y - p } else { f32::NAN })
        .collect();
    let rs: Vec<f32> = resid.iter().map(|r| r / sigma as f32).collect();
    let residual_stats = residual_stats(&rs);
    let data_flux: f64 = y.iter().map(|&v| v as f64).sum();
    let prediction_flux: f64 = pred.iter().map(|&v| v as f64).sum();
    let model_flux: f64 = mean.iter().map(|&v| v as f64).sum();

    let wcs = InputWcs::from_fits(&inp.img);
    let obs_scale_deg = opts.bin as f64 * wcs.as_ref().map_or(1.0 / 3600.0, InputWcs::scale_deg);
    let bunit = inp.img.get_str("BUNIT").unwrap_or("").trim().to_string();
    let prior_name = super::prior_name(opts.prior.as_deref());
    let (pk, _, _) = hst.kernel();
    let psf_norm: Vec<f64> = inp.psf.iter().map(|v| v / inp.psf_sum).collect();
    let (pcy, pcx) = psf_norm
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(a, b), (k, v)| {
            (a + v * (k / kx) as f64, b + v * (k % kx) as f64)
        });
    let psf = PsfInfo {
        shape: [ky, kx],
        sum: inp.psf_sum,
        centroid: [pcy, pcx],
        kernel_pixels: pk.len(),
    };
    let headers = Headers {
        opts,
        img: &inp.img,
        wcs: wcs.as_ref(),
        cutout: &cutout,
        win_origin,
        side,
        obs_scale_deg,
        bunit: &bunit,
        prior_name: &prior_name,
        n_samples: samples.len(),
        flux_scale,
        sigma,
    };
    let (model_header, data_header, residual_sigma_header) = headers.build();
    Ok(DenoiseResult {
        n_samples: samples.len(),
        samples: phys,
        side,
        mean,
        std,
        data: y,
        prediction: pred,
        residual: resid,
        residual_sigma: rs,
        model_header,
        data_header,
        residual_sigma_header,
        cutout,
        psf,
        pixel_asec: obs_scale_deg * 3600.0,
        wcs,
        bunit,
        sigma,
        border: inp.border,
        flux_scale,
        prior_name,
        noise_note,
        reduced_chi2_samples: chi2,
        residual_stats,
        data_flux,
        prediction_flux,
        model_flux,
        sampling_seconds,
    })
}

/// The cutout of `win` observed pixels: centred where `opts.centre` says, or on the peak of
/// the image filtered with its PSF (Aᵀy on the full image), and kept inside the image.
fn cutout(opts: &DenoiseOptions, inp: &Inputs, win: [usize; 2]) -> Result<Cutout> {
    let (ny, nx) = (inp.ny, inp.nx);
    let (cy, cx, centre_given) = match opts.centre {
        Some(c) => {
            if c[0] >= ny || c[1] >= nx {
                input_error!("--centre {},{} is outside the {ny}×{nx} image", c[0], c[1]);
            }
            (c[0], c[1], true)
        }
        None => {
            let finite0: Vec<f32> = inp
                .pix
                .iter()
                .map(|&v| if v.is_finite() { v as f32 } else { 0.0 })
                .collect();
            let full = Hst::new(&inp.psf, inp.psf_shape, [ny, nx], &HstOptions::default())
                .with_context(|| format!("PSF {}", opts.psf.display()))?;
            let mut mf = vec![0.0f32; ny * nx];
            full.adjoint(&finite0, &mut mf);
            let k = (0..mf.len()).fold(0, |b, k| if mf[k] > mf[b] { k } else { b });
            (k / nx, k % nx, false)
        }
    };
    Ok(Cutout {
        shape: win,
        origin: [
            cy.saturating_sub(win[0] / 2).min(ny - win[0]),
            cx.saturating_sub(win[1] / 2).min(nx - win[1]),
        ],
        centre: [cy, cx],
        centre_given,
        binned_shape: [ny, nx],
    })
}

fn residual_stats(rs: &[f32]) -> ResidualStats {
    let used: Vec<f64> = rs
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64)
        .collect();
    let nu = used.len() as f64;
    let mean = used.iter().sum::<f64>() / nu;
    ResidualStats {
        reduced_chi2: used.iter().map(|v| v * v).sum::<f64>() / nu,
        mean,
        std: (used.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nu).sqrt(),
        within_2sigma: used.iter().filter(|v| v.abs() <= 2.0).count() as f64 / nu,
        pixels: used.len(),
    }
}

/// What the output headers are made of.
struct Headers<'a> {
    opts: &'a DenoiseOptions,
    img: &'a FitsImage,
    wcs: Option<&'a InputWcs>,
    cutout: &'a Cutout,
    win_origin: [usize; 2],
    side: usize,
    /// Observed (binned) pixel, degrees.
    obs_scale_deg: f64,
    bunit: &'a str,
    prior_name: &'a str,
    n_samples: usize,
    flux_scale: f64,
    sigma: f64,
}

impl Headers<'_> {
    /// The model grid's, the data grid's and residual/σ's headers.
    ///
    /// The input's WCS evaluated at each output's reference pixel (nx/2, ny/2), pixel size from
    /// its CD/PC matrix. Over a cutout of a few arcsec the SIN projection we write about that
    /// point and the input's TAN projection about its own agree to far below 1e-6 pixel; a
    /// rotated input loses its rotation (said in the report).
    fn build(&self) -> (SkyHeader, SkyHeader, SkyHeader) {
        let (opts, img, cut0, win) = (self.opts, self.img, self.cutout.origin, self.cutout.shape);
        let (b, f) = (opts.bin, opts.upsample);
        let obs_scale_deg = self.obs_scale_deg;
        // Input pixel coordinate of a binned pixel coordinate (block centres).
        let unbin = |v: f64| b as f64 * v + (b as f64 - 1.0) / 2.0;
        let model_x0 = [
            cut0[0] as f64 - self.win_origin[0] as f64,
            cut0[1] as f64 - self.win_origin[1] as f64,
        ];
        // Input pixel coordinate of a model pixel's centre (the shift moves the model's light).
        let model_to_input =
            |i: usize, a: usize| model_x0[a] + (i as f64 + 0.5 + opts.shift[a]) / f as f64 - 0.5;
        let base_header = |ref_y: f64, ref_x: f64, cell_deg: f64| {
            let (ra, dec) = self
                .wcs
                .map_or((0.0, 0.0), |w| w.world(unbin(ref_x), unbin(ref_y)));
            SkyHeader {
                ra_deg: ra,
                dec_deg: dec,
                cell_x_deg: cell_deg,
                cell_y_deg: cell_deg,
                freq_hz: 0.0,
                bandwidth_hz: 1.0,
                bunit: self.bunit.to_string(),
                beam: None,
                date_obs: img.get_str("DATE-OBS").map(|s| s.trim().to_string()),
                telescope: img.get_str("TELESCOP").map(|s| s.trim().to_string()),
                object: img.get_str("OBJECT").map(|s| s.trim().to_string()),
                observer: None,
                extra: Vec::new(),
            }
        };
        let post = &opts.posterior;
        let common_extra = vec![
            (
                "PRIOR".to_string(),
                HeaderValue::Str(self.prior_name.to_string()),
            ),
            (
                "METHOD".into(),
                HeaderValue::Str(format!("{:?}", post.method).to_uppercase()),
            ),
            ("NSAMPLES".into(), HeaderValue::I64(self.n_samples as i64)),
            ("NSTEPS".into(), HeaderValue::I64(post.steps as i64)),
            ("SEED".into(), HeaderValue::I64(post.seed as i64)),
            ("FLUXSCL".into(), HeaderValue::F64(self.flux_scale)),
            ("NOISESIG".into(), HeaderValue::F64(self.sigma)),
            ("UPSAMPLE".into(), HeaderValue::I64(f as i64)),
            ("CUTY0".into(), HeaderValue::I64(cut0[0] as i64)),
            ("CUTX0".into(), HeaderValue::I64(cut0[1] as i64)),
            ("BINNING".into(), HeaderValue::I64(b as i64)),
            (
                "COMMENT".into(),
                HeaderValue::Str(format!(
                    "CUTY0/CUTX0: 0-based (binned) pixel of the first observed pixel used, {}",
                    opts.image
                        .file_name()
                        .map_or(String::new(), |s| s.to_string_lossy().into_owned())
                        .chars()
                        .filter(|c| (' '..='~').contains(c))
                        .collect::<String>()
                )),
            ),
        ];
        let side = self.side;
        let mut mh = base_header(
            model_to_input(side / 2, 0),
            model_to_input(side / 2, 1),
            obs_scale_deg / f as f64,
        );
        mh.extra = common_extra.clone();
        let mut dh = base_header(
            (cut0[0] + win[0] / 2) as f64,
            (cut0[1] + win[1] / 2) as f64,
            obs_scale_deg,
        );
        dh.extra = common_extra;
        let mut rh = dh.clone();
        rh.bunit = "SIGMA".into();
        (mh, dh, rh)
    }
}
