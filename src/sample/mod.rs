//! Samplers of the reverse diffusion, generic over the score (prior, or prior + likelihood).

pub mod evidence;
#[cfg(test)]
pub(crate) mod gaussian_case;
pub mod posterior;
pub mod sde_samplers;

pub use sde_samplers::{
    euler_maruyama, gaussian_like, predictor_corrector, probability_flow_heun, time_grid, ScoreFn,
};
