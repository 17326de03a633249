//! FITS images in and out, with a WCS as WSClean writes it.
//!
//! - [`write_image`]: one image, NAXIS = 4 (RA---SIN, DEC--SIN, FREQ, STOKES), f32, the same
//!   keywords as WSClean 3 (BUNIT, BMAJ/BMIN/BPA, EQUINOX, BTYPE, TELESCOP, OBSERVER, OBJECT,
//!   CTYPEn/CRPIXn/CRVALn/CDELTn/CUNITn, SPECSYS, DATE-OBS) plus RADESYS, ORIGIN and our version.
//! - [`write_cube`]: a stack of images (posterior samples, sub-bands) on axis 3.
//! - [`read_image`] / [`read_hdu`]: any image HDU (any BITPIX) as f64, with its header.
//!
//! Writes are atomic (temporary file in the same directory, renamed into place) and replace an
//! existing file, as WSClean does. Inputs are opened read-only.

mod error;
mod fits_read;
mod fits_write;
mod wcs;

pub use error::FitsError;
pub use fits_read::{read_hdu, read_image, FitsImage};
pub use fits_write::{write_cube, write_image, CubeAxis};
pub use wcs::{iso_to_mjd, Beam, HeaderValue, SkyHeader, SkyWcs};

#[cfg(test)]
mod tests;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (so the rename
/// cannot cross file systems), then a rename, so a reader or an interrupted run never sees half
/// a file. For the JSON and text products beside the FITS files.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    // A failed write (a full disk) or rename never leaves the temporary file behind.
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}
