//! `interf-image denoise`: posterior deconvolution of an optical image (HST) with a known PSF
//! and a score-based prior. Samples, mean and std of the deconvolved image, the prediction
//! (mean through the operator), residuals and residual/σ as FITS, and an HTML/PNG report.
//!
//! Geometry: the prior works on a fixed n×n model grid (64² for the built-in prior). With
//! `--upsample f` a model pixel is 1/f of an observed pixel, so the model covers n/f observed
//! pixels; of those, a `--margin` on each side is left out of the data so that sources just
//! outside the cutout can spill their PSF wings into it without the model having to fake them
//! at its edge. The cutout is centred on the brightest source (the peak of the image filtered
//! with the PSF) unless `--centre` says otherwise.

use super::common::SamplingArgs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{check_outputs, output_path, set_threads};
use super::prior::{device, DeviceArg};
use crate::io::{read_image, write_cube, write_image, CubeAxis, FitsImage, HeaderValue, SkyHeader};
use crate::likelihood::{GaussianLikelihood, LearnedNoiseLikelihood, LikelihoodScore};
use crate::operator::{DataWindow, ForwardOperator, Hst, HstOptions, Scaled};
use crate::prior::{default_prior, ScoreModel};
use crate::report::denoise::{write_denoise_report, DenoiseReport};
use crate::sample::posterior::sample_posterior;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsfSampling {
    /// The PSF file is sampled on the observed pixels (the usual effective PSF). With
    /// `--upsample f > 1` it is interpolated bilinearly onto the model grid; the block sum then
    /// integrates over the pixel a second time (an effective PSF already includes the pixel),
    /// a mild extra blur of one observed pixel.
    Observed,
    /// The PSF file is sampled on the model grid (1/f of an observed pixel, e.g. an
    /// oversampled TinyTim PSF): used as it is.
    Model,
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
    #[arg(long, value_enum, default_value_t = PsfSampling::Observed)]
    pub psf_sampling: PsfSampling,
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

/// Celestial WCS of the input (TAN or SIN, CD or PC·CDELT), enough to place the cutout.
struct InputWcs {
    crpix: [f64; 2],
    crval: [f64; 2],
    /// Degrees per pixel: `[[m11, m12], [m21, m22]]`.
    m: [[f64; 2]; 2],
    tan: bool,
}

impl InputWcs {
    fn from_fits(img: &FitsImage) -> Option<InputWcs> {
        let c1 = img.get_str("CTYPE1")?.trim().to_ascii_uppercase();
        let c2 = img.get_str("CTYPE2")?.trim().to_ascii_uppercase();
        if !(c1.starts_with("RA--") && c2.starts_with("DEC-")) {
            return None;
        }
        let tan = c1.ends_with("TAN");
        if !tan && !c1.ends_with("SIN") {
            return None;
        }
        let g = |k: &str| img.get_f64(k);
        let m = if g("CD1_1").is_some() || g("CD2_2").is_some() {
            let cd = |k: &str| g(k).unwrap_or(0.0);
            [[cd("CD1_1"), cd("CD1_2")], [cd("CD2_1"), cd("CD2_2")]]
        } else {
            let (d1, d2) = (g("CDELT1")?, g("CDELT2")?);
            let pc = |k: &str, d: f64| g(k).unwrap_or(d);
            [
                [pc("PC1_1", 1.0) * d1, pc("PC1_2", 0.0) * d1],
                [pc("PC2_1", 0.0) * d2, pc("PC2_2", 1.0) * d2],
            ]
        };
        let w = InputWcs {
            crpix: [g("CRPIX1")?, g("CRPIX2")?],
            crval: [g("CRVAL1")?, g("CRVAL2")?],
            m,
            tan,
        };
        (w.scale_deg() > 0.0 && w.scale_deg().is_finite()).then_some(w)
    }

    /// Pixel size, degrees (square root of the pixel area).
    fn scale_deg(&self) -> f64 {
        (self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0])
            .abs()
            .sqrt()
    }

    /// Rotation of the pixel axes against (−RA, Dec), degrees.
    fn rotation_deg(&self) -> f64 {
        self.m[1][0].atan2(self.m[1][1]).to_degrees()
    }

    /// (RA, Dec) in degrees of a 0-based pixel position (x along FITS axis 1).
    fn world(&self, x: f64, y: f64) -> (f64, f64) {
        let (p1, p2) = (x + 1.0 - self.crpix[0], y + 1.0 - self.crpix[1]);
        let xi = (self.m[0][0] * p1 + self.m[0][1] * p2).to_radians();
        let eta = (self.m[1][0] * p1 + self.m[1][1] * p2).to_radians();
        let (sd0, cd0) = self.crval[1].to_radians().sin_cos();
        let (dra, dec) = if self.tan {
            let den = cd0 - eta * sd0;
            (xi.atan2(den), (eta * cd0 + sd0).atan2(xi.hypot(den)))
        } else {
            let n = (1.0 - xi * xi - eta * eta).max(0.0).sqrt();
            (
                xi.atan2(n * cd0 - eta * sd0),
                (eta * cd0 + n * sd0).clamp(-1.0, 1.0).asin(),
            )
        };
        (
            (self.crval[0] + dra.to_degrees()).rem_euclid(360.0),
            dec.to_degrees(),
        )
    }
}

