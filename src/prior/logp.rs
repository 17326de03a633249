//! The prior as an explicit density: `log p_θ(x)` of an image under a score-based prior.
//!
//! Two estimators, for any [`PriorScore`] (the network [`ScoreModel`], or an analytic score):
//!
//! - [`ode_log_density`]: the probability-flow ODE with the instantaneous change of variables
//!   (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. D.2; Feng et al.,
//!   ICCV 2023). The image is carried from `t_ε` to `T = 1` along
//!   `dx/dt = v(x, t) = f(x, t) − ½ g(t)² s_θ(x, t)` while `d(log p)/dt = −∇·v`, so that
//!   `log p_{t_ε}(x) = log π(x_T) + ∫_{t_ε}^T ∇·v(x_t, t) dt`, with `π = N(0, prior_std² I)`
//!   (VE: `N(0, σ_max² I)`; VP: `N(0, I)`). The divergence is the Hutchinson–Skilling estimate
//!   `εᵀ (∂v/∂x) ε` with Rademacher probes `ε`, one per trajectory and fixed along it, taken by one
//!   vector–Jacobian product through the score (candle's backward of `(ε · s(x, t)).sum()` with
//!   `x` a [`Var`]); `∇·f = D a(t)` is exact. The estimate is unbiased over the probes up to the
//!   integration error; its standard error is the spread over the probes. (Rademacher probes
//!   are exact for a diagonal Jacobian: an isotropic Gaussian prior gives a zero standard error.)
//! - [`elbo`]: the evidence lower bound of the SDE model (Song, Durkan, Murray & Ermon 2021,
//!   "Maximum likelihood training of score-based diffusion models", Theorem 1; the surrogate
//!   prior of Feng & Bouman, TMLR 2024): no Jacobian, one network evaluation per Monte-Carlo
//!   draw. The derivation for our SDEs is on [`elbo`].
//!
//! **Which density.** Both estimate the density at the smallest noise level the network was
//! trained on, `p_{t_ε} = p_data ∗ N(0, σ(t_ε)² I)` for the VE SDE (σ(t_ε) ≈ 1.0e-3 for the
//! built-in prior), in the prior's normalised units: the continuous density of the pixel
//! values, in nats. Bits per dimension are `−log p / (D ln 2)` **without** the 8-bit
//! dequantisation offset (`+ log₂ 256` of the image-model literature): our images are per-image
//! peak normalised floats, not 8-bit integers, so the raw continuous density is reported. A
//! change of units (another flux scale) shifts `log p` by `−D ln(scale)`.
//!
//! **Where it is evaluated** ([`Point`]). By default at the image observed at that noise level,
//! `E_z[log p_{t_ε}(x + σ(t_ε) z)]`, z ~ N(0, I) drawn afresh for every probe and every ELBO
//! draw (a Gaussian dequantisation at the network's own smallest noise); [`Point::Image`]
//! gives `log p_{t_ε}(x)` at the image itself. For an exact score the two differ by
//! `½ σ(t_ε)² tr(∇² (−log p_{t_ε}))`, about D/2 nats where the data are sharper than σ(t_ε).
//! But a clean image is where the network never was in training (its inputs at every t are
//! images plus σ(t) noise), and there the built-in prior's score is wrong: measured on a
//! MiraBest image, `σ² tr(∂s/∂x)/D` is −2.3 at t_ε and −4500 at t = 1 instead of ≈ −1 (as it
//! is, −0.90 to −1.00, on the noisy image), and the ODE then gave 33 400 nats, above
//! `−D/2 ln(2π σ(t_ε)²) = 24 530`, the largest log-density any `p_data ∗ N(0, σ(t_ε)²)` can
//! have, while the ELBO gave 25 070. At the noisy image the two agree (21 578 ± 20 and
//! 21 711 ± 61 nats) below that bound.
//!
//! **The prior at T.** Both replace the true marginal `p_1` by `π`. For the VE SDE
//! `p_1 = p_data ∗ N(0, σ_max²)`, close to `π` when σ_max is large against the images' spread
//! (Song & Ermon's rule for σ_max): the bias is about `‖x‖²/(2σ_max²)` plus fluctuations of
//! order `‖x‖/σ_max`, nats.
//!
//! All randomness comes from the caller's seed: the same seed gives the same numbers, and every
//! image of a batch gets the same probes and draws (common random numbers: differences between
//! images are estimated more precisely than the values themselves, and an image's number does
//! not depend on the others in its batch). Nothing is printed.

