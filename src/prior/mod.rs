//! Score-based priors (candle): SDEs, score network, training, checkpoints, sampling.
//!
//! Knows nothing of radio data: a prior is a function `(x, t) ↦ ∇ log p_t(x)` on images in the
//! normalised units recorded in its checkpoint.

pub mod checkpoint;
pub mod concat;
pub mod data;
pub mod default;
pub mod fast_conv;
pub mod logp;
pub mod model;
pub mod ops;
pub mod reference;
pub mod resample;
pub mod sde;
mod simd;
pub mod stats;
pub mod train;

use std::path::PathBuf;

pub use checkpoint::{CheckpointConfig, ScoreModel, TrainingInfo};
pub use data::{Dataset, ImageStack, Normalisation, Preprocess};
pub use default::{default_prior, default_reference};
pub use model::{UNet, UNetConfig};
pub use sde::{Sde, SdeConfig, VeSde, VpSde};

/// Errors of the prior: each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid checkpoint config: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: corrupt or unreadable weights: {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("{path}: weights do not match config: {msg}")]
    Mismatch { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = PriorError> = std::result::Result<T, E>;
