//! Exponential-of-semicircle ("ES") kernel of Barnett, Magland & af Klinteberg (2019):
//! `φ(z) = exp(β (sqrt(1 − z²) − 1))` on `|z| ≤ 1`, spread over `W` grid cells.
//!
//! The hot loops never call `exp`/`sqrt`: each of the `W` taps is replaced by a polynomial in
//! the sample's sub-cell offset (Horner form, one coefficient row per power so that the `W`
//! taps vectorise), with the degree chosen so that the fit error stays well below epsilon.
//! The grid correction is the kernel's continuous Fourier transform, by Gauss-Legendre
//! quadrature as in finufft.

use super::super::OperatorError;
use std::f64::consts::PI;

/// Largest support the gridding loops are instantiated for.
pub const MAX_SUPPORT: usize = 12;

#[derive(Clone, Debug)]
pub struct EsKernel {
    /// Number of grid cells (taps) the kernel covers in each dimension.
    pub support: usize,
    pub beta: f64,
    /// Ratio of the uv-grid size to the image size.
    pub oversampling: f64,
    /// Degree of the per-tap polynomials.
    pub degree: usize,
    /// `coeffs[d * support + j]`: coefficient of `s^d` for tap `j`, with `s = 2t − 1` and `t`
    /// the sub-cell offset in `[0, 1)`.
    coeffs: Vec<f64>,
    /// Gauss-Legendre rule on `[0, 1]` for the Fourier transform.
    gl_x: Vec<f64>,
    gl_w: Vec<f64>,
}

impl EsKernel {
    /// Support, shape and oversampling for a target accuracy `eps` (finufft's rule for σ = 2:
    /// the aliasing error of the ES kernel falls about tenfold per added tap).
    pub fn from_epsilon(eps: f64) -> Result<Self, OperatorError> {
        if !(eps.is_finite() && (1e-7..=0.1).contains(&eps)) {
            return Err(OperatorError::BadEpsilon(eps));
        }
        let support = ((10.0 / eps).log10() - 1e-9)
            .ceil()
            .clamp(2.0, MAX_SUPPORT as f64) as usize;
        let beta_per_tap = match support {
            2 => 2.20,
            3 => 2.26,
            4 => 2.38,
            _ => 2.30,
        };
        Ok(Self::with_params(
            support,
            beta_per_tap * support as f64,
            2.0,
            eps,
        ))
    }

    pub fn with_params(support: usize, beta: f64, oversampling: f64, eps: f64) -> Self {
        assert!((2..=MAX_SUPPORT).contains(&support));
        let (gl_x, gl_w) = gauss_legendre_unit(32);
        let mut k = Self {
            support,
            beta,
            oversampling,
            degree: 0,
            coeffs: Vec::new(),
            gl_x,
            gl_w,
        };
        // φ has a square-root singularity of size ~e^{−β} at the support edge, which no
        // polynomial resolves quickly; below that level the fit cannot usefully go. The grid
        // correction is computed from the polynomials themselves (see `ft`), so the residual
        // fit error changes the kernel's shape slightly, not the consistency of the transform.
        let target = (eps * 0.05).max(2.0 * (-beta).exp()).max(1e-15);
        for degree in 3..=22 {
            let coeffs = k.fit(degree);
            let err = k.fit_error(&coeffs, degree);
            k.degree = degree;
            k.coeffs = coeffs;
            if err <= target {
                break;
            }
        }
        k
    }

    /// `φ(z)`, zero outside `|z| < 1`.
    pub fn phi(&self, z: f64) -> f64 {
        if z.abs() >= 1.0 {
            return 0.0;
        }
        (self.beta * ((1.0 - z * z).sqrt() - 1.0)).exp()
    }

    /// The kernel at a distance `d` grid cells from the sample.
    pub fn psi(&self, d: f64) -> f64 {
        self.phi(d / (self.support as f64 / 2.0))
    }

    /// Exact value of tap `j` at sub-cell offset `t` (the polynomials approximate this).
    fn tap_exact(&self, j: usize, t: f64) -> f64 {
        self.phi(2.0 * (t + j as f64) / self.support as f64 - 1.0)
    }

    fn fit(&self, degree: usize) -> Vec<f64> {
        let w = self.support;
        let n = degree + 1;
        let mut coeffs = vec![0.0; n * w];
        for j in 0..w {
            // Chebyshev interpolation at the n Chebyshev nodes of s ∈ [−1, 1] ...
            let nodes: Vec<f64> = (0..n)
                .map(|i| (PI * (i as f64 + 0.5) / n as f64).cos())
                .collect();
            let vals: Vec<f64> = nodes
                .iter()
                .map(|&s| self.tap_exact(j, 0.5 * (s + 1.0)))
                .collect();
            let mut cheb = vec![0.0; n];
            for (k, c) in cheb.iter_mut().enumerate() {
                let sum: f64 = (0..n)
                    .map(|i| vals[i] * (PI * k as f64 * (i as f64 + 0.5) / n as f64).cos())
                    .sum();
                *c = sum * 2.0 / n as f64;
            }
            cheb[0] *= 0.5;
            // ... then converted to monomials in s (harmless for these low degrees on [−1, 1]).
            let mut t_prev = vec![0.0; n];
            let mut t_cur = vec![0.0; n];
            t_prev[0] = 1.0;
            let mut mono = vec![0.0; n];
            mono[0] += cheb[0];
            if n > 1 {
                t_cur[1] = 1.0;
                mono[1] += cheb[1];
            }
            for &ck in cheb.iter().skip(2) {
                let mut t_next = vec![0.0; n];
                for d in 0..n {
                    let shifted = if d > 0 { 2.0 * t_cur[d - 1] } else { 0.0 };
                    t_next[d] = shifted - t_prev[d];
                }
                for d in 0..n {
                    mono[d] += ck * t_next[d];
                }
                t_prev = std::mem::replace(&mut t_cur, t_next);
            }
            for d in 0..n {
                coeffs[d * w + j] = mono[d];
            }
        }
        coeffs
    }