use std::f64::consts::{LN_2, PI};

use candle_core::{DType, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

use super::sde::Sde;
use super::ScoreModel;
use crate::observe::{check_candle, Observer};
use crate::sample::posterior::PriorScore;

/// Errors of the log-density estimators: what the caller gave that they cannot use.
#[derive(Debug, thiserror::Error)]
pub enum LogpError {
    #[error(
        "the prior works on {size}×{size} images: expected a batch of shape (N, 1, {size}, \
         {size}), got {got:?} (resample or crop the image to {size}×{size} first)"
    )]
    Shape { size: usize, got: Vec<usize> },
    #[error("no image to evaluate (a batch of 0 images)")]
    Empty,
    #[error(
        "image {index} of the batch holds {count} NaN or infinite pixel(s): the density is \
         defined on finite images only"
    )]
    NonFinite { index: usize, count: usize },
    #[error("{what} must be at least {min}, got {got}")]
    TooSmall {
        what: &'static str,
        min: usize,
        got: usize,
    },
    #[error(
        "the number of ELBO samples must be even (two draws per time stratum give the standard \
         error), got {0}"
    )]
    OddSamples(usize),
    #[error(
        "the score is not differentiable by candle's autograd (no gradient reached the image): \
         the ODE log-density needs its vector-Jacobian product"
    )]
    NoGradient,
    #[error(
        "the {what} of image {index} is not finite: the score returned NaN or infinite values \
         (a broken checkpoint, or an image far outside the prior's range)"
    )]
    Diverged { what: &'static str, index: usize },
    #[error("score evaluation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = LogpError> = std::result::Result<T, E>;

/// A score evaluated at one time per row, for the ELBO's Monte-Carlo draws (each at its own
/// time) in one network batch. The default evaluates the rows one by one with
/// [`PriorScore::score`]; [`ScoreModel`] passes the times to the network in one batch.
pub trait LogDensityPrior: PriorScore {
    /// `∇ log p_{t_i}(x_i)` for a batch `x` (B, 1, H, W) and `ts` of length B.
    fn score_rows(&self, x: &Tensor, ts: &[f64]) -> candle_core::Result<Tensor> {
        let rows = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| self.score(&x.narrow(0, i, 1)?, t))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&rows, 0)
    }
}

impl LogDensityPrior for ScoreModel {
    fn score_rows(&self, x: &Tensor, ts: &[f64]) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let dev = x.device();
        let tt: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let inv_sigma: Vec<f32> = ts
            .iter()
            .map(|&t| (1.0 / self.sde().sigma(t)) as f32)
            .collect();
        let out = self.forward(x, &Tensor::from_vec(tt, b, dev)?)?;
        out.broadcast_mul(&Tensor::from_vec(inv_sigma, (b, 1, 1, 1), dev)?)
    }
}

/// Where the density is evaluated (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Point {
    /// `E_z[log p_{t_ε}(x + σ(t_ε) z)]`: the image observed at the prior's smallest noise
    /// level, where the network's inputs look like its training inputs.
    #[default]
    Noisy,
    /// `log p_{t_ε}(x)` at the image itself.
    Image,
}

/// Settings of [`ode_log_density`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdeOptions {
    /// RK4 steps from `t_ε` to 1 (four score evaluations, each with its backward pass, per step).
    pub steps: usize,
    /// Rademacher probes per image (at least 2: their spread gives the standard error).
    pub probes: usize,
    pub seed: u64,
    /// Most rows (image × probe) per network batch; an image's probes are never split.
    pub batch: usize,
    /// At the image or at the image plus σ(t_ε) noise (one draw per probe).
    pub point: Point,
}

