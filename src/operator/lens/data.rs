//! Lens datasets as autolens writes them (see [`super::autolens`] for their conventions): an
//! image with its noise map and PSF, or visibilities with their σ and uv coordinates, checked
//! and in the layout the lens operator uses.

use std::path::Path;

use thiserror::Error;

use super::{ImageGrid, Psf};
use crate::io::{read_image, FitsError, FitsImage};
use crate::observe::{Observer, Quiet};
use crate::operator::OperatorError;

#[derive(Debug, Error)]
pub enum LensDataError {
    /// A file that cannot be read; `what` says which input it was (`--data`, `--psf`, …).
    #[error("{what}")]
    Read {
        what: String,
        #[source]
        source: FitsError,
    },
    /// Data that cannot be fitted (the message names the file).
    #[error("{0}")]
    Invalid(String),
    /// A PSF that cannot be used; `path` is its file.
    #[error("{path}")]
    Psf {
        path: String,
        #[source]
        source: OperatorError,
    },
}

type Result<T> = std::result::Result<T, LensDataError>;

/// An image dataset.
pub struct ImagingData {
    pub data: Vec<f32>,
    pub noise: Vec<f32>,
    pub grid: ImageGrid,
    pub psf: Option<Psf>,
}

/// Which way up the rows of the image files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// Top row first when the data header has PIXSCAX (autolens), else FITS order.
    Auto,
    /// FITS order: the first row is the bottom of the image (as DS9 shows it).
    Fits,
    /// The first row is the top of the image (arrays written as numpy holds them).
    TopDown,
}

fn plane(path: &Path, what: &str) -> Result<(usize, usize, Vec<f64>, FitsImage)> {
    // FitsError names the file; the option says which input it was.
    let img = read_image(path).map_err(|source| LensDataError::Read {
        what: what.to_string(),
        source,
    })?;
    let (ny, nx, v) = img
        .single_plane(what)
        .map_err(|e| LensDataError::Invalid(e.to_string()))?;
    Ok((ny, nx, v, img))
}

/// Reads data, noise and PSF (rows as [`RowOrder::Auto`] says, quietly); the pixel scale from
/// the argument, else from the header.
pub fn read_imaging(
    data: &Path,
    noise: &Path,
    psf: Option<&Path>,
    pixel_scale: Option<f64>,
) -> Result<ImagingData> {
    read_imaging_rows(data, noise, psf, pixel_scale, RowOrder::Auto, &Quiet)
}

