use thiserror::Error;

use crate::operator::OperatorError;

#[derive(Debug, Error)]
pub enum ImagingError {
    #[error("Briggs robustness {0} is outside −2 … 2")]
    BadRobust(f64),
    #[error("unknown weighting '{0}': use natural, uniform or briggs <robust>")]
    UnknownWeighting(String),
    #[error(
        "no visibility falls on the uv grid of this image: with {size} pixels of {scale_asec:.4}″ \
         the longest usable baseline is {max_uv:.0} λ, the shortest one in the data is \
         {min_data_uv:.0} λ; use a smaller --scale"
    )]
    NothingOnGrid {
        size: usize,
        scale_asec: f64,
        max_uv: f64,
        min_data_uv: f64,
    },
    #[error("all visibilities have zero weight")]
    AllZeroWeight,
    #[error("CLEAN: --{what} {why}")]
    BadCleanOption { what: &'static str, why: String },
    #[error(
        "could not fit a restoring beam to the PSF (is the PSF empty or not peaked at the centre?)"
    )]
    BeamFit,
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Operator(#[from] OperatorError),
}