impl Default for OdeOptions {
    fn default() -> Self {
        Self {
            steps: 50,
            probes: 4,
            seed: 0,
            batch: 16,
            point: Point::Noisy,
        }
    }
}

/// Settings of [`elbo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElboOptions {
    /// Monte-Carlo draws `(t, z)` per image: two in each of `samples / 2` time strata (even,
    /// at least 2).
    pub samples: usize,
    pub seed: u64,
    /// Most rows (draws) per network batch.
    pub batch: usize,
    /// At the image or at the image plus σ(t_ε) noise (one draw per Monte-Carlo draw).
    pub point: Point,
}

impl Default for ElboOptions {
    fn default() -> Self {
        Self {
            samples: 256,
            seed: 0,
            batch: 16,
            point: Point::Noisy,
        }
    }
}

/// An estimate of `log p(x)` for one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogDensity {
    /// The estimate, nats.
    pub nats: f64,
    /// Its standard error, nats (Monte-Carlo spread: probes for the ODE, draws for the ELBO;
    /// the integrator's error is not in it).
    pub std_err: f64,
    /// Pixels D of the image.
    pub dims: usize,
}

impl LogDensity {
    /// `−log p / (D ln 2)`: bits per pixel of the continuous density (no dequantisation offset).
    pub fn bits_per_dim(&self) -> f64 {
        -self.nats / (self.dims as f64 * LN_2)
    }
    /// The standard error of [`LogDensity::bits_per_dim`].
    pub fn bits_per_dim_err(&self) -> f64 {
        self.std_err / (self.dims as f64 * LN_2)
    }
}

/// The seed stream of the ELBO, apart from the ODE's probes under the same user seed.
const ELBO_STREAM: u64 = 0xe1b0_5eed_0000_0001;

/// Checks the batch (N, 1, s, s) against the prior and that every pixel is finite; returns it
/// as f32 on the prior's device, with N and s.
fn checked_images<P: PriorScore + ?Sized>(
    model: &P,
    images: &Tensor,
) -> Result<(Tensor, usize, usize)> {
    let size = model.image_size();
    let dims = images.dims();
    if dims.len() != 4 || dims[1] != 1 || dims[2] != size || dims[3] != size {
        return Err(LogpError::Shape {
            size,
            got: dims.to_vec(),
        });
    }
    let n = dims[0];
    if n == 0 {
        return Err(LogpError::Empty);
    }
    let x = images
        .to_dtype(DType::F32)?
        .to_device(model.device())?
        .contiguous()?;
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    for (index, img) in flat.chunks(size * size).enumerate() {
        let count = img.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(LogpError::NonFinite { index, count });
        }
    }
    Ok((x, n, size))
}

fn at_least(what: &'static str, got: usize, min: usize) -> Result<()> {
    if got < min {
        return Err(LogpError::TooSmall { what, min, got });
    }
    Ok(())
}

/// Row sums of `a ⊙ b` in f64 for tensors (B, …): `aᵀb` per row.
pub(crate) fn row_dots(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let rows = a.dim(0)?;
    let av: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let bv: Vec<f32> = b.flatten_all()?.to_vec1()?;
    let d = av.len() / rows.max(1);
    Ok(av
        .chunks(d)
        .zip(bv.chunks(d))
        .map(|(r, s)| r.iter().zip(s).map(|(&p, &q)| p as f64 * q as f64).sum())
        .collect())
}

/// Log-density of `N(0, var I)` in `d` dimensions at a point of squared norm `norm2`.
fn log_normal(norm2: f64, var: f64, d: usize) -> f64 {
    -0.5 * d as f64 * (2.0 * PI * var).ln() - norm2 / (2.0 * var)
}

