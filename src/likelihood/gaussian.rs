//! Gaussian noise with a per-datum σ, and the convolved-likelihood approximation of Adam et al.
//! (2022) for noisy diffusion states:
//!
//! `p_t(y | x_t) ≈ N(μ_t y; A x_t, μ_t² Σ_y + σ_t² Γ)`, `Γ = diag(A Aᵀ)`, so
//! `∇_{x_t} log p = Aᵀ (μ_t y − A x_t) / (μ_t² σ_y² + σ_t² Γ)`.
//!
//! At `σ_t = 0, μ_t = 1` this is the exact Gaussian likelihood score `Aᵀ Σ⁻¹ (y − A x)`.

use super::{LikelihoodError, LikelihoodScore};
use crate::operator::ForwardOperator;

pub struct GaussianLikelihood<A: ForwardOperator> {
    op: A,
    y: Vec<f32>,
    sigma2: Vec<f32>,
    gamma: Vec<f32>,
    /// Weight on the likelihood score (1 = the Bayesian posterior).
    pub alpha: f32,
}

impl<A: ForwardOperator> GaussianLikelihood<A> {
    /// `y` and `sigma` in the operator's data layout (one σ per real datum: for a complex
    /// visibility of standard deviation σ_V per component, give σ_V for both re and im).
    pub fn new(op: A, y: Vec<f32>, sigma: &[f32]) -> Result<Self, LikelihoodError> {
        let n = op.data_len();
        for (what, got) in [("data vector", y.len()), ("noise σ", sigma.len())] {
            if got != n {
                return Err(LikelihoodError::Length {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        if let Some((index, &value)) = sigma
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(LikelihoodError::BadSigma { index, value });
        }
        let gamma = op.diag_aat();
        Ok(Self {
            op,
            y,
            sigma2: sigma.iter().map(|s| s * s).collect(),
            gamma,
            alpha: 1.0,
        })
    }

    /// Multiplies `Γ = diag(A Aᵀ)` datum by datum. The convolved approximation treats data as
    /// independent given `x_t`; when many rows of `A` are nearly parallel (visibilities that
    /// share a uv cell), `‖A Aᵀ‖` exceeds `max Γ` by about their number, the likelihood score
    /// becomes stiff and the reverse SDE diverges. Inflating each datum's Γ by the number of
    /// data it is nearly parallel to restores the right scale.
    pub fn inflate_gamma(&mut self, factors: &[f32]) -> Result<(), LikelihoodError> {
        if factors.len() != self.gamma.len() {
            return Err(LikelihoodError::Length {
                what: "Γ factors",
                expected: self.gamma.len(),
                got: factors.len(),
            });
        }
        self.gamma
            .iter_mut()
            .zip(factors)
            .for_each(|(g, f)| *g *= f);
        Ok(())
    }

    /// The diffusion noise level below which the data dominate every datum's variance:
    /// `min_k σ_k/√Γ_k`. Samplers must carry the reverse diffusion down to a fraction of it,
    /// or the last steps still see a tempered likelihood and the posterior comes out too wide.
    pub fn data_noise_scale(&self) -> f64 {
        self.sigma2
            .iter()
            .zip(&self.gamma)
            .filter(|(_, &g)| g > 0.0)
            .map(|(&v, &g)| (v as f64 / g as f64).sqrt())
            .fold(f64::INFINITY, f64::min)
    }

    pub fn operator(&self) -> &A {
        &self.op
    }

    pub fn data(&self) -> &[f32] {
        &self.y
    }

    /// `∇_{x_t} log p_t(y | x_t)` under the convolved approximation, into `grad`.
    pub fn score(&self, x_t: &[f32], mu_t: f32, sigma_t: f32, grad: &mut [f32]) {
        let mut r = self.weighted_residual(x_t, mu_t, sigma_t);
        r.iter_mut().for_each(|v| *v *= self.alpha);
        self.op.adjoint(&r, grad);
    }

    /// Each datum's variance at a diffusion state: `μ_t² σ_y² + σ_t² Γ`.
    pub(crate) fn variances(&self, mu_t: f32, sigma_t: f32) -> Vec<f32> {
        let (m2, s2) = (mu_t * mu_t, sigma_t * sigma_t);
        self.sigma2
            .iter()
            .zip(&self.gamma)
            .map(|(v, g)| m2 * v + s2 * g)
            .collect()
    }

    /// `(μ_t y − A x_t) / (μ_t² σ_y² + σ_t² Γ)`, datum by datum (without α).
    pub(crate) fn weighted_residual(&self, x_t: &[f32], mu_t: f32, sigma_t: f32) -> Vec<f32> {
        let mut r = vec![0.0f32; self.op.data_len()];
        self.op.forward(x_t, &mut r);
        let (m2, s2) = (mu_t * mu_t, sigma_t * sigma_t);
        for (((ri, yi), vi), gi) in r.iter_mut().zip(&self.y).zip(&self.sigma2).zip(&self.gamma) {
            *ri = (mu_t * yi - *ri) / (m2 * vi + s2 * gi);
        }
        r
    }

    /// `Γ = diag(A Aᵀ)` per datum, as widened by [`Self::inflate_gamma`].
    pub fn gamma(&self) -> &[f32] {
        &self.gamma
    }

    /// Each real datum's noise variance σ².
    pub fn sigma2(&self) -> &[f32] {
        &self.sigma2
    }

    /// `χ² = Σ (y − A x)² / σ²` of a clean image.
    pub fn chi2(&self, x: &[f32]) -> f64 {
        let mut r = vec![0.0f32; self.op.data_len()];
        self.op.forward(x, &mut r);
        r.iter()
            .zip(&self.y)
            .zip(&self.sigma2)
            .map(|((ri, yi), vi)| ((yi - ri) as f64).powi(2) / *vi as f64)
            .sum()
    }

    /// Reduced χ²: χ² over the number of real data.
    pub fn reduced_chi2(&self, x: &[f32]) -> f64 {
        self.chi2(x) / self.y.len() as f64
    }
}

impl<A: ForwardOperator> LikelihoodScore for GaussianLikelihood<A> {
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
        self.score(x_t, mu_t, sigma_t, grad);
        Ok(())
    }
    fn data_noise_scale(&self) -> f64 {
        GaussianLikelihood::data_noise_scale(self)
    }
    fn reduced_chi2(&self, x: &[f32]) -> f64 {
        GaussianLikelihood::reduced_chi2(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dense random matrix as the operator: the simplest independent truth.
    struct Dense {
        a: Vec<f32>,
        ny: usize,
        nx: usize,
        m: usize,
    }

    impl ForwardOperator for Dense {
        fn image_shape(&self) -> [usize; 2] {
            [self.ny, self.nx]
        }
        fn data_len(&self) -> usize {
            self.m
        }
        fn forward(&self, x: &[f32], y: &mut [f32]) {
            let n = x.len();
            for (i, yi) in y.iter_mut().enumerate() {
                *yi = (0..n).map(|j| self.a[i * n + j] * x[j]).sum();
            }
        }
        fn adjoint(&self, r: &[f32], x: &mut [f32]) {
            let n = x.len();
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = (0..self.m).map(|i| self.a[i * n + j] * r[i]).sum();
            }
        }
        fn diag_aat(&self) -> Vec<f32> {
            let n = self.nx * self.ny;
            (0..self.m)
                .map(|i| (0..n).map(|j| self.a[i * n + j].powi(2)).sum())
                .collect()
        }
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn setup() -> (GaussianLikelihood<Dense>, Vec<f32>) {
        let (ny, nx, m) = (3, 4, 7);
        let mut s = 7u64;
        let a: Vec<f32> = (0..m * ny * nx).map(|_| lcg(&mut s)).collect();
        let y: Vec<f32> = (0..m).map(|_| lcg(&mut s)).collect();
        let sigma: Vec<f32> = (0..m).map(|i| 0.1 + 0.05 * i as f32).collect();
        let x: Vec<f32> = (0..ny * nx).map(|_| lcg(&mut s)).collect();
        (
            GaussianLikelihood::new(Dense { a, ny, nx, m }, y, &sigma).unwrap(),
            x,
        )
    }

    #[test]
    fn exact_score_is_gradient_of_log_likelihood() {
        let (lik, x) = setup();
        let mut g = vec![0.0; x.len()];
        lik.score(&x, 1.0, 0.0, &mut g);
        // log p = −χ²/2: central finite differences in f64 via the χ² of perturbed images.
        let h = 1e-2f32;
        for j in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[j] += h;
            xm[j] -= h;
            let fd = -(lik.chi2(&xp) - lik.chi2(&xm)) / (2.0 * 2.0 * h as f64);
            assert!(
                (fd - g[j] as f64).abs() <= 1e-3 * (1.0 + fd.abs()),
                "pixel {j}: finite difference {fd} vs score {}",
                g[j]
            );
        }
    }

    #[test]
    fn convolved_score_inflates_variance_by_sigma_t_gamma() {
        let (lik, x) = setup();
        let (mu, st) = (0.8f32, 0.3f32);
        let mut g = vec![0.0; x.len()];
        lik.score(&x, mu, st, &mut g);
        // Independent evaluation from the formula, with Γ from the operator's rows.
        let op = lik.operator();
        let mut ax = vec![0.0; op.m];
        op.forward(&x, &mut ax);
        let gamma = op.diag_aat();
        let r: Vec<f32> = (0..op.m)
            .map(|i| (mu * lik.y[i] - ax[i]) / (mu * mu * lik.sigma2[i] + st * st * gamma[i]))
            .collect();
        let mut want = vec![0.0; x.len()];
        op.adjoint(&r, &mut want);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn rejects_bad_noise_and_lengths() {
        let (lik, _) = setup();
        let op = Dense {
            a: lik.op.a.clone(),
            ny: 3,
            nx: 4,
            m: 7,
        };
        assert!(matches!(
            GaussianLikelihood::new(op, vec![0.0; 6], &[1.0; 7]),
            Err(LikelihoodError::Length { .. })
        ));
        let op = Dense {
            a: lik.op.a.clone(),
            ny: 3,
            nx: 4,
            m: 7,
        };
        let mut s = [1.0f32; 7];
        s[3] = 0.0;
        assert!(matches!(
            GaussianLikelihood::new(op, vec![0.0; 7], &s),
            Err(LikelihoodError::BadSigma { index: 3, .. })
        ));
    }
}