/// [`read_imaging`] with the row order chosen (`Auto` logs what it chose, since the same
/// pixels fit differently the other way up).
pub fn read_imaging_rows(
    data: &Path,
    noise: &Path,
    psf: Option<&Path>,
    pixel_scale: Option<f64>,
    rows: RowOrder,
    obs: &dyn Observer,
) -> Result<ImagingData> {
    let (ny, nx, d, hdr) = plane(data, "--data")?;
    let (ny2, nx2, n, _) = plane(noise, "--noise")?;
    if (ny, nx) != (ny2, nx2) {
        return Err(LensDataError::Invalid(format!(
            "{} is {ny2}×{nx2} but {} is {ny}×{nx}",
            noise.display(),
            data.display()
        )));
    }
    if let Some(i) = n.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(LensDataError::Invalid(format!(
            "{}: noise σ must be positive and finite; pixel {i} has {}",
            noise.display(),
            n[i]
        )));
    }
    if let Some(i) = d.iter().position(|v| !v.is_finite()) {
        return Err(LensDataError::Invalid(format!(
            "{}: pixel {i} is not finite",
            data.display()
        )));
    }
    let scale = match pixel_scale {
        Some(s) => s,
        None => hdr
            .get_f64("PIXSCAX")
            .or_else(|| hdr.get_f64("CDELT1").map(|c| c.abs() * 3600.0))
            .ok_or_else(|| {
                LensDataError::Invalid(format!(
                    "{} has no PIXSCAX or CDELT1: give --pixel-scale (arcsec)",
                    data.display()
                ))
            })?,
    };
    if !(scale.is_finite() && scale > 0.0) {
        return Err(LensDataError::Invalid(format!(
            "pixel scale must be positive, got {scale} arcsec"
        )));
    }
    // autolens (whose headers carry PIXSCAX) writes its arrays as it holds them, top row
    // first; FITS and our images put the first row at the bottom. (Checked on the HST dataset:
    // the true model fits at χ² ≈ 1 only this way round; see tests/lens_truth.rs.)
    let top_down = match rows {
        RowOrder::Fits => false,
        RowOrder::TopDown => true,
        RowOrder::Auto => {
            let t = hdr.get_f64("PIXSCAX").is_some();
            if t {
                obs.log(&format!(
                    "{}: has PIXSCAX (an autolens file): rows read top row first, as autolens \
                     writes them (--rows fits to read them in FITS order)",
                    data.display()
                ));
            }
            t
        }
    };
    let rows = |v: &[f64], ny: usize, nx: usize| -> Vec<f32> {
        (0..ny * nx)
            .map(|i| {
                let (y, x) = (i / nx, i % nx);
                let y = if top_down { ny - 1 - y } else { y };
                v[y * nx + x] as f32
            })
            .collect()
    };
    let psf = match psf {
        None => None,
        Some(p) => {
            let (ky, kx, k, _) = plane(p, "--psf")?;
            if k.iter().all(|&v| v == 0.0) {
                return Err(LensDataError::Invalid(format!(
                    "--psf {}: every pixel is zero; a PSF needs a positive sum",
                    p.display()
                )));
            }
            let psf = Psf::new(ky, kx, rows(&k, ky, kx)).map_err(|source| LensDataError::Psf {
                path: p.display().to_string(),
                source,
            })?;
            Some(psf)
        }
    };
    Ok(ImagingData {
        data: rows(&d, ny, nx),
        noise: rows(&n, ny, nx),
        grid: ImageGrid {
            ny,
            nx,
            pixel_scale: scale,
        },
        psf,
    })
}

/// Visibilities: `uv` (wavelengths), data `[re, im]` interleaved, σ per component.
pub struct VisData {
    pub uv: Vec<[f64; 2]>,
    pub data: Vec<f32>,
    pub sigma: Vec<f32>,
}

fn pairs(path: &Path) -> Result<Vec<f64>> {
    let (ny, nx, v, _) = plane(path, "table")?;
    if nx != 2 {
        return Err(LensDataError::Invalid(format!(
            "{}: expected N × 2 values, got {ny} × {nx}",
            path.display()
        )));
    }
    Ok(v)
}

/// Reads visibilities, their σ and their uv coordinates (each a FITS table of N × 2 values).
pub fn read_visibilities(data: &Path, noise: &Path, uv: &Path) -> Result<VisData> {
    let (d, n, u) = (pairs(data)?, pairs(noise)?, pairs(uv)?);
    if d.len() != u.len() || n.len() != u.len() {
        return Err(LensDataError::Invalid(format!(
            "{}, {} and {} must have the same number of rows ({}, {}, {})",
            data.display(),
            noise.display(),
            uv.display(),
            d.len() / 2,
            n.len() / 2,
            u.len() / 2
        )));
    }
    if let Some(i) = n.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(LensDataError::Invalid(format!(
            "{}: σ must be positive; entry {i} is {}",
            noise.display(),
            n[i]
        )));
    }
    if d.iter().chain(&u).any(|v| !v.is_finite()) {
        return Err(LensDataError::Invalid(format!(
            "{} or {} has non-finite values",
            data.display(),
            uv.display()
        )));
    }
    Ok(VisData {
        uv: u.chunks(2).map(|c| [c[0], c[1]]).collect(),
        data: d.iter().map(|&v| v as f32).collect(),
        sigma: n.iter().map(|&v| v as f32).collect(),
    })
}
