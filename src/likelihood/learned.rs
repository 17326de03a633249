//! A learned (score-based) noise likelihood (Legin et al. 2023; Adam et al. 2023, "Echoes in
//! the noise"): a score network `s_η(τ, n)` trained by denoising score matching on noise-only
//! cutouts stands in for `∇ log p(n)`, and with `y = A x + n`
//!
//! `∇_x log p(y | x) = −Aᵀ ∇_n log p(n)|_{n = y − A x}`.
//!
//! **Noisy diffusion states.** The sampler evaluates the likelihood at `x_t = μ_t x + σ_t z`.
//! The residual `r_t = μ_t y − A x_t = μ_t n − σ_t A z`, i.e. `r_t/μ_t = n + (σ_t/μ_t) A z`:
//! the noise plus Gaussian noise of covariance `(σ_t/μ_t)² A Aᵀ`. A noise model trained with
//! its own diffusion knows the density of `n + ρ w` (w white) for every ρ it was trained on, so
//! we take `A Aᵀ ≈ γ I` and evaluate it at the noise-model time τ with
//! `σ_η(τ)/μ_η(τ) = ρ = σ_t √γ / (μ_t s)` (s: the noise model's pixel scale). This is the
//! convolved likelihood of the Gaussian case with the learned density in place of `N(0, Σ)`:
//! for Gaussian noise of covariance Σ it is exactly `Aᵀ(μ_t² Σ + σ_t² γ I)⁻¹(μ_t y − A x_t)`,
//! which for white noise is [`super::GaussianLikelihood`]'s CLA with `Γ = γ`.
//!
//! `γ` is one number, the largest of `diag(A Aᵀ)` by default: overestimating the added noise
//! only tempers the likelihood at high `σ_t` (where the prior dominates anyway), while
//! underestimating it makes the likelihood score stiff. [`LearnedNoiseLikelihood::set_gamma`]
//! overrides it (e.g. with `‖A Aᵀ‖` for a wide PSF).
//!
//! Outside the noise model's trained range: below its smallest ρ the network is evaluated at
//! `t_eps` (noise smoothed by a negligible σ_min); above its largest ρ the smoothed density is
//! Gaussian to within `1/ρ²` and its score `−u/(1 + ρ²)` (unit-variance normalised noise) is
//! used.
//!
//! **Data larger than the network.** The network works on `N × N` cutouts (its training
//! size). Data of another shape (`dy, dx ≥ N`) are cut into `N × N` tiles on a regular grid,
//! the last row/column of tiles shifted back to end at the edge; each datum takes its score
//! from the tile of the regular grid that owns it. Noise correlations across tile edges are
//! thereby ignored (a tile sees its neighbours' pixels only through the network's zero
//! padding).

use candle_core::{Device, Tensor};

use super::{LikelihoodError, LikelihoodScore};
use crate::operator::ForwardOperator;
use crate::prior::sde::{Sde, SdeConfig};
use crate::prior::{ImageStack, Normalisation, ScoreModel};

pub struct LearnedNoiseLikelihood<A: ForwardOperator> {
    op: A,
    y: Vec<f32>,
    data_shape: [usize; 2],
    model: ScoreModel,
    /// Tile origins `[y0, x0]` in the data plane, row-major over the tile grid.
    tiles: Vec<[usize; 2]>,
    tiles_x: usize,
    /// Noise pixel rms in data units (the model's `NoiseRms` scale).
    rms: f64,
    gamma: f64,
}

impl<A: ForwardOperator> LearnedNoiseLikelihood<A> {
    /// `y`: the data, row-major `data_shape = [dy, dx]` with `dy·dx == op.data_len()`.
    /// `model`: a noise score model trained on noise cutouts with the `NoiseRms`
    /// normalisation (`interf-image noise train`), in the data's units.
    pub fn new(
        op: A,
        y: Vec<f32>,
        data_shape: [usize; 2],
        model: ScoreModel,
    ) -> Result<Self, LikelihoodError> {
        let [dy, dx] = data_shape;
        if dy * dx != op.data_len() {
            return Err(LikelihoodError::Length {
                what: "data shape (dy·dx)",
                expected: op.data_len(),
                got: dy * dx,
            });
        }
        if y.len() != op.data_len() {
            return Err(LikelihoodError::Length {
                what: "data vector",
                expected: op.data_len(),
                got: y.len(),
            });
        }
        let rms = match model.config().normalisation {
            Normalisation::NoiseRms { rms } if rms.is_finite() && rms > 0.0 => rms,
            other => {
                return Err(LikelihoodError::NoiseModel(format!(
                    "the model was not trained as a noise model (normalisation {other:?}; \
                     expected noise_rms from `interf-image noise train`)"
                )))
            }
        };
        let n = model.image_size();
        if dy < n || dx < n {
            return Err(LikelihoodError::NoiseModel(format!(
                "data of {dy}×{dx} are smaller than the noise model's {n}×{n} cutouts"
            )));
        }
        let starts =
            |d: usize| -> Vec<usize> { (0..d.div_ceil(n)).map(|k| (k * n).min(d - n)).collect() };
        let (sy, sx) = (starts(dy), starts(dx));
        let tiles = sy
            .iter()
            .flat_map(|&a| sx.iter().map(move |&b| [a, b]))
            .collect();
        let gamma = op.diag_aat().iter().fold(0.0f64, |m, &g| m.max(g as f64));
        Ok(Self {
            op,
            y,
            data_shape,
            model,
            tiles,
            tiles_x: sx.len(),
            rms,
            gamma,
        })
    }