    fn fit_error(&self, coeffs: &[f64], degree: usize) -> f64 {
        let w = self.support;
        let mut err: f64 = 0.0;
        for i in 0..=256 {
            let t = i as f64 / 256.0;
            let s = 2.0 * t - 1.0;
            for j in 0..w {
                let mut v = coeffs[degree * w + j];
                for d in (0..degree).rev() {
                    v = v * s + coeffs[d * w + j];
                }
                err = err.max((v - self.tap_exact(j, t)).abs());
            }
        }
        err
    }

    /// Polynomial coefficients, `(degree + 1) × support`, row `d` holding the `s^d` terms.
    pub fn coeffs(&self) -> &[f64] {
        &self.coeffs
    }

    /// One tap by its polynomial (used for the w direction, where one tap per plane is needed).
    #[inline]
    pub fn tap(&self, j: usize, t: f64) -> f64 {
        let w = self.support;
        let s = 2.0 * t - 1.0;
        let mut v = self.coeffs[self.degree * w + j];
        for d in (0..self.degree).rev() {
            v = v * s + self.coeffs[d * w + j];
        }
        v
    }

    /// Continuous Fourier transform `ψ̂(κ) = ∫ ψ(y) cos(2π κ y) dy` (`y` in grid cells) of
    /// the kernel as the gridding loops evaluate it: the piecewise polynomials, tap by tap.
    pub fn ft(&self, kappa: f64) -> f64 {
        let h = self.support as f64 / 2.0;
        let mut sum = 0.0;
        for j in 0..self.support {
            for (&t, &wt) in self.gl_x.iter().zip(&self.gl_w) {
                let y = t + j as f64 - h;
                sum += wt * self.tap(j, t) * (2.0 * PI * kappa * y).cos();
            }
        }
        sum
    }

    /// Largest difference between the polynomial taps and `φ`.
    pub fn fit_max_error(&self) -> f64 {
        self.fit_error(&self.coeffs, self.degree)
    }

    /// A Chebyshev interpolant of `ψ̂` on `[0, kmax]`, for per-pixel corrections where calling
    /// the quadrature for every pixel would cost more than the gridding.
    pub fn ft_interpolant(&self, kmax: f64) -> ChebFn {
        ChebFn::new(|k| self.ft(k), 0.0, kmax.max(1e-12), 48)
    }
}

/// `a·b + c`, fused when the caller was compiled with FMA (`F`); a plain multiply-add
/// otherwise, since `mul_add` without hardware FMA is a slow library call.
#[inline(always)]
pub fn madd<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Evaluates all `W` taps at sub-cell offset `t` from the polynomial table.
#[inline(always)]
pub fn taps<const W: usize, const F: bool>(coeffs: &[f64], degree: usize, t: f64) -> [f64; W] {
    let s = 2.0 * t - 1.0;
    let mut out: [f64; W] = coeffs[degree * W..degree * W + W].try_into().unwrap();
    for d in (0..degree).rev() {
        let c: &[f64; W] = coeffs[d * W..d * W + W].try_into().unwrap();
        for j in 0..W {
            out[j] = madd::<F>(out[j], s, c[j]);
        }
    }
    out
}

/// A smooth function on `[a, b]` as a Chebyshev series, evaluated by Clenshaw's recurrence.
#[derive(Clone, Debug)]
pub struct ChebFn {
    a: f64,
    b: f64,
    c: Vec<f64>,
}

impl ChebFn {
    pub fn new(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> Self {
        let vals: Vec<f64> = (0..n)
            .map(|i| {
                let s = (PI * (i as f64 + 0.5) / n as f64).cos();
                f(a + 0.5 * (s + 1.0) * (b - a))
            })
            .collect();
        let mut c: Vec<f64> = (0..n)
            .map(|k| {
                (0..n)
                    .map(|i| vals[i] * (PI * k as f64 * (i as f64 + 0.5) / n as f64).cos())
                    .sum::<f64>()
                    * 2.0
                    / n as f64
            })
            .collect();
        c[0] *= 0.5;
        Self { a, b, c }
    }

    pub fn eval(&self, x: f64) -> f64 {
        let s = (2.0 * x - self.a - self.b) / (self.b - self.a);
        let (mut b1, mut b2) = (0.0, 0.0);
        for &ck in self.c.iter().skip(1).rev() {
            let b0 = 2.0 * s * b1 - b2 + ck;
            b2 = b1;
            b1 = b0;
        }
        s * b1 - b2 + self.c[0]
    }
}

/// Gauss-Legendre nodes and weights on `[0, 1]` (Newton iteration on `P_n`).
pub fn gauss_legendre_unit(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for i in 0..n {
        let mut z = (PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * z * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            dp = n as f64 * (z * p1 - p0) / (z * z - 1.0);
            let dz = p1 / dp;
            z -= dz;
            if dz.abs() < 1e-16 {
                break;
            }
        }
        x.push(0.5 * (z + 1.0));
        w.push(1.0 / ((1.0 - z * z) * dp * dp));
    }
    (x, w)
}
