//! Classic imaging products: visibility weighting (natural, uniform, Briggs as WSClean does
//! them), the dirty image and the PSF in Jy/beam.

mod dirty;
mod error;
pub mod noise;
pub mod weighting;

pub use dirty::{make_dirty_and_psf, DirtyProducts, ImagingOptions, UvStats};
pub use error::ImagingError;
pub use noise::{estimate_noise, NoiseEstimate};
pub use weighting::Weighting;