/// Median and 1.4826 × MAD of the finite values.
fn median_mad(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let med = v[v.len() / 2];
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    (med, 1.4826 * dev[dev.len() / 2])
}

/// Robust σ from the outer border of the image: `(median, σ, pixels used, strip width)`.
fn border_noise(img: &[f64], ny: usize, nx: usize) -> Option<(f64, f64, usize, usize)> {
    let w = (ny.min(nx) / 10).max(4).min(ny.min(nx) / 2).max(1);
    let mut v: Vec<f64> = (0..ny * nx)
        .filter(|&k| {
            let (y, x) = (k / nx, k % nx);
            y < w || x < w || y + w >= ny || x + w >= nx
        })
        .map(|k| img[k])
        .filter(|v| v.is_finite())
        .collect();
    if v.len() < 16 {
        return None;
    }
    let n = v.len();
    let (med, sig) = median_mad(&mut v);
    Some((med, sig, n, w))
}

/// Sums of `b×b` blocks (the last partial row/column of blocks dropped); NaN propagates.
fn bin_image(v: &[f64], ny: usize, nx: usize, b: usize) -> (usize, usize, Vec<f64>) {
    if b == 1 {
        return (ny, nx, v.to_vec());
    }
    let (my, mx) = (ny / b, nx / b);
    let mut out = vec![0.0; my * mx];
    for y in 0..my * b {
        for x in 0..mx * b {
            out[(y / b) * mx + x / b] += v[y * nx + x];
        }
    }
    (my, mx, out)
}

/// The PSF of `b×b`-binned data: block sums with the PSF's centre pixel `(k − 1)/2` in the
/// middle of its block (exactly for odd `b`; half a pixel off for even `b`), zero-padded so
/// that the centre block is the binned PSF's own centre `(k' − 1)/2`.
fn bin_psf(psf: &[f64], [ky, kx]: [usize; 2], b: usize) -> (Vec<f64>, [usize; 2]) {
    if b == 1 {
        return (psf.to_vec(), [ky, kx]);
    }
    // Per axis: block J covers [s0 + J·b, s0 + (J+1)·b); the centre block is jc; the output
    // index of block J is J + half − jc.
    let layout = |k: usize| {
        let s = (k as isize - 1) / 2 - (b as isize - 1) / 2;
        let mut s0 = s.rem_euclid(b as isize);
        if s0 > 0 {
            s0 -= b as isize;
        }
        let jc = ((s - s0) / b as isize) as usize;
        let nb = (k as isize - s0 + b as isize - 1) as usize / b;
        let half = jc.max(nb - 1 - jc);
        (s0, jc, half)
    };
    let (sy, jcy, hy) = layout(ky);
    let (sx, jcx, hx) = layout(kx);
    let (oy, ox) = (2 * hy + 1, 2 * hx + 1);
    let mut out = vec![0.0; oy * ox];
    for y in 0..ky {
        let jy = (y as isize - sy) as usize / b + hy - jcy;
        for x in 0..kx {
            let jx = (x as isize - sx) as usize / b + hx - jcx;
            out[jy * ox + jx] += psf[y * kx + x];
        }
    }
    (out, [oy, ox])
}

