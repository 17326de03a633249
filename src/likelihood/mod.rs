//! Likelihood scores `∇ₓ log p(y | x)` from a [`ForwardOperator`] and a noise model, for the
//! posterior samplers. Everything here works on plain `f32` slices: the operator's data vector
//! (re/im pairs for visibilities) and the image.

mod gaussian;

pub use gaussian::{GaussianLikelihood, LikelihoodError};
