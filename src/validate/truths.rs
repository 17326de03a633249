//! Truth images for a calibration run: drawn from the prior itself, or read from a file
//! (`.npy` stack, FITS cube, or a FITS file with one image per HDU such as the COSMOS/GalSim
//! galaxy stamps) and brought to the prior's size and units.

use std::path::Path;

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::ValidateError;
use crate::io::FitsError;
use crate::observe::Observer;
use crate::prior::data::{center_crop, read_images, resize, ImageStack, Resample};
use crate::prior::sde::Sde;
use crate::sample::posterior::PriorScore;
use crate::sample::{euler_maruyama, gaussian_like};

/// `n` unconditional samples of the prior (Euler–Maruyama, Tweedie-denoised at the last time,
/// as `interf-image prior sample --denoise` draws them), in the prior's normalised units.
pub fn from_prior<P: PriorScore + ?Sized>(
    model: &P,
    n: usize,
    steps: usize,
    batch: usize,
    seed: u64,
    obs: &dyn Observer,
) -> Result<Vec<Vec<f32>>, ValidateError> {
    let side = model.image_size();
    let sde = model.sde();
    let t_eps = model.t_eps();
    let mut rng = StdRng::seed_from_u64(seed);
    let score = |x: &Tensor, t: f64| model.score(x, t);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let b = batch.max(1).min(n - out.len());
        let zeros = Tensor::zeros((b, 1, side, side), DType::F32, model.device())?;
        let x0 = gaussian_like(&zeros, &mut rng)?.affine(sde.prior_std(), 0.0)?;
        let x = euler_maruyama(&score, sde, &x0, steps, t_eps, &mut rng, obs)?;
        let x = model.denoise(&x, t_eps)?;
        let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
        out.extend(flat.chunks(side * side).map(|c| c.to_vec()));
    }
    Ok(out)
}

/// How file images are brought to the prior's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruthScaling {
    /// Negatives clipped to 0, each image divided by its own peak: what the prior's training
    /// images went through (`PerImagePeak`), so truths have the prior's peak of 1.
    Peak,
    /// Values taken as Jy/pixel and divided by the flux scale.
    Physical,
}

/// Reads truth images and brings each to `side × side` (central square crop, area-averaged
/// resize) and to the prior's units (see [`TruthScaling`]; `flux_scale` Jy/pixel = 1).
///
/// FITS files are read as one image or cube in the first image HDU, or, when the file holds
/// several image HDUs (each its own size), one image per HDU.
pub fn from_file(
    path: &Path,
    side: usize,
    scaling: TruthScaling,
    flux_scale: f64,
) -> Result<Vec<Vec<f32>>, ValidateError> {
    let mut out = read_resized(path, side)?;
    for (k, img) in out.iter_mut().enumerate() {
        to_prior_units(img, path, k, scaling, flux_scale)?;
    }
    Ok(out)
}

/// The images of a truth file, each cropped and resized to `side × side` but not yet scaled:
/// a caller that uses only some of them (a split) scales those with [`to_prior_units`], so an
/// empty image it does not use (MiraBest has six) is no error.
pub fn read_resized(path: &Path, side: usize) -> Result<Vec<Vec<f32>>, ValidateError> {
    let bad = |msg: String| ValidateError::Input(format!("{}: {msg}", path.display()));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: Vec<(usize, usize, Vec<f32>)> = match ext.as_str() {
        "fits" | "fit" | "fts" => {
            let hdus = read_fits_hdus(path).map_err(|e| ValidateError::Input(e.to_string()))?;
            if hdus.len() > 1 {
                hdus
            } else {
                stack_images(&read_images(path).map_err(|e| bad(e.to_string()))?)
            }
        }
        _ => stack_images(&read_images(path).map_err(|e| ValidateError::Input(e.to_string()))?),
    };
    if raw.is_empty() {
        return Err(bad("no images".into()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (k, (h, w, img)) in raw.into_iter().enumerate() {
        if h < 2 || w < 2 {
            return Err(bad(format!("image {k} is {h}×{w}: too small")));
        }
        let s = h.min(w);
        let c = center_crop(&img, h, w, s, s);
        let r = resize(&c, s, s, side, side, Resample::Area);
        if r.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("image {k} has non-finite pixels")));
        }
        out.push(r);
    }
    Ok(out)
}