/// Bilinear resampling of a PSF onto a grid `f` times finer: fine index `i` samples the
/// coarse coordinate `i/f`, so the middle of an odd PSF stays on a pixel.
fn refine_psf(psf: &[f64], [ky, kx]: [usize; 2], f: usize) -> (Vec<f64>, [usize; 2]) {
    let (fy, fx) = (f * (ky - 1) + 1, f * (kx - 1) + 1);
    let mut out = vec![0.0; fy * fx];
    for iy in 0..fy {
        let (y0, ty) = (iy / f, (iy % f) as f64 / f as f64);
        for ix in 0..fx {
            let (x0, tx) = (ix / f, (ix % f) as f64 / f as f64);
            let at = |y: usize, x: usize| {
                if y < ky && x < kx {
                    psf[y * kx + x]
                } else {
                    0.0
                }
            };
            out[iy * fx + ix] = (1.0 - ty) * (1.0 - tx) * at(y0, x0)
                + ty * (1.0 - tx) * at(y0 + 1, x0)
                + (1.0 - ty) * tx * at(y0, x0 + 1)
                + ty * tx * at(y0 + 1, x0 + 1);
        }
    }
    (out, [fy, fx])
}

/// Peak of a quick non-negative deconvolution: projected Landweber from zero, stopped early
/// (the iteration count is the regularisation). Masked data have weight 0.
fn nnls_peak(op: &Hst, y: &[f32], weight: &[f32], iters: usize) -> f32 {
    let (k, _, _) = op.kernel();
    let l1: f64 = k.iter().map(|v| v.abs()).sum();
    // ‖A‖² ≤ (Σ|K|)² f²: a step below 2/‖A‖² converges.
    let tau = (1.0 / (l1 * l1 * (op.factor() * op.factor()) as f64)) as f32;
    let mut x = vec![0.0f32; op.image_len()];
    let mut r = vec![0.0f32; op.data_len()];
    let mut g = vec![0.0f32; op.image_len()];
    for _ in 0..iters {
        op.forward(&x, &mut r);
        r.iter_mut()
            .zip(y)
            .zip(weight)
            .for_each(|((r, y), w)| *r = (y - *r) * w);
        op.adjoint(&r, &mut g);
        x.iter_mut()
            .zip(&g)
            .for_each(|(x, g)| *x = (*x + tau * g).max(0.0));
    }
    x.into_iter().fold(0.0, f32::max)
}

/// Reads a FITS image's first plane; an error naming the file otherwise.
fn read_plane(path: &Path, what: &str) -> anyhow::Result<(FitsImage, usize, usize, Vec<f64>)> {
    if !path.exists() {
        bail!("{what} {}: no such file", path.display());
    }
    let img = read_image(path).with_context(|| format!("reading the {what} {}", path.display()))?;
    let (ny, nx, data) = super::common::single_plane(&img, what)?;
    Ok((img, ny, nx, data))
}

