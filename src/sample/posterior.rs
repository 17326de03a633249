//! Posterior sampling: the reverse diffusion driven by `prior score + α · likelihood score`.
//!
//! Two likelihood scores, the user's choice:
//! - **CLA**, the convolved likelihood approximation (Adam et al. 2022; Dia et al. 2023):
//!   `∇ log p_t(y | x_t) ≈ Aᵀ(μ_t y − A x_t)/(μ_t² σ_y² + σ_t² Γ)`, cheap (no network gradient);
//! - **DPS** (Chung et al. 2023): `∇_{x_t} −‖y − A x̂₀(x_t)‖²/(2σ²)` with Tweedie's
//!   `x̂₀ = (x_t + σ_t² s_θ)/μ_t`, the vector–Jacobian product taken by candle's backward pass.
//!
//! Chains run as one batch through the network; the operator is applied per chain (it is
//! parallel inside). Everything works in the prior's normalised pixel units: the caller folds
//! the flux scale into the operator (see [`crate::operator::Scaled`]).

use candle_core::{Result, Tensor, Var};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::sde_samplers::{euler_maruyama, gaussian_like, predictor_corrector};
use crate::likelihood::GaussianLikelihood;
use crate::operator::ForwardOperator;
use crate::prior::sde::Sde;
use crate::prior::ScoreModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Convolved likelihood approximation.
    Cla,
    /// Diffusion posterior sampling.
    Dps,
}

#[derive(Debug, Clone)]
pub struct PosteriorOptions {
    pub method: Method,
    pub n_samples: usize,
    /// Reverse-SDE steps.
    pub steps: usize,
    /// Chains per network batch.
    pub batch: usize,
    pub seed: u64,
    /// Weight on the likelihood score (1 = the Bayesian posterior).
    pub alpha: f32,
    /// Langevin corrector `(snr, steps per time)`; `None` for plain Euler–Maruyama.
    pub corrector: Option<(f64, usize)>,
}

impl Default for PosteriorOptions {
    fn default() -> Self {
        Self {
            method: Method::Cla,
            n_samples: 64,
            steps: 300,
            batch: 64,
            seed: 0,
            alpha: 1.0,
            corrector: None,
        }
    }
}

/// The likelihood score for every chain of the batch `x` (B, 1, H, W).
fn cla_score<A: ForwardOperator>(
    lik: &GaussianLikelihood<A>,
    x: &Tensor,
    mu: f64,
    sigma: f64,
) -> Result<Tensor> {
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let npix = lik.operator().image_len();
    let mut g = vec![0.0f32; xs.len()];
    g.par_chunks_mut(npix)
        .zip(xs.par_chunks(npix))
        .for_each(|(gc, xc)| lik.score(xc, mu as f32, sigma as f32, gc));
    Tensor::from_vec(g, x.shape(), x.device())
}

/// DPS: `∇_{x_t} log N(y; A x̂₀(x_t), σ²)` through the network's Jacobian.
fn dps_score<A: ForwardOperator>(
    model: &ScoreModel,
    lik: &GaussianLikelihood<A>,
    x: &Tensor,
    t: f64,
) -> Result<Tensor> {
    let xv = Var::from_tensor(&x.detach())?;
    let x0 = model.denoise(xv.as_tensor(), t)?;
    // v = ∇_{x̂₀} log p(y | x̂₀), the exact Gaussian score at the denoised image.
    let v = cla_score(lik, &x0.detach(), 1.0, 0.0)?;
    let grads = (x0 * v)?.sum_all()?.backward()?;
    match grads.get(xv.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Err(candle_core::Error::Msg(
            "DPS: no gradient reached the diffusion state".into(),
        )),
    }
}

/// Draws `opts.n_samples` posterior samples (normalised units, each `ny·nx`, row-major).
/// `on_step(done_steps_of_batch, batch_index)` is called once per reverse step for progress.
pub fn sample_posterior<A: ForwardOperator>(
    model: &ScoreModel,
    lik: &GaussianLikelihood<A>,
    opts: &PosteriorOptions,
    progress: Option<&ProgressBar>,
) -> Result<Vec<Vec<f32>>> {
    let [ny, nx] = lik.operator().image_shape();
    let side = model.image_size();
    if ny != side || nx != side {
        return Err(candle_core::Error::Msg(format!(
            "the operator's image is {ny}×{nx} but the prior works on {side}×{side}"
        )));
    }
    let sde = model.sde();
    let t_eps = model.config().t_eps;
    let alpha = opts.alpha as f64;
    let mut out = Vec::with_capacity(opts.n_samples);
    let mut batch_index = 0u64;
    while out.len() < opts.n_samples {
        let b = opts.batch.max(1).min(opts.n_samples - out.len());
        // Each batch has its own stream derived from the seed, so results do not depend on
        // how many batches ran before in the same process.
        let mut rng = StdRng::seed_from_u64(
            opts.seed
                .wrapping_add(batch_index.wrapping_mul(0x9E37_79B9)),
        );
        let zeros = Tensor::zeros((b, 1, side, side), candle_core::DType::F32, model.device())?;
        let x_init = gaussian_like(&zeros, &mut rng)?.affine(sde.prior_std(), 0.0)?;
        let score = |x: &Tensor, t: f64| -> Result<Tensor> {
            let prior = model.score(x, t)?;
            let like = match opts.method {
                Method::Cla => cla_score(lik, x, sde.mu(t), sde.sigma(t))?,
                Method::Dps => dps_score(model, lik, x, t)?,
            };
            prior + like.affine(alpha, 0.0)?
        };
        let x = match opts.corrector {
            None => euler_maruyama(&score, sde, &x_init, opts.steps, t_eps, &mut rng, progress)?,
            Some((snr, n)) => predictor_corrector(
                &score, sde, &x_init, opts.steps, snr, n, t_eps, &mut rng, progress,
            )?,
        };
        // Tweedie's denoising at t_eps removes the last σ(t_eps) of noise.
        let x0 = model.denoise(&x, t_eps)?;
        let flat: Vec<f32> = x0.flatten_all()?.to_vec1()?;
        out.extend(flat.chunks(side * side).map(|c| c.to_vec()));
        batch_index += 1;
    }
    Ok(out)
}
