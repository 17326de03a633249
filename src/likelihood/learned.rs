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
        if r.len() != b * m || out.len() != r.len() {
            return Err(LikelihoodError::Length {
                what: "batch of residuals (and scores)",
                expected: b.max(1) * m,
                got: if out.len() != r.len() {
                    out.len()
                } else {
                    r.len()
                },
            });
        }
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
        if xs.len() != b * npix || grads.len() != xs.len() {
            return Err(LikelihoodError::Length {
                what: "batch of images (and gradients)",
                expected: b.max(1) * npix,
                got: if grads.len() != xs.len() {
                    grads.len()
                } else {
                    xs.len()
                },
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::checkpoint::{CheckpointConfig, TrainingInfo, FORMAT_VERSION};
    use crate::prior::model::new_unet;
    use crate::prior::sde::{VeSde, VpSde};
    use crate::prior::UNetConfig;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    /// `y = scale · x` on an `ny × nx` image.
    struct ScaledIdentity {
        shape: [usize; 2],
        scale: f32,
    }

    impl ForwardOperator for ScaledIdentity {
        fn image_shape(&self) -> [usize; 2] {
            self.shape
        }
        fn data_len(&self) -> usize {
            self.shape[0] * self.shape[1]
        }
        fn forward(&self, x: &[f32], y: &mut [f32]) {
            y.iter_mut().zip(x).for_each(|(a, b)| *a = self.scale * b);
        }
        fn adjoint(&self, r: &[f32], x: &mut [f32]) {
            x.iter_mut().zip(r).for_each(|(a, b)| *a = self.scale * b);
        }
        fn diag_aat(&self) -> Vec<f32> {
            vec![self.scale * self.scale; self.data_len()]
        }
    }

    /// A noise model with random (not zero-initialised) weights: its output is a non-trivial
    /// function of every input pixel, which is what the tiling checks need.
    fn random_model(side: usize, sde: SdeConfig, norm: Normalisation) -> ScoreModel {
        let cfg = UNetConfig::tiny(side);
        let (net, varmap) = new_unet(&cfg, 1, &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(4);
        // Sorted by name: HashMap order differs between maps, and two models built here must
        // get the same weights.
        let vars = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for v in names.into_iter().map(|k| &vars[k]) {
            let n = v.elem_count();
            let r: Vec<f32> = (0..n)
                .map(|_| 0.3 * rng.sample::<f32, _>(StandardNormal))
                .collect();
            v.set(&Tensor::from_vec(r, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        let config = CheckpointConfig {
            format_version: FORMAT_VERSION,
            network: cfg,
            sde,
            image_size: side,
            t_eps: 1e-5,
            normalisation: norm,
            training: TrainingInfo::default(),
        };
        ScoreModel::from_parts(net, config, Device::Cpu)
    }

    fn ve() -> SdeConfig {
        SdeConfig::Ve(VeSde::new(0.01, 10.0))
    }

    #[test]
    fn tiled_score_is_the_score_of_each_owning_tile() {
        let n = 8;
        let rms = 0.7;
        let norm = Normalisation::NoiseRms { rms };
        let shape = [16, 12];
        let m = shape[0] * shape[1];
        let op = ScaledIdentity { shape, scale: 1.0 };
        let full =
            LearnedNoiseLikelihood::new(op, vec![0.0; m], shape, random_model(n, ve(), norm))
                .unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let r: Vec<f32> = (0..2 * m).map(|_| rng.sample(StandardNormal)).collect();
        let rho = 0.3;
        let mut got = vec![0.0f32; 2 * m];
        full.noise_score(&r, rho, &mut got).unwrap();
        let single = LearnedNoiseLikelihood::new(
            ScaledIdentity {
                shape: [n, n],
                scale: 1.0,
            },
            vec![0.0; n * n],
            [n, n],
            random_model(n, ve(), norm),
        )
        .unwrap();
        // Tiles start at rows {0, 8} and columns {0, 4} (the last column of tiles shifted
        // back to end at the edge); columns 0..8 belong to the first, 8..12 to the second.
        for c in 0..2 {
            for (y0, x0) in [(0, 0), (0, 4), (8, 0), (8, 4)] {
                let tile: Vec<f32> = (0..n * n)
                    .map(|p| r[c * m + (y0 + p / n) * shape[1] + x0 + p % n])
                    .collect();
                let mut s = vec![0.0f32; n * n];
                single.noise_score(&tile, rho, &mut s).unwrap();
                for (p, &sp) in s.iter().enumerate() {
                    let (py, px) = (y0 + p / n, x0 + p % n);
                    let owner_x0 = if px < 8 { 0 } else { 4 };
                    if owner_x0 == x0 {
                        let g = got[c * m + py * shape[1] + px];
                        assert!((g - sp).abs() <= 1e-5 * (1.0 + sp.abs()), "{g} vs {}", sp);
                    }
                }
            }
        }
        assert!(got.iter().any(|v| v.abs() > 1e-3), "trivial scores");
    }

    #[test]
    fn score_t_chain_rule_and_gaussian_limit() {
        let n = 8;
        let rms = 0.5;
        let shape = [n, n];
        let scale = 2.0f32;
        let mut rng = StdRng::seed_from_u64(3);
        let y: Vec<f32> = (0..n * n).map(|_| rng.sample(StandardNormal)).collect();
        let x: Vec<f32> = (0..n * n).map(|_| rng.sample(StandardNormal)).collect();
        let lik = LearnedNoiseLikelihood::new(
            ScaledIdentity { shape, scale },
            y.clone(),
            shape,
            random_model(n, ve(), Normalisation::NoiseRms { rms }),
        )
        .unwrap();
        assert_eq!(lik.gamma(), 4.0);
        // Inside the trained range: −Aᵀ ∇_n log p_ρ((μ y − A x)/μ) / μ, ρ = σ√γ/(μ rms).
        let (mu, sigma) = (0.8f32, 0.1f32);
        let mut g = vec![0.0f32; n * n];
        lik.score_t(&x, mu, sigma, &mut g).unwrap();
        let r: Vec<f32> = y
            .iter()
            .zip(&x)
            .map(|(a, b)| (mu * a - scale * b) / mu)
            .collect();
        let rho = sigma as f64 * 2.0 / (mu as f64 * rms);
        let mut sn = vec![0.0f32; n * n];
        lik.noise_score(&r, rho, &mut sn).unwrap();
        for (a, b) in g.iter().zip(&sn) {
            let want = -scale * b / mu;
            assert!(
                (a - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{a} vs {want}"
            );
        }
        // Far above the trained range: the Gaussian limit, −r/(rms² (1 + ρ²)) per datum.
        let sigma = 200.0f32;
        lik.score_t(&x, 1.0, sigma, &mut g).unwrap();
        let rho = sigma as f64 * 2.0 / rms;
        for i in 0..n * n {
            let r = (y[i] - scale * x[i]) as f64;
            let want = scale as f64 * r / (rms * rms * (1.0 + rho * rho));
            assert!((g[i] as f64 - want).abs() <= 1e-6 + 1e-4 * want.abs());
        }
    }

    #[test]
    fn noise_time_matches_the_added_noise() {
        let vp = SdeConfig::Vp(VpSde::new(0.1, 20.0));
        for rho in [0.05, 0.5, 3.0] {
            let t = time_of_ratio(&vp, rho, 1e-5);
            assert!((vp.sigma(t) / vp.mu(t) / rho - 1.0).abs() < 1e-9);
        }
        let v = ve();
        let t = time_of_ratio(&v, 0.2, 1e-5);
        assert!((v.sigma(t) - 0.2).abs() < 1e-12);
        assert_eq!(time_of_ratio(&v, 1e-4, 1e-5), 1e-5);
    }

    #[test]
    fn rejects_non_noise_models_and_small_data() {
        let op = ScaledIdentity {
            shape: [8, 8],
            scale: 1.0,
        };
        let peak = Normalisation::PerImagePeak { typical_peak: 1.0 };
        let e = LearnedNoiseLikelihood::new(op, vec![0.0; 64], [8, 8], random_model(8, ve(), peak));
        assert!(matches!(e, Err(LikelihoodError::NoiseModel(_))));
        let op = ScaledIdentity {
            shape: [8, 8],
            scale: 1.0,
        };
        let norm = Normalisation::NoiseRms { rms: 1.0 };
        let e =
            LearnedNoiseLikelihood::new(op, vec![0.0; 64], [8, 8], random_model(16, ve(), norm));
        assert!(matches!(e, Err(LikelihoodError::NoiseModel(_))));
    }

    #[test]
    fn noise_tiles_skip_blank_tiles() {
        // Two 16×20 images → 2×2 tiles of 8² each (the last 4 columns unused); one tile of the
        // second image holds a blank pixel.
        let (h, w) = (16, 20);
        let mut data: Vec<f32> = (0..2 * h * w).map(|i| 1.0 + i as f32).collect();
        data[h * w + 9 * w + 10] = 0.0;
        let st = noise_tiles(&ImageStack::new(2, h, w, data.clone()), 8).unwrap();
        assert_eq!((st.n, st.h, st.w), (7, 8, 8));
        // The third tile of the first image starts at row 8, column 0.
        assert_eq!(st.image(2)[0], data[8 * w]);
        assert!(noise_tiles(&ImageStack::new(1, 4, 4, vec![1.0; 16]), 8).is_err());
    }
}