/// Brings image `k` of `path` (as [`read_resized`] gave it) to the prior's units.
pub fn to_prior_units(
    img: &mut [f32],
    path: &Path,
    k: usize,
    scaling: TruthScaling,
    flux_scale: f64,
) -> Result<(), ValidateError> {
    match scaling {
        TruthScaling::Peak => {
            img.iter_mut().for_each(|v| *v = v.max(0.0));
            let peak = img.iter().cloned().fold(0.0f32, f32::max);
            if peak <= 0.0 {
                return Err(ValidateError::Input(format!(
                    "{}: image {k} has no positive pixel: it cannot be scaled to a peak of 1 \
                     (--truth-scaling physical takes its values as they are)",
                    path.display()
                )));
            }
            img.iter_mut().for_each(|v| *v /= peak);
        }
        TruthScaling::Physical => {
            img.iter_mut()
                .for_each(|v| *v = (*v as f64 / flux_scale) as f32);
        }
    }
    Ok(())
}

/// The prior's resolution floor in its normalised units: the noise level σ(t_eps)/μ(t_eps) at
/// which its score model stops. The model is trained down to that level only, so the density
/// it represents is its training images' convolved with N(0, floor²) per pixel: its draws, and
/// the posteriors under it, scatter by about the floor where the images are exactly 0.
pub fn resolution_floor<P: PriorScore + ?Sized>(model: &P) -> f64 {
    let (sde, t) = (model.sde(), model.t_eps());
    sde.sigma(t) / sde.mu(t)
}

/// Adds N(0, σ²) to every pixel of truth `k` (seeded by `seed` and `k`, so a truth gets the
/// same noise whatever else the run holds): a truth drawn from the density the prior
/// represents (see [`resolution_floor`]) rather than from its exact-zero training images,
/// whose zeros would otherwise sit at the centre of every posterior's scatter and count as
/// covered at any credibility.
pub fn add_floor(img: &mut [f32], sigma: f64, seed: u64, k: usize) {
    use rand::Rng;
    use rand_distr::StandardNormal;
    // Its own stream: the run's seed also drives the sampler and the visibility noise.
    const FLOOR: u64 = 0x0066_6c6f_6f72; // "floor"
    let mut rng =
        StdRng::seed_from_u64(seed ^ FLOOR ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for v in img.iter_mut() {
        let z: f64 = rng.sample(StandardNormal);
        *v += (sigma * z) as f32;
    }
}

fn stack_images(s: &ImageStack) -> Vec<(usize, usize, Vec<f32>)> {
    (0..s.n).map(|i| (s.h, s.w, s.image(i).to_vec())).collect()
}

/// Every 2-D image HDU of a FITS file (empty primary HDUs and tables skipped), blanks as 0.
pub fn read_fits_hdus(path: &Path) -> Result<Vec<(usize, usize, Vec<f32>)>, FitsError> {
    let mut out = Vec::new();
    for index in 0.. {
        match crate::io::read_hdu(path, index) {
            Ok(img) => {
                let dims: Vec<usize> = img.shape.iter().copied().filter(|&d| d != 1).collect();
                if dims.len() == 2 {
                    let (ny, nx, data) = img.plane();
                    let data = data
                        .iter()
                        .map(|&v| if v.is_finite() { v as f32 } else { 0.0 })
                        .collect();
                    out.push((ny, nx, data));
                }
            }
            Err(FitsError::NoSuchHdu { .. }) => break,
            Err(FitsError::NoImage { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