    /// Replaces the scalar `γ ≈ A Aᵀ` of the added diffusion noise (see the module docs).
    pub fn set_gamma(&mut self, gamma: f64) -> Result<(), LikelihoodError> {
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(LikelihoodError::NoiseModel(format!(
                "γ must be positive and finite, got {gamma}"
            )));
        }
        self.gamma = gamma;
        Ok(())
    }

    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// Pixel rms of the noise the model was trained on, in data units.
    pub fn noise_rms(&self) -> f64 {
        self.rms
    }

    pub fn operator(&self) -> &A {
        &self.op
    }

    pub fn data(&self) -> &[f32] {
        &self.y
    }

    pub fn model(&self) -> &ScoreModel {
        &self.model
    }

    /// `∇_n log p_ρ(n)`, the score of the noise smoothed by white noise of std `ρ·rms`, for a
    /// batch of residuals (data units, `B · data_len`), into `out`.
    pub fn noise_score(&self, r: &[f32], rho: f64, out: &mut [f32]) -> Result<(), LikelihoodError> {
        let m = self.op.data_len();
        let b = r.len() / m;
        let n = self.model.image_size();
        let [_, dx] = self.data_shape;
        let nt = self.tiles.len();
        let inv = 1.0 / self.rms;
        // Normalised tiles (B·T, 1, N, N).
        let mut u = vec![0.0f32; b * nt * n * n];
        for (c, rc) in r.chunks(m).enumerate() {
            for (k, &[y0, x0]) in self.tiles.iter().enumerate() {
                let dst = &mut u[(c * nt + k) * n * n..(c * nt + k + 1) * n * n];
                for i in 0..n {
                    let src = &rc[(y0 + i) * dx + x0..(y0 + i) * dx + x0 + n];
                    for (d, s) in dst[i * n..(i + 1) * n].iter_mut().zip(src) {
                        *d = (*s as f64 * inv) as f32;
                    }
                }
            }
        }
        let su = self.normalised_score(u, b * nt, rho)?;
        // Scatter: each datum from the tile of the regular grid that owns it; chain rule
        // through u = n / rms.
        for (c, oc) in out.chunks_mut(m).enumerate() {
            for (p, o) in oc.iter_mut().enumerate() {
                let (py, px) = (p / dx, p % dx);
                let (ky, kx) = (
                    (py / n).min(self.tiles.len() / self.tiles_x - 1),
                    (px / n).min(self.tiles_x - 1),
                );
                let k = ky * self.tiles_x + kx;
                let [y0, x0] = self.tiles[k];
                let idx = (c * nt + k) * n * n + (py - y0) * n + (px - x0);
                *o = (su[idx] as f64 * inv) as f32;
            }
        }
        Ok(())
    }

    /// Score of `u + ρ w` (u: unit-rms normalised noise) at a batch of `nb` tiles.
    fn normalised_score(
        &self,
        u: Vec<f32>,
        nb: usize,
        rho: f64,
    ) -> Result<Vec<f32>, LikelihoodError> {
        let n = self.model.image_size();
        let sde = self.model.sde();
        let t_eps = self.model.config().t_eps;
        let ratio = |t: f64| sde.sigma(t) / sde.mu(t);
        if rho > ratio(1.0) {
            // Beyond the trained range the smoothed density is Gaussian to O(1/ρ²).
            let f = -1.0 / (1.0 + rho * rho);
            return Ok(u.into_iter().map(|v| (v as f64 * f) as f32).collect());
        }
        let tau = time_of_ratio(sde, rho, t_eps);
        let mu = sde.mu(tau);
        // p(u + ρw) at u is μ_η · p_τ(μ_η u) with σ_η/μ_η = ρ: the model's marginal at τ is
        // that of μ_η (u + ρ w).
        let x = Tensor::from_vec(u, (nb, 1, n, n), &Device::Cpu)?
            .to_device(self.model.device())?
            .affine(mu, 0.0)?;
        let s = self.model.score(&x, tau)?.affine(mu, 0.0)?;
        Ok(s.flatten_all()?.to_device(&Device::Cpu)?.to_vec1()?)
    }

    fn score_batch(
        &self,
        xs: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grads: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        let npix = self.op.image_len();
        let m = self.op.data_len();
        let b = xs.len() / npix;
        let mut r = vec![0.0f32; b * m];
        for (rc, xc) in r.chunks_mut(m).zip(xs.chunks(npix)) {
            self.op.forward(xc, rc);
            for (ri, yi) in rc.iter_mut().zip(&self.y) {
                *ri = mu_t * yi - *ri;
            }
        }
        // r/μ = n + ρ·rms·w; the score in r is the score in n divided by μ.
        let (mu, sig) = (mu_t as f64, sigma_t as f64);
        let rho = sig * self.gamma.sqrt() / (mu * self.rms);
        let inv_mu = (1.0 / mu) as f32;
        r.iter_mut().for_each(|v| *v *= inv_mu);
        let mut sn = vec![0.0f32; b * m];
        self.noise_score(&r, rho, &mut sn)?;
        // ∇_{x_t} log p(r_t) = −Aᵀ ∇_r, with ∇_r = ∇_n / μ.
        let f = -inv_mu;
        sn.iter_mut().for_each(|v| *v *= f);
        for (gc, sc) in grads.chunks_mut(npix).zip(sn.chunks(m)) {
            self.op.adjoint(sc, gc);
        }
        Ok(())
    }
}

