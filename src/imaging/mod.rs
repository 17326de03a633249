//! Classic imaging products: visibility weighting (natural, uniform, Briggs as WSClean does
//! them), the dirty image and the PSF in Jy/beam.

pub mod beam;
pub mod clean;
pub mod compact;
mod dirty;
mod error;
pub mod fit;
pub mod noise;
pub mod selfcal;
pub mod weighting;
pub mod window;

pub use beam::{fit_beam, fit_beam_with, BeamFitRegion, PixelBeam};
pub use clean::{clean, clean_with_progress, CleanOptions, CleanProgress, CleanResult, StopReason};
pub use compact::{compact_pixels, CompactOptions};
pub use dirty::{make_dirty_and_psf, DirtyProducts, ImagingOptions, UvStats};
pub use error::ImagingError;
pub use noise::{estimate_noise, NoiseEstimate};
pub use selfcal::{
    solve_gains, GainMode, GainSolution, SelfcalError, SelfcalOptions, SolutionInterval,
};
pub use weighting::Weighting;
pub use window::clean_window;