/// The ODE velocity `v = a(t) x − ½ g(t)² s(x, t)` of every row of `x`, and the Hutchinson
/// estimate of its divergence `D a(t) − ½ g(t)² εᵀ (∂s/∂x) ε` with the row's probe.
fn velocity_and_divergence<P: PriorScore + ?Sized>(
    model: &P,
    x: &Tensor,
    t: f64,
    eps: &Tensor,
) -> Result<(Tensor, Vec<f64>)> {
    let sde = model.sde();
    let d = x.elem_count() / x.dim(0)?;
    let xv = Var::from_tensor(&x.detach())?;
    let s = model.score(xv.as_tensor(), t)?;
    let grads = (&s * eps)?.sum_all()?.backward()?;
    // Rows are independent, so the gradient of the sum holds each row's (∂s/∂x)ᵀ ε.
    let jt_eps = grads.get(xv.as_tensor()).ok_or(LogpError::NoGradient)?;
    let quad = row_dots(jt_eps, eps)?;
    let (a, g2) = (sde.drift_coef(t), sde.diffusion(t).powi(2));
    let v = (x.affine(a, 0.0)? - s.detach().affine(0.5 * g2, 0.0)?)?;
    let div = quad
        .into_iter()
        .map(|q| d as f64 * a - 0.5 * g2 * q)
        .collect();
    Ok((v, div))
}

/// `log p_{t_ε}` of each image of `images` (N, 1, H, W; the prior's normalised units), at the
/// image or at the image plus σ(t_ε) noise ([`OdeOptions::point`]), by the probability-flow
/// ODE and the Hutchinson–Skilling trace estimator (see the module doc). With
/// [`Point::Noisy`] each probe's trajectory starts from its own noisy copy, so that the
/// standard error holds the spread over the noise too.
///
/// The ODE is integrated by the classical Runge–Kutta method on a uniform grid in t (for the
/// VE SDE a uniform grid in log σ, where the drift changes at every noise scale alike). Heun's
/// method was measured first, on the D = 256 correlated Gaussian of the tests (VE, σ from 1e-3
/// to 100): 3 nats too high at 100 steps and 1 nat at 200, where RK4 is within 0.05 nats at 50
/// steps. Each step costs four score evaluations with their backward pass on
/// `images × probes` rows. The observer advances by one per step of each batch of images.
///
/// The score must be differentiable by candle's autograd (built from tensor operations on its
/// input), as the network's is.
pub fn ode_log_density<P: PriorScore + ?Sized>(
    model: &P,
    images: &Tensor,
    opts: &OdeOptions,
    obs: &dyn Observer,
) -> Result<Vec<LogDensity>> {
    at_least("the number of ODE steps", opts.steps, 1)?;
    at_least("the number of Hutchinson probes", opts.probes, 2)?;
    at_least("the network batch", opts.batch, 1)?;
    let (x_all, n, side) = checked_images(model, images)?;
    let d = side * side;
    let k = opts.probes;
    let dev = model.device();
    let sde = model.sde();
    let (t0, t1) = (model.t_eps(), 1.0);
    let prior_var = sde.prior_std().powi(2);

    // The same K probes for every image, drawn once.
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let probes: Vec<f32> = (0..k * d)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    let probes = Tensor::from_vec(probes, (k, 1, side, side), dev)?;
    // With `Point::Noisy`, probe p starts from x + σ(t_ε) z_p, the same z_p for every image.
    let start_noise = match opts.point {
        Point::Image => None,
        Point::Noisy => {
            let z: Vec<f32> = (0..k * d)
                .map(|_| rng.sample::<f32, _>(StandardNormal))
                .collect();
            Some(Tensor::from_vec(z, (k, 1, side, side), dev)?.affine(sde.sigma(t0), 0.0)?)
        }
    };

    let per_batch = (opts.batch / k).max(1);
    let h = (t1 - t0) / opts.steps as f64;
    let mut out = Vec::with_capacity(n);
    let mut i0 = 0;
    while i0 < n {
        let g = per_batch.min(n - i0);
        // Rows image-major: (image 0, probe 0..K), (image 1, probe 0..K), …
        let mut x = x_all
            .narrow(0, i0, g)?
            .unsqueeze(1)?
            .repeat((1, k, 1, 1, 1))?
            .reshape((g * k, 1, side, side))?;
        let eps = probes.repeat((g, 1, 1, 1))?;
        if let Some(z) = &start_noise {
            x = (x + z.repeat((g, 1, 1, 1))?)?;
        }
        let mut ell = vec![0.0f64; g * k];
        for step in 0..opts.steps {
            let t = t0 + step as f64 * h;
            let (k1, d1) = velocity_and_divergence(model, &x, t, &eps)?;
            let x2 = (&x + k1.affine(0.5 * h, 0.0)?)?;
            let (k2, d2) = velocity_and_divergence(model, &x2, t + 0.5 * h, &eps)?;
            let x3 = (&x + k2.affine(0.5 * h, 0.0)?)?;
            let (k3, d3) = velocity_and_divergence(model, &x3, t + 0.5 * h, &eps)?;
            let x4 = (&x + k3.affine(h, 0.0)?)?;
            let (k4, d4) = velocity_and_divergence(model, &x4, t + h, &eps)?;
            let incr = ((k1 + k4)? + (k2 + k3)?.affine(2.0, 0.0)?)?.affine(h / 6.0, 0.0)?;
            x = (x + incr)?;
            for (r, l) in ell.iter_mut().enumerate() {
                *l += h / 6.0 * (d1[r] + 2.0 * d2[r] + 2.0 * d3[r] + d4[r]);
            }
            check_candle(obs)?;
            obs.advance(1);
        }
        let norms = row_dots(&x, &x)?;
        for j in 0..g {
            let vals: Vec<f64> = (0..k)
                .map(|p| {
                    let r = j * k + p;
                    log_normal(norms[r], prior_var, d) + ell[r]
                })
                .collect();
            if vals.iter().any(|v| !v.is_finite()) {
                return Err(LogpError::Diverged {
                    what: "ODE log-density",
                    index: i0 + j,
                });
            }
            let (mean, sd) = mean_sd(&vals);
            out.push(LogDensity {
                nats: mean,
                std_err: sd / (k as f64).sqrt(),
                dims: d,
            });
        }
        i0 += g;
    }
    Ok(out)
}

