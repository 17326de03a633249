use thiserror::Error;

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("image size {ny}×{nx} is not usable: both sides must be even and at least 8 pixels")]
    BadImageSize { ny: usize, nx: usize },
    #[error("pixel scale must be positive and finite, got {0} rad")]
    BadPixelScale(f64),
    #[error("accuracy epsilon {0:e} is outside the supported range 1e-7 … 1e-1")]
    BadEpsilon(f64),
    #[error("{what}: expected {expected} values, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0}")]
    Invalid(String),
}
