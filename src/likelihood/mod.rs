//! Likelihood scores `∇ₓ log p(y | x)` from a [`ForwardOperator`] and a noise model, for the
//! posterior samplers. Everything here works on plain `f32` slices: the operator's data vector
//! (re/im pairs for visibilities) and the image.
//!
//! [`ForwardOperator`]: crate::operator::ForwardOperator

pub mod closure;
mod compact;
mod gaussian;
mod learned;

use rayon::prelude::*;
use thiserror::Error;

pub use compact::CompactMarginal;
pub use gaussian::GaussianLikelihood;
pub use learned::{noise_tiles, LearnedNoiseLikelihood};

#[derive(Debug, Error)]
pub enum LikelihoodError {
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("noise σ must be positive and finite; datum {index} has σ = {value}")]
    BadSigma { index: usize, value: f32 },
    #[error("compact components: {0}")]
    Compact(String),
    #[error("noise model: {0}")]
    NoiseModel(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What the posterior sampler needs of a likelihood: its score at a noisy diffusion state
/// (CLA-style samplers), its exact score at a clean image (DPS), and the noise scale that sets
/// where the reverse diffusion may stop.
///
/// Images are flat, row-major, `image_len()` long; batches are images back to back.
pub trait LikelihoodScore: Sync {
    /// `[ny, nx]` of the image.
    fn image_shape(&self) -> [usize; 2];

    fn image_len(&self) -> usize {
        let [ny, nx] = self.image_shape();
        ny * nx
    }

    /// `∇_{x_t} log p_t(y | x_t)` at a diffusion state `x_t = μ_t x + σ_t z`, into `grad`.
    fn score_t(
        &self,
        x_t: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grad: &mut [f32],
    ) -> Result<(), LikelihoodError>;

    /// `∇_x log p(y | x)` at a clean image (what DPS evaluates at Tweedie's denoised image).
    fn score_x0(&self, x: &[f32], grad: &mut [f32]) -> Result<(), LikelihoodError> {
        self.score_t(x, 1.0, 0.0, grad)
    }

    /// [`Self::score_t`] for a batch. The default runs the images in parallel; a likelihood
    /// with a network inside overrides it to make one batched network call.
    fn score_t_batch(
        &self,
        xs: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grads: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        let n = self.image_len();
        grads
            .par_chunks_mut(n)
            .zip(xs.par_chunks(n))
            .try_for_each(|(g, x)| self.score_t(x, mu_t, sigma_t, g))
    }

    /// [`Self::score_x0`] for a batch.
    fn score_x0_batch(&self, xs: &[f32], grads: &mut [f32]) -> Result<(), LikelihoodError> {
        let n = self.image_len();
        grads
            .par_chunks_mut(n)
            .zip(xs.par_chunks(n))
            .try_for_each(|(g, x)| self.score_x0(x, g))
    }

    /// The diffusion noise level (image units) below which the data dominate: the sampler
    /// carries the reverse diffusion down to a tenth of it. `f64::INFINITY` if unknown.
    fn data_noise_scale(&self) -> f64;

    /// A goodness of fit of a clean image: χ² per real datum under the likelihood's noise
    /// model (1 for a fit to the noise level).
    fn reduced_chi2(&self, x: &[f32]) -> f64;
}