/// Mean and sample standard deviation (n − 1).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// The evidence lower bound `log p_{t_ε}(x) ≥ b(x)` of each image (N, 1, H, W; normalised
/// units), by Monte Carlo over the diffusion time and noise. With [`Point::Noisy`] every draw
/// starts from its own `x̃ = x + σ(t_ε) z̃` (its `E_{q_1}[log π]` with `‖x̃‖²`), and the mean
/// bounds `E_z̃[log p_{t_ε}(x̃)]`, the quantity [`ode_log_density`] estimates then.
///
/// **The bound** (Song, Durkan, Murray & Ermon 2021, Theorem 1, denoising form; Feng & Bouman
/// 2024, eq. 6). For the SDE `dx = f dt + g dw` run from `x_{t_ε} = x` to `T = 1`, with the
/// conditional `q_t = p(x_t | x_{t_ε} = x)` and the model's score `s = s_θ(x_t, t)`:
///
/// `b(x) = E_{q_1}[log π(x_1)] − ½ ∫_{t_ε}^1 g² E_{q_t}[‖s − ∇log q_t‖² − ‖∇log q_t‖²] dt
///        + ∫_{t_ε}^1 E_{q_t}[∇·f] dt`.
///
/// It is tight (up to `π ≠ p_1`) when `s_θ` is the exact score; otherwise the gap is the
/// divergence between the forward paths from `x` and the model's reverse paths to it.
///
/// **VE** (`score_models` conventions, [`super::VeSde`]): `f = 0`, `σ(t) = σ_min (σ_max /
/// σ_min)^t`, `g² = dσ²/dt = 2 ln(σ_max/σ_min) σ(t)²`. Training perturbs clean images by
/// `σ(t) z`, so `σ(t_ε) > 0`: the SDE's state at `t_ε` is the image blurred by `σ(t_ε)`, and
/// from `x` at `t_ε` the variance grows by `∫ g² = σ(t)² − σ(t_ε)²`:
/// `q_t = N(x, v(t) I)`, `v(t) = σ(t)² − σ(t_ε)²`, `∇log q_t(x_t) = −(x_t − x)/v(t) = −z/√v`
/// for `x_t = x + √v z`. The integrand is then `‖s‖² + 2 s·z/√v`, and
/// `E_{q_1}[log π] = −D/2 ln(2π σ_max²) − (‖x‖² + D v(1)) / (2 σ_max²)` in closed form.
/// (VP, the same way: `x_t = m x + √v z` with `m = μ(t)/μ(t_ε)`, `v = σ(t)² − m² σ(t_ε)²`,
/// `∇·f = D a(t)`, whose integral is `D ln(μ(1)/μ(t_ε))`; `π = N(0, I)`.)
///
/// **The boundary at `t_ε`.** `v(t_ε) = 0`: `∇log q` is singular there. The mean of
/// `2 s·z/√v` stays finite (Stein: `E[s·z] = √v E[∇·s]`) but its variance grows like `1/v`;
/// the weight `g² ∝ σ(t)²` is smallest there, and the draws are stratified in t (`samples/2`
/// equal strata, two independent draws in each), so that the between-time variation, the
/// largest part of the variance, does not enter. The standard error is the within-stratum
/// spread, `√(Σ_k (h_k1 − h_k2)²/4) / S`. Uniform t is, for VE, the importance density
/// `∝ g²/σ²` of Song et al.
///
/// **No reconstruction term.** The bound is on `p_{t_ε}`, the density the ODE estimates, not
/// on the σ = 0 density of the clean image: that would need a decoder `p(x | x_{t_ε})` and its
/// reconstruction term `E_q[log p(x | x_{t_ε})]`, meaningful for 8-bit data, not for our
/// continuous normalised images. So the ELBO is directly comparable with the ODE value
/// (`b ≤ log p` up to their standard errors, tested on a Gaussian prior).
///
/// One score evaluation per draw, no backward pass: several times cheaper than the ODE.
/// The observer advances by one per network batch.
pub fn elbo<P: LogDensityPrior + ?Sized>(
    model: &P,
    images: &Tensor,
    opts: &ElboOptions,
    obs: &dyn Observer,
) -> Result<Vec<LogDensity>> {
    at_least("the number of ELBO samples", opts.samples, 2)?;
    if !opts.samples.is_multiple_of(2) {
        return Err(LogpError::OddSamples(opts.samples));
    }
    at_least("the network batch", opts.batch, 1)?;
    let (x_all, n, side) = checked_images(model, images)?;
    let d = side * side;
    let dev = model.device().clone();
    let sde = model.sde();
    let t0 = model.t_eps();
    let (mu0, sig0) = (sde.mu(t0), sde.sigma(t0));
    let strata = opts.samples / 2;
    let prior_var = sde.prior_std().powi(2);
    let x_host: Vec<f32> = x_all.flatten_all()?.to_vec1()?;

    // The draw of sample j of an image: stratum j/2, the time and the noise from the image's
    // generator (re-seeded per image, so that all images see the same draws).
    struct Row {
        image: usize,
        t: f64,
        m: f64,
        sqrt_v: f64,
        z: Vec<f32>,
        /// The noise of the starting point (`Point::Noisy`), σ(t_ε) z̃.
        start: Option<Vec<f32>>,
    }
    let prior_term = |norm2: f64| {
        let m1 = sde.mu(1.0) / mu0;
        let v1 = sde.sigma(1.0).powi(2) - (m1 * sig0).powi(2);
        -0.5 * d as f64 * (2.0 * PI * prior_var).ln()
            - (m1 * m1 * norm2 + d as f64 * v1) / (2.0 * prior_var)
            + d as f64 * (sde.mu(1.0) / mu0).ln()
    };
    let mut sums: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.samples); n];
    let mut pending: Vec<Row> = Vec::with_capacity(opts.batch);
    let flush = |rows: &mut Vec<Row>, sums: &mut [Vec<f64>]| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let b = rows.len();
        let mut xt = Vec::with_capacity(b * d);
        let mut constants = Vec::with_capacity(b);
        for r in rows.iter() {
            let x = &x_host[r.image * d..(r.image + 1) * d];
            let x0: Vec<f64> = match &r.start {
                Some(n) => x
                    .iter()
                    .zip(n)
                    .map(|(&a, &e)| a as f64 + e as f64)
                    .collect(),
                None => x.iter().map(|&a| a as f64).collect(),
            };
            constants.push(prior_term(x0.iter().map(|v| v * v).sum()));
            xt.extend(
                x0.iter()
                    .zip(&r.z)
                    .map(|(&xi, &zi)| (r.m * xi + r.sqrt_v * zi as f64) as f32),
            );
        }
        let xt = Tensor::from_vec(xt, (b, 1, side, side), &dev)?;
        let ts: Vec<f64> = rows.iter().map(|r| r.t).collect();
        let s: Vec<f32> = model.score_rows(&xt, &ts)?.flatten_all()?.to_vec1()?;
        for ((r, s), c) in rows.iter().zip(s.chunks(d)).zip(constants) {
            let (mut ss, mut sz) = (0.0f64, 0.0f64);
            for (&si, &zi) in s.iter().zip(&r.z) {
                ss += si as f64 * si as f64;
                sz += si as f64 * zi as f64;
            }
            let g2 = sde.diffusion(r.t).powi(2);
            let h = -0.5 * (1.0 - t0) * g2 * (ss + 2.0 * sz / r.sqrt_v);
            sums[r.image].push(c + h);
        }
        rows.clear();
        check_candle(obs)?;
        obs.advance(1);
        Ok(())
    };
    for image in 0..n {
        let mut rng = StdRng::seed_from_u64(opts.seed ^ ELBO_STREAM);
        for j in 0..opts.samples {
            let k = (j / 2) as f64;
            // 1 − U ∈ (0, 1]: t > t_ε, so that v > 0.
            let u = 1.0 - rng.random::<f64>();
            let t = t0 + (1.0 - t0) * (k + u) / strata as f64;
            let m = sde.mu(t) / mu0;
            let v = sde.sigma(t).powi(2) - (m * sig0).powi(2);
            let z: Vec<f32> = (0..d)
                .map(|_| rng.sample::<f32, _>(StandardNormal))
                .collect();
            let start = match opts.point {
                Point::Image => None,
                Point::Noisy => Some(
                    (0..d)
                        .map(|_| (sig0 * rng.sample::<f64, _>(StandardNormal)) as f32)
                        .collect(),
                ),
            };
            pending.push(Row {
                image,
                t,
                m,
                sqrt_v: v.max(f64::MIN_POSITIVE).sqrt(),
                z,
                start,
            });
            if pending.len() == opts.batch {
                flush(&mut pending, &mut sums)?;
            }
        }
    }
    flush(&mut pending, &mut sums)?;

    let mut out = Vec::with_capacity(n);
    for (image, h) in sums.iter().enumerate() {
        let nats = h.iter().sum::<f64>() / h.len() as f64;
        let within: f64 = h.chunks(2).map(|p| (p[0] - p[1]).powi(2) / 4.0).sum();
        let std_err = within.sqrt() / strata as f64;
        if !(nats.is_finite() && std_err.is_finite()) {
            return Err(LogpError::Diverged {
                what: "ELBO",
                index: image,
            });
        }
        out.push(LogDensity {
            nats,
            std_err,
            dims: d,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Quiet;
    use crate::prior::sde::{SdeConfig, VeSde};
    use candle_core::Device;

    /// An isotropic Gaussian `N(0, s² I)` on 4×4 images, its exact VE score.
    struct Iso {
        sde: SdeConfig,
        s2: f64,
        dev: Device,
    }
    impl PriorScore for Iso {
        fn score(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
            x.affine(-1.0 / (self.s2 + self.sde.sigma(t).powi(2)), 0.0)
        }
        fn sde(&self) -> &SdeConfig {
            &self.sde
        }
        fn image_size(&self) -> usize {
            4
        }
        fn t_eps(&self) -> f64 {
            1e-5
        }
        fn device(&self) -> &Device {
            &self.dev
        }
    }
    impl LogDensityPrior for Iso {}

    fn iso() -> Iso {
        Iso {
            sde: SdeConfig::Ve(VeSde::new(1e-3, 50.0)),
            s2: 0.25,
            dev: Device::Cpu,
        }
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let m = iso();
        let opts = OdeOptions::default();
        let wrong = Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let e = ode_log_density(&m, &wrong, &opts, &Quiet).unwrap_err();
        assert!(matches!(e, LogpError::Shape { size: 4, .. }), "{e}");
        assert!(e.to_string().contains("4×4"), "{e}");
        let empty = Tensor::zeros((0, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            elbo(&m, &empty, &ElboOptions::default(), &Quiet),
            Err(LogpError::Empty)
        ));
        let mut v = vec![0.0f32; 32];
        v[20] = f32::NAN;
        let nan = Tensor::from_vec(v, (2, 1, 4, 4), &Device::Cpu).unwrap();
        let e = elbo(&m, &nan, &ElboOptions::default(), &Quiet).unwrap_err();
        assert!(
            matches!(e, LogpError::NonFinite { index: 1, count: 1 }),
            "{e}"
        );
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let one_probe = OdeOptions {
            probes: 1,
            ..Default::default()
        };
        let e = ode_log_density(&m, &x, &one_probe, &Quiet).unwrap_err();
        assert!(e.to_string().contains("probes must be at least 2"), "{e}");
        let odd = ElboOptions {
            samples: 7,
            ..Default::default()
        };
        assert!(matches!(
            elbo(&m, &x, &odd, &Quiet),
            Err(LogpError::OddSamples(7))
        ));
    }

    /// A score built outside the autograd (through the host) is refused, not integrated with
    /// a zero divergence.
    #[test]
    fn a_score_without_gradient_is_refused() {
        struct Host(Iso);
        impl PriorScore for Host {
            fn score(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
                let v: Vec<f32> = self.0.score(x, t)?.flatten_all()?.to_vec1()?;
                Tensor::from_vec(v, x.shape(), x.device())
            }
            fn sde(&self) -> &SdeConfig {
                self.0.sde()
            }
            fn image_size(&self) -> usize {
                4
            }
            fn t_eps(&self) -> f64 {
                1e-5
            }
            fn device(&self) -> &Device {
                &self.0.dev
            }
        }
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let e = ode_log_density(&Host(iso()), &x, &OdeOptions::default(), &Quiet).unwrap_err();
        assert!(matches!(e, LogpError::NoGradient), "{e}");
    }

    /// The isotropic case in closed form: the Rademacher estimate is exact (zero spread), and
    /// the ODE lands on `log N(x; 0, (s² + σ(t_ε)²) I)` up to the integrator and the prior at T.
    #[test]
    fn isotropic_gaussian_in_closed_form() {
        let m = iso();
        let v: Vec<f32> = (0..16).map(|i| ((i as f32) * 0.37).sin() * 0.5).collect();
        let norm2: f64 = v.iter().map(|&a| a as f64 * a as f64).sum();
        let x = Tensor::from_vec(v, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let var0 = m.s2 + m.sde.sigma(1e-5).powi(2);
        let exact = log_normal(norm2, var0, 16);
        let opts = OdeOptions {
            steps: 40,
            probes: 3,
            point: Point::Image,
            ..Default::default()
        };
        let r = ode_log_density(&m, &x, &opts, &Quiet).unwrap()[0];
        assert!(r.std_err < 1e-3, "{r:?}");
        assert!((r.nats - exact).abs() < 0.02, "{r:?} vs {exact}");
        assert_eq!(r.dims, 16);
        assert!((r.bits_per_dim() + r.nats / (16.0 * LN_2)).abs() < 1e-12);
        let opts = ElboOptions {
            point: Point::Image,
            ..Default::default()
        };
        let b = elbo(&m, &x, &opts, &Quiet).unwrap()[0];
        assert!(b.nats <= exact + 3.0 * b.std_err, "{b:?} vs {exact}");
        assert!((b.nats - exact).abs() < 3.0 * b.std_err + 0.05, "{b:?}");
    }
}