pub fn run(args: DenoiseArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.threads)?;
    if args.samples == 0 || args.sampling.steps == 0 {
        bail!("--samples and --steps must be at least 1");
    }
    let f = args.upsample;
    if f == 0 {
        bail!("--upsample must be at least 1");
    }

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

    // Inputs first, so that bad files fail before the prior loads.
    let (img, ny0, nx0, pix0) = read_plane(&args.image, "image")?;
    let n_finite = pix0.iter().filter(|v| v.is_finite()).count();
    if n_finite == 0 {
        bail!(
            "image {}: no finite pixel (all {} are NaN or infinite)",
            args.image.display(),
            pix0.len()
        );
    }
    let (_, ky0, kx0, psf0) = read_plane(&args.psf, "PSF")?;
    if let Some(i) = psf0.iter().position(|v| !v.is_finite()) {
        bail!(
            "PSF {}: pixel ({}, {}) is {}; a PSF must be finite everywhere",
            args.psf.display(),
            i / kx0,
            i % kx0,
            psf0[i]
        );
    }
    let psf_sum: f64 = psf0.iter().sum();
    let psf_abs: f64 = psf0.iter().map(|v| v.abs()).sum();
    if psf_sum <= 1e-12 * psf_abs || psf_abs == 0.0 {
        bail!(
            "PSF {}: its pixels sum to {psf_sum:e}; a PSF needs a positive sum to be normalised",
            args.psf.display()
        );
    }
    let b = args.bin;
    if b == 0 || b > ny0 || b > nx0 {
        bail!("--bin {b} must be at least 1 and at most the image size {ny0}×{nx0}");
    }
    let (ny, nx, pix) = bin_image(&pix0, ny0, nx0, b);
    let (psf_raw, [ky, kx]) = bin_psf(&psf0, [ky0, kx0], b);
    let sigma = match args.sigma {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => bail!("--sigma must be positive, got {s}"),
        None => match border_noise(&pix, ny, nx) {
            Some((_, s, _, _)) if s > 0.0 => s,
            _ => bail!(
                "image {}: cannot estimate σ from its border (too few finite pixels, or no \
                 scatter): give --sigma",
                args.image.display()
            ),
        },
    };
    let border = border_noise(&pix, ny, nx);

    let dev = device(args.device)?;
    let model = match &args.prior {
        Some(dir) => ScoreModel::load(dir, &dev)?,
        None => default_prior(&dev).context("loading the built-in prior")?,
    };
    let side = model.image_size();
    if side % f != 0 {
        bail!("--upsample {f} must divide the prior's image size {side}");
    }
    let n_coarse = side / f;
    if 2 * args.margin >= n_coarse {
        bail!(
            "--margin {} leaves no data: the model covers {n_coarse} observed pixels",
            args.margin
        );
    }
    let win = [
        (n_coarse - 2 * args.margin).min(ny),
        (n_coarse - 2 * args.margin).min(nx),
    ];
    let win_origin = [(n_coarse - win[0]) / 2, (n_coarse - win[1]) / 2];

    // Centre: given, or the peak of the image filtered with its PSF (Aᵀy on the full image).
    let finite0: Vec<f32> = pix
        .iter()
        .map(|&v| if v.is_finite() { v as f32 } else { 0.0 })
        .collect();
    let (cy, cx, centre_how) = match &args.centre {
        Some(c) => {
            if c[0] >= ny || c[1] >= nx {
                bail!("--centre {},{} is outside the {ny}×{nx} image", c[0], c[1]);
            }
            (c[0], c[1], "given".to_string())
        }
        None => {
            let full = Hst::new(&psf_raw, [ky, kx], [ny, nx], &HstOptions::default())
                .with_context(|| format!("PSF {}", args.psf.display()))?;
            let mut mf = vec![0.0f32; ny * nx];
            full.adjoint(&finite0, &mut mf);
            let k = (0..mf.len()).fold(0, |b, k| if mf[k] > mf[b] { k } else { b });
            (k / nx, k % nx, "peak of the PSF-filtered image".to_string())
        }
    };
    let cut0 = [
        cy.saturating_sub(win[0] / 2).min(ny - win[0]),
        cx.saturating_sub(win[1] / 2).min(nx - win[1]),
    ];

    // The operator on the model grid.
    let (psf_model, psf_shape) = match (args.psf_sampling, f) {
        (PsfSampling::Observed, f) if f > 1 => refine_psf(&psf_raw, [ky, kx], f),
        _ => (psf_raw.clone(), [ky, kx]),
    };
    let shift = args.shift.as_ref().map_or([0.0, 0.0], |s| [s[0], s[1]]);
    let make_hst = || {
        Hst::new(
            &psf_model,
            psf_shape,
            [side, side],
            &HstOptions {
                factor: f,
                shift,
                window: Some(DataWindow {
                    origin: win_origin,
                    shape: win,
                }),
            },
        )
        .with_context(|| format!("PSF {}", args.psf.display()))
    };
    let hst = make_hst()?;
    let mut y = Vec::with_capacity(win[0] * win[1]);
    let mut sig = Vec::with_capacity(win[0] * win[1]);
    let mut weight = Vec::with_capacity(win[0] * win[1]);
    for wy in 0..win[0] {
        for wx in 0..win[1] {
            let v = pix[(cut0[0] + wy) * nx + cut0[1] + wx];
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
        bail!(
            "image {}: every pixel of the {}×{} cutout at ({}, {}) is NaN",
            args.image.display(),
            win[0],
            win[1],
            cut0[0],
            cut0[1]
        );
    }
    let flux_scale = match args.flux_scale {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => bail!("--flux-scale must be positive, got {s}"),
        None => {
            let p = nnls_peak(&hst, &y, &weight, 100) as f64;
            // NaN (no finite data) fails this too.
            if p.is_nan() || p <= 0.0 {
                bail!(
                    "image {}: no positive signal in the cutout to set the flux scale: give \
                     --flux-scale",
                    args.image.display()
                );
            }
            p
        }
    };

    let opts = args.sampling.options(args.samples);
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
    let (samples, chi2, noise_note, hst) = match &args.noise_model {
        None => {
            let factors: Vec<f32> = row_sums
                .iter()
                .zip(hst.diag_aat())
                .map(|(r, g)| if g > 0.0 { (r / g).max(1.0) } else { 1.0 })
                .collect();
            let mut lik = GaussianLikelihood::new(scaled(hst), y.clone(), &sig)?;
            lik.inflate_gamma(&factors)?;
            let s = sample_posterior(&model, &lik, &opts, &super::interrupt::Terminal::bar(&bar))
                .map_err(super::interrupt::interrupted_or)?;
            let chi2: Vec<f64> = s.iter().map(|x| lik.reduced_chi2(x)).collect();
            (s, chi2, None, make_hst()?)
        }
        Some(dir) => {
            if n_used < y.len() {
                bail!(
                    "--noise-model: the cutout of {} has {} NaN pixels; the learned noise \
                     model needs every pixel",
                    args.image.display(),
                    y.len() - n_used
                );
            }
            if args.sampling.alpha != 1.0 {
                bail!("--alpha is not supported with --noise-model");
            }
            let nm = ScoreModel::load(dir, &dev)
                .with_context(|| format!("loading the noise model {}", dir.display()))?;
            let mut lik = LearnedNoiseLikelihood::new(scaled(hst), y.clone(), win, nm)
                .with_context(|| format!("noise model {}", dir.display()))?;
            // γ as the largest row sum of AAᵀ, for the reason given above.
            let gmax = row_sums.iter().fold(0.0f64, |m, &r| m.max(r as f64));
            lik.set_gamma(gmax * flux_scale * flux_scale)?;
            let s = sample_posterior(&model, &lik, &opts, &super::interrupt::Terminal::bar(&bar))
                .map_err(super::interrupt::interrupted_or)?;
            let chi2: Vec<f64> = s
                .iter()
                .map(|x| LikelihoodScore::reduced_chi2(&lik, x))
                .collect();
            let note = format!(
                "learned noise model {} (trained noise rms {:.4})",
                dir.display(),
                lik.noise_rms()
            );
            (s, chi2, Some(note), make_hst()?)
        }
    };
    bar.finish_and_clear();
    super::interrupt::check()?;
    let t_sample = t_sample.elapsed();
    let hst = &hst;
    let bad = samples
        .iter()
        .filter(|s| s.iter().any(|v| !v.is_finite()))
        .count();
    if bad > 0 {
        // Nothing written: a NaN image is no result.
        bail!(
            "{bad} of {} chains diverged (non-finite pixels); the likelihood is too stiff for \
             {} steps of {:?}: use more --steps, --method cla, or a smaller --alpha",
            samples.len(),
            args.sampling.steps,
            opts.method
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
    let used: Vec<f64> = rs
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64)
        .collect();
    let nu = used.len() as f64;
    let rs_mean = used.iter().sum::<f64>() / nu;
    let rs_std = (used.iter().map(|v| (v - rs_mean).powi(2)).sum::<f64>() / nu).sqrt();
    let chi2_mean = used.iter().map(|v| v * v).sum::<f64>() / nu;
    let within2 = used.iter().filter(|v| v.abs() <= 2.0).count() as f64 / nu;
    let data_flux: f64 = y.iter().map(|&v| v as f64).sum();
    let pred_flux: f64 = pred.iter().map(|&v| v as f64).sum();
    let model_flux: f64 = mean.iter().map(|&v| v as f64).sum();

    // Headers: the input's WCS evaluated at each output's reference pixel (nx/2, ny/2), pixel
    // size from its CD/PC matrix. Over a cutout of a few arcsec the SIN projection we write
    // about that point and the input's TAN projection about its own agree to far below 1e-6
    // pixel; a rotated input loses its rotation (said in the report).
    let wcs = InputWcs::from_fits(&img);
    let obs_scale_deg = b as f64 * wcs.as_ref().map_or(1.0 / 3600.0, InputWcs::scale_deg);
    // Input pixel coordinate of a binned pixel coordinate (block centres).
    let unbin = |v: f64| b as f64 * v + (b as f64 - 1.0) / 2.0;
    let model_x0 = [
        cut0[0] as f64 - win_origin[0] as f64,
        cut0[1] as f64 - win_origin[1] as f64,
    ];
    // Input pixel coordinate of a model pixel's centre (the shift moves the model's light).
    let model_to_input =
        |i: usize, a: usize| model_x0[a] + (i as f64 + 0.5 + shift[a]) / f as f64 - 0.5;
    let bunit = img.get_str("BUNIT").unwrap_or("").trim().to_string();
    let base_header = |ref_y: f64, ref_x: f64, cell_deg: f64| {
        let (ra, dec) = wcs
            .as_ref()
            .map_or((0.0, 0.0), |w| w.world(unbin(ref_x), unbin(ref_y)));
        SkyHeader {
            ra_deg: ra,
            dec_deg: dec,
            cell_x_deg: cell_deg,
            cell_y_deg: cell_deg,
            freq_hz: 0.0,
            bandwidth_hz: 1.0,
            bunit: bunit.clone(),
            beam: None,
            date_obs: img.get_str("DATE-OBS").map(|s| s.trim().to_string()),
            telescope: img.get_str("TELESCOP").map(|s| s.trim().to_string()),
            object: img.get_str("OBJECT").map(|s| s.trim().to_string()),
            observer: None,
            extra: Vec::new(),
        }
    };
    let prior_name = args.prior.as_ref().map_or_else(
        || "built-in (MiraBest 64)".to_string(),
        |p| p.display().to_string(),
    );
    let common_extra = vec![
        ("PRIOR".to_string(), HeaderValue::Str(prior_name.clone())),
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
        ("FLUXSCL".into(), HeaderValue::F64(flux_scale)),
        ("NOISESIG".into(), HeaderValue::F64(sigma)),
        ("UPSAMPLE".into(), HeaderValue::I64(f as i64)),
        ("CUTY0".into(), HeaderValue::I64(cut0[0] as i64)),
        ("CUTX0".into(), HeaderValue::I64(cut0[1] as i64)),
        ("BINNING".into(), HeaderValue::I64(b as i64)),
        (
            "COMMENT".into(),
            HeaderValue::Str(format!(
                "CUTY0/CUTX0: 0-based (binned) pixel of the first observed pixel used, {}",
                args.image
                    .file_name()
                    .map_or(String::new(), |s| s.to_string_lossy().into_owned())
                    .chars()
                    .filter(|c| (' '..='~').contains(c))
                    .collect::<String>()
            )),
        ),
    ];
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

    let name = &args.name;
    let p = |s: &str| output_path(name, s, &inputs);
    write_cube(
        &p("samples")?,
        &phys,
        samples.len(),
        side,
        side,
        &mh,
        CubeAxis::Sample,
    )?;
    write_image(&p("mean")?, &mean, side, side, &mh)?;
    write_image(&p("std")?, &std, side, side, &mh)?;
    write_image(&p("data")?, &y, win[0], win[1], &dh)?;
    write_image(&p("prediction")?, &pred, win[0], win[1], &dh)?;
    write_image(&p("residual")?, &resid, win[0], win[1], &dh)?;
    write_image(&p("residual-sigma")?, &rs, win[0], win[1], &rh)?;

    let asec = obs_scale_deg * 3600.0;
    let (pk, _, _) = hst.kernel();
    let psf_norm: Vec<f64> = psf_raw.iter().map(|v| v / psf_sum).collect();
    let (pcy, pcx) = psf_norm
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(a, b), (k, v)| {
            (a + v * (k / kx) as f64, b + v * (k % kx) as f64)
        });
    let unit_label = if bunit.is_empty() {
        "image units".to_string()
    } else {
        bunit.clone()
    };
    let mut sorted = chi2.clone();
    sorted.sort_by(f64::total_cmp);
    let summary = vec![
        ("Image".into(), format!("{} ({ny}×{nx})", args.image.display())),
        (
            "PSF".into(),
            format!(
                "{} ({ky}×{kx}, sum {psf_sum:.6} → 1; centre pixel ({}, {}); centroid at ({pcy:.2}, {pcx:.2}); {} kernel pixels used)",
                args.psf.display(),
                (ky - 1) / 2,
                (kx - 1) / 2,
                pk.len()
            ),
        ),
        (
            "Cutout".into(),
            format!(
                "{}×{} observed pixels from ({}, {}) (0-based iy, ix{}), centred on ({cy}, {cx}): {centre_how}",
                win[0], win[1], cut0[0], cut0[1],
                if b > 1 { format!(", after binning the input {b}×{b}: {ny}×{nx}") } else { String::new() }
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
            match &wcs {
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
            match (args.sigma, border) {
                (Some(s), _) => format!("{s} (given)"),
                (None, Some((med, s, n, w))) => format!(
                    "{s:.4} = 1.4826 × MAD of {n} pixels in the outer {w}-pixel border (median {med:.4}; no background subtracted)"
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
        ("Prior".into(), prior_name.clone()),
        (
            "Likelihood".into(),
            noise_note.clone().unwrap_or_else(|| {
                "Gaussian, white, σ per pixel; convolved approximation with Γ = row sums of AAᵀ"
                    .into()
            }),
        ),
        (
            "Sampling".into(),
            format!(
                "{} samples, {} steps, {:?}, α = {}, seed {}, {:.1} s",
                samples.len(),
                args.sampling.steps,
                opts.method,
                args.sampling.alpha,
                args.sampling.seed,
                t_sample.as_secs_f64()
            ),
        ),
        (
            "Residual/σ of the mean".into(),
            format!(
                "reduced χ² {chi2_mean:.3}; mean {rs_mean:.3}, std {rs_std:.3}; {:.1} % within ±2σ (N(0,1): 95.4 %); {} pixels",
                100.0 * within2,
                used.len()
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
                "data {data_flux:.1}, prediction {pred_flux:.1}, model (all of the grid) {model_flux:.1} {unit_label}"
            ),
        ),
    ];
    let report = DenoiseReport {
        title: format!(
            "{} — PSF deconvolution posterior ({} samples, {:?})",
            args.image.file_name().map_or_else(
                || args.image.display().to_string(),
                |s| s.to_string_lossy().into_owned()
            ),
            samples.len(),
            opts.method
        ),
        unit: &unit_label,
        model_shape: [side, side],
        model_pixel_asec: asec / f as f64,
        data_shape: win,
        data_pixel_asec: asec,
        data: &y,
        prediction: &pred,
        mean: &mean,
        std: &std,
        samples: &phys,
        n_samples: samples.len(),
        resid_sigma: &rs,
        summary,
    };
    let (html, pngs) = write_denoise_report(name, &report)?;
    println!(
        "denoise: {}×{} cutout at ({}, {}) of {}, σ = {sigma:.4}, flux scale {flux_scale:.4}",
        win[0],
        win[1],
        cut0[0],
        cut0[1],
        args.image.display()
    );
    println!(
        "  residual/σ of the mean: reduced χ² {chi2_mean:.3}, mean {rs_mean:.3}, std {rs_std:.3}, {:.1} % within ±2σ",
        100.0 * within2
    );
    println!(
        "  wrote {name}-samples.fits, -mean, -std, -data, -prediction, -residual, -residual-sigma, {} and {} PNGs in {:.1} s (sampling {:.1} s)",
        html.display(),
        pngs.len(),
        start.elapsed().as_secs_f64(),
        t_sample.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refined_psf_keeps_odd_centre_and_values() {
        let k: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let (r, [fy, fx]) = refine_psf(&k, [3, 3], 2);
        assert_eq!([fy, fx], [5, 5]);
        // Every coarse sample lands on a fine pixel; midpoints are averages.
        assert_eq!(r[2 * 5 + 2], 4.0);
        assert_eq!(r[4 * 5 + 4], 8.0);
        assert_eq!(r[1], 0.5); // row 0, column 1
        assert_eq!(r[5 + 1], 2.0); // row 1, column 1
    }

    #[test]
    fn binned_psf_keeps_its_centre_and_flux() {
        // 7×5 PSF with a marked centre (3, 2); bin 3: centre block covers rows 2..5, cols 1..4.
        let mut k = vec![0.01; 35];
        k[3 * 5 + 2] = 1.0;
        k[0] = 0.5; // corner (0, 0) lands in the block above-left of the centre
        let (bk, [by, bx]) = bin_psf(&k, [7, 5], 3);
        assert_eq!((by % 2, bx % 2), (1, 1));
        let (cy, cx) = ((by - 1) / 2, (bx - 1) / 2);
        let total: f64 = k.iter().sum();
        assert!((bk.iter().sum::<f64>() - total).abs() < 1e-12);
        assert!((bk[cy * bx + cx] - (1.0 + 8.0 * 0.01)).abs() < 1e-12);
        // Rows 0..2 and col 0 form the block at (cy − 1, cx − 1).
        assert!((bk[(cy - 1) * bx + cx - 1] - (0.5 + 0.01)).abs() < 1e-12);
        let (ny, nx, v) = bin_image(&(0..20).map(f64::from).collect::<Vec<_>>(), 4, 5, 2);
        assert_eq!((ny, nx), (2, 2));
        assert_eq!(v, vec![12.0, 20.0, 52.0, 60.0]);
    }

    #[test]
    fn border_noise_of_gaussian_noise() {
        use rand::{rngs::StdRng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = StdRng::seed_from_u64(3);
        let n = Normal::new(2.0, 0.5).unwrap();
        let mut img: Vec<f64> = (0..100 * 100).map(|_| n.sample(&mut rng)).collect();
        // A bright source in the middle does not touch the border estimate.
        for y in 30..70 {
            for x in 30..70 {
                img[y * 100 + x] += 100.0;
            }
        }
        let (med, s, count, w) = border_noise(&img, 100, 100).unwrap();
        assert_eq!(w, 10);
        assert_eq!(count, 100 * 100 - 80 * 80);
        assert!((med - 2.0).abs() < 0.03, "{med}");
        assert!((s - 0.5).abs() < 0.03, "{s}");
    }

    #[test]
    fn tan_wcs_matches_the_reference_point_and_scale() {
        let w = InputWcs {
            crpix: [100.0, 50.0],
            crval: [150.0, 2.2],
            m: [[-1e-5, 0.0], [0.0, 1e-5]],
            tan: true,
        };
        let (ra, dec) = w.world(99.0, 49.0);
        assert!((ra - 150.0).abs() < 1e-12 && (dec - 2.2).abs() < 1e-12);
        // One pixel up is 1e-5 deg north; one pixel right is 1e-5 deg west (RA smaller).
        let (_, d2) = w.world(99.0, 50.0);
        assert!((d2 - 2.2 - 1e-5).abs() < 1e-11);
        let (r2, _) = w.world(100.0, 49.0);
        assert!(((150.0 - r2) * 2.2f64.to_radians().cos() - 1e-5).abs() < 1e-11);
        assert!((w.scale_deg() - 1e-5).abs() < 1e-18);
    }
}