/// Training tiles for a noise model: every `n × n` non-overlapping tile of every image of
/// `stack` (no resampling, which would change the noise), leaving out tiles with blank pixels
/// (NaN, which the loaders store as 0, or exact zeros of zero-filled edges).
pub fn noise_tiles(stack: &ImageStack, n: usize) -> Result<ImageStack, LikelihoodError> {
    if n == 0 || stack.h < n || stack.w < n {
        return Err(LikelihoodError::NoiseModel(format!(
            "noise images of {}×{} are smaller than the {n}×{n} tiles",
            stack.h, stack.w
        )));
    }
    let mut data = Vec::new();
    let mut count = 0;
    for i in 0..stack.n {
        let img = stack.image(i);
        for ty in 0..stack.h / n {
            for tx in 0..stack.w / n {
                let tile: Vec<f32> = (0..n)
                    .flat_map(|r| {
                        let o = (ty * n + r) * stack.w + tx * n;
                        img[o..o + n].iter().copied()
                    })
                    .collect();
                if tile.iter().all(|v| v.is_finite() && *v != 0.0) {
                    data.extend_from_slice(&tile);
                    count += 1;
                }
            }
        }
    }
    if count == 0 {
        return Err(LikelihoodError::NoiseModel(format!(
            "no {n}×{n} tile without blank (zero or NaN) pixels"
        )));
    }
    Ok(ImageStack::new(count, n, n, data))
}

/// The noise-model time τ ∈ [t_eps, 1] with σ(τ)/μ(τ) = ρ (clamped), by bisection: the ratio
/// rises monotonically with t for both SDEs.
fn time_of_ratio(sde: &SdeConfig, rho: f64, t_eps: f64) -> f64 {
    let ratio = |t: f64| sde.sigma(t) / sde.mu(t);
    if rho <= ratio(t_eps) {
        return t_eps;
    }
    if let SdeConfig::Ve(ve) = sde {
        return ((rho / ve.sigma_min).ln() / (ve.sigma_max / ve.sigma_min).ln()).clamp(t_eps, 1.0);
    }
    let (mut lo, mut hi) = (t_eps, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if ratio(mid) < rho {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

impl<A: ForwardOperator> LikelihoodScore for LearnedNoiseLikelihood<A> {
    fn image_shape(&self) -> [usize; 2] {
        self.op.image_shape()
    }

    fn score_t(
        &self,
        x_t: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grad: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        self.score_batch(x_t, mu_t, sigma_t, grad)
    }

    fn score_t_batch(
        &self,
        xs: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grads: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        self.score_batch(xs, mu_t, sigma_t, grads)
    }

    fn score_x0_batch(&self, xs: &[f32], grads: &mut [f32]) -> Result<(), LikelihoodError> {
        self.score_batch(xs, 1.0, 0.0, grads)
    }

    /// The pixel rms over `√γ`. Noise whose smallest mode is far below its pixel rms (strong
    /// correlations) is dominated by the data at smaller scales still; the sampler's tenth of
    /// this covers modes down to about a tenth of the rms.
    fn data_noise_scale(&self) -> f64 {
        self.rms / self.gamma.sqrt()
    }

    /// White χ² per datum with the noise model's pixel rms (correlations ignored).
    fn reduced_chi2(&self, x: &[f32]) -> f64 {
        let mut r = vec![0.0f32; self.op.data_len()];
        self.op.forward(x, &mut r);
        let v = self.rms * self.rms;
        r.iter()
            .zip(&self.y)
            .map(|(ri, yi)| ((yi - ri) as f64).powi(2) / v)
            .sum::<f64>()
            / r.len() as f64
    }
}
