//! Reverse-time samplers written as plain functions of a score and an SDE (k-diffusion style),
//! so that posterior sampling can pass `prior score + likelihood score` unchanged.
//!
//! Time runs from t = 1 down to `t_eps` on a uniform grid; all randomness comes from the
//! caller's seeded RNG, so the same seed gives the same samples.

use candle_core::{DType, Result, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::observe::{check_candle, Observer};
use crate::prior::sde::Sde;

/// A score function `(x, t) ↦ ∇ log p_t(x)`, same shape as `x`.
pub type ScoreFn<'a> = dyn Fn(&Tensor, f64) -> Result<Tensor> + 'a;

/// Standard normal noise shaped like `x`, drawn from `rng`.
pub fn gaussian_like<R: Rng + ?Sized>(x: &Tensor, rng: &mut R) -> Result<Tensor> {
    let n = x.elem_count();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())
}

/// `steps + 1` times from 1 down to `t_eps`.
pub fn time_grid(steps: usize, t_eps: f64) -> Vec<f64> {
    (0..=steps)
        .map(|i| 1.0 - (1.0 - t_eps) * i as f64 / steps as f64)
        .collect()
}

/// One Euler–Maruyama step of the reverse SDE from `t` by `dt < 0`:
/// `x + (f − g² s) dt`, plus `g √|dt| z` unless it is the last step.
fn reverse_step<R: Rng + ?Sized>(
    score: &ScoreFn,
    sde: &dyn Sde,
    x: &Tensor,
    t: f64,
    dt: f64,
    add_noise: bool,
    rng: &mut R,
) -> Result<Tensor> {
    let g = sde.diffusion(t);
    let s = score(x, t)?;
    let mean = (x.affine(1.0 + sde.drift_coef(t) * dt, 0.0)? - s.affine(g * g * dt, 0.0)?)?;
    if add_noise {
        mean + gaussian_like(x, rng)?.affine(g * (-dt).sqrt(), 0.0)?
    } else {
        Ok(mean)
    }
}

/// Euler–Maruyama on the reverse SDE dx = [f − g² s] dt + g dw̄.
///
/// The last step adds no noise (it would only add σ(t_eps)-sized jitter).
pub fn euler_maruyama<R: Rng + ?Sized>(
    score: &ScoreFn,
    sde: &dyn Sde,
    x_init: &Tensor,
    steps: usize,
    t_eps: f64,
    rng: &mut R,
    obs: &dyn Observer,
) -> Result<Tensor> {
    assert!(steps > 0, "euler_maruyama needs at least one step");
    let ts = time_grid(steps, t_eps);
    let mut x = x_init.clone();
    for i in 0..steps {
        check_candle(obs)?;
        let (t, dt) = (ts[i], ts[i + 1] - ts[i]);
        x = reverse_step(score, sde, &x, t, dt, i + 1 < steps, rng)?;
        obs.advance(1);
    }
    Ok(x)
}

/// Mean over the batch of the per-sample L2 norms (all but the first dimension).
fn mean_norm(x: &Tensor) -> Result<f64> {
    let b = x.dim(0)?;
    let n = x
        .to_dtype(DType::F32)?
        .reshape((b, ()))?
        .sqr()?
        .sum(1)?
        .sqrt()?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(n as f64)
}

/// Predictor–corrector (Song et al. 2021): one reverse-diffusion (Euler–Maruyama) predictor
/// step and `n_corrector` Langevin corrector steps per time, step size from the `snr`.
#[allow(clippy::too_many_arguments)]
pub fn predictor_corrector<R: Rng + ?Sized>(
    score: &ScoreFn,
    sde: &dyn Sde,
    x_init: &Tensor,
    steps: usize,
    snr: f64,
    n_corrector: usize,
    t_eps: f64,
    rng: &mut R,
    obs: &dyn Observer,
) -> Result<Tensor> {
    assert!(steps > 0, "predictor_corrector needs at least one step");
    let ts = time_grid(steps, t_eps);
    let mut x = x_init.clone();
    for i in 0..steps {
        check_candle(obs)?;
        let (t, dt) = (ts[i], ts[i + 1] - ts[i]);
        for _ in 0..n_corrector {
            let s = score(&x, t)?;
            let z = gaussian_like(&x, rng)?;
            // ε = 2 α (snr ‖z‖ / ‖s‖)² with batch-mean norms, as in Song et al.: one step size
            // for the whole batch, so that it does not depend on each sample's own state.
            let alpha = (1.0 + 2.0 * sde.drift_coef(t) * (-dt)).clamp(1e-3, 1.0);
            let ratio = mean_norm(&z)? / (mean_norm(&s)? + 1e-12);
            let eps = 2.0 * alpha * (snr * ratio).powi(2);
            let step = s.affine(eps, 0.0)?;
            let noise = z.affine((2.0 * eps).sqrt(), 0.0)?;
            x = ((x + step)? + noise)?;
        }
        x = reverse_step(score, sde, &x, t, dt, i + 1 < steps, rng)?;
        obs.advance(1);
    }
    Ok(x)
}

/// Heun's method on the probability-flow ODE dx/dt = f − ½ g² s (deterministic given x_init;
/// two score evaluations per step except the last).
pub fn probability_flow_heun(
    score: &ScoreFn,
    sde: &dyn Sde,
    x_init: &Tensor,
    steps: usize,
    t_eps: f64,
    obs: &dyn Observer,
) -> Result<Tensor> {
    assert!(steps > 0, "probability_flow_heun needs at least one step");
    let ts = time_grid(steps, t_eps);
    let vel = |x: &Tensor, t: f64| -> Result<Tensor> {
        let g = sde.diffusion(t);
        x.affine(sde.drift_coef(t), 0.0)? - score(x, t)?.affine(0.5 * g * g, 0.0)?
    };
    let mut x = x_init.clone();
    for i in 0..steps {
        check_candle(obs)?;
        let (t, tn) = (ts[i], ts[i + 1]);
        let dt = tn - t;
        let d = vel(&x, t)?;
        let xe = (&x + d.affine(dt, 0.0)?)?;
        x = if i + 1 < steps {
            let d2 = vel(&xe, tn)?;
            (&x + ((d + d2)? * (0.5 * dt))?)?
        } else {
            xe
        };
        obs.advance(1);
    }
    Ok(x)
}
