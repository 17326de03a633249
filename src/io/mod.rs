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
pub use wcs::{Beam, HeaderValue, SkyHeader, SkyWcs};

#[cfg(test)]
mod tests;
