//! Shared checks for every [`ForwardOperator`]: the dot-product (adjoint) test
//! `⟨A x, y⟩ = ⟨x, Aᵀ y⟩` on random seeded inputs. Public so that integration tests of any
//! operator, now and later, can call it.

use super::ForwardOperator;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Outcome of a dot-product test.
#[derive(Clone, Copy, Debug)]
pub struct DotTest {
    /// `⟨A x, y⟩`
    pub lhs: f64,
    /// `⟨x, Aᵀ y⟩`
    pub rhs: f64,
    /// `|lhs − rhs| / (‖A x‖ ‖y‖)`: scaled by the Cauchy-Schwarz bound, so that a small
    /// inner product from cancellation does not look like a failure.
    pub rel_err: f64,
}

fn normal_vec(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Dot-product test of linear maps given as closures (`n_in` → `n_out` reals), for f64 paths.
pub fn dot_test_with(
    n_in: usize,
    n_out: usize,
    forward: impl Fn(&[f64]) -> Vec<f64>,
    adjoint: impl Fn(&[f64]) -> Vec<f64>,
    seed: u64,
) -> DotTest {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = normal_vec(&mut rng, n_in);
    let y = normal_vec(&mut rng, n_out);
    let ax = forward(&x);
    let aty = adjoint(&y);
    assert_eq!(ax.len(), n_out, "forward output length");
    assert_eq!(aty.len(), n_in, "adjoint output length");
    let lhs = dot(&ax, &y);
    let rhs = dot(&x, &aty);
    let scale = (norm(&ax) * norm(&y)).max(norm(&x) * norm(&aty));
    let rel_err = if scale > 0.0 {
        (lhs - rhs).abs() / scale
    } else {
        (lhs - rhs).abs()
    };
    DotTest { lhs, rhs, rel_err }
}

/// Dot-product test through the operator's f32 trait methods (accumulated in f64).
pub fn dot_test(op: &dyn ForwardOperator, seed: u64) -> DotTest {
    let (n_in, n_out) = (op.image_len(), op.data_len());
    dot_test_with(
        n_in,
        n_out,
        |x| {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut y = vec![0f32; n_out];
            op.forward(&xf, &mut y);
            y.into_iter().map(f64::from).collect()
        },
        |y| {
            let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
            let mut x = vec![0f32; n_in];
            op.adjoint(&yf, &mut x);
            x.into_iter().map(f64::from).collect()
        },
        seed,
    )
}

/// Runs [`dot_test`] for a few seeds and panics with the numbers when one exceeds `tol`.
/// Also checks shapes and that `diag_aat` has the data length with finite, non-negative entries.
pub fn assert_adjoint(op: &dyn ForwardOperator, tol: f64) {
    for seed in [1u64, 2, 3] {
        let t = dot_test(op, seed);
        assert!(
            t.rel_err <= tol,
            "dot-product test failed (seed {seed}): <Ax,y> = {}, <x,A^T y> = {}, rel {:.3e} > {tol:e}",
            t.lhs,
            t.rhs,
            t.rel_err
        );
    }
    let d = op.diag_aat();
    assert_eq!(d.len(), op.data_len(), "diag_aat length");
    assert!(
        d.iter().all(|v| v.is_finite() && *v >= 0.0),
        "diag_aat must be finite and non-negative"
    );
}

/// Exact `diag(A Aᵀ)` of a small operator from its columns `A e_j` (`image_len` forward calls).
pub fn exact_diag_aat(op: &dyn ForwardOperator) -> Vec<f64> {
    let (n_in, n_out) = (op.image_len(), op.data_len());
    let mut acc = vec![0f64; n_out];
    let mut e = vec![0f32; n_in];
    let mut col = vec![0f32; n_out];
    for j in 0..n_in {
        e[j] = 1.0;
        op.forward(&e, &mut col);
        e[j] = 0.0;
        acc.iter_mut()
            .zip(&col)
            .for_each(|(a, &c)| *a += (c as f64).powi(2));
    }
    acc
}

/// Tolerances of [`check_operator_with`].
#[derive(Clone, Copy, Debug)]
pub struct CheckTolerances {
    /// Dot-product test, relative to the Cauchy–Schwarz bound.
    pub adjoint: f64,
    /// Linearity `A(a x + b y) = a A x + b A y`, relative to the norms.
    pub linearity: f64,
    /// `max_k |diag_k − exact_k| / max_k exact_k` (checked when `image_len ≤ 4096`).
    pub diag: f64,
}

impl Default for CheckTolerances {
    fn default() -> Self {
        Self {
            adjoint: 1e-5,
            linearity: 1e-5,
            diag: 1e-4,
        }
    }
}

/// [`check_operator_with`] at the default tolerances.
pub fn check_operator(op: &dyn ForwardOperator, seed: u64) {
    check_operator_with(op, seed, CheckTolerances::default())
}

/// The suite every operator must pass, panicking with the numbers on a failure: shapes, the
/// dot-product adjoint test on three seeds, linearity of forward and adjoint, and `diag_aat`
/// against the exact `diag(A Aᵀ)` from the columns (for operators of ≤ 4096 pixels).
pub fn check_operator_with(op: &dyn ForwardOperator, seed: u64, tol: CheckTolerances) {
    let [ny, nx] = op.image_shape();
    let (n_in, n_out) = (op.image_len(), op.data_len());
    assert_eq!(n_in, ny * nx, "image_len must be ny·nx");
    assert!(n_in > 0 && n_out > 0, "empty operator");

    for s in 0..3 {
        let t = dot_test(op, seed.wrapping_add(s));
        assert!(
            t.rel_err <= tol.adjoint,
            "dot-product test (seed {}): <Ax,y> = {}, <x,A^T y> = {}, rel {:.3e} > {:e}",
            seed + s,
            t.lhs,
            t.rhs,
            t.rel_err,
            tol.adjoint
        );
    }

    let mut rng = StdRng::seed_from_u64(seed ^ 0xA5A5);
    let f32v = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
    let (a, b) = (0.7f32, -1.3f32);
    for (n, m, apply) in [
        (n_in, n_out, true),  // forward
        (n_out, n_in, false), // adjoint
    ] {
        let x = f32v(normal_vec(&mut rng, n));
        let y = f32v(normal_vec(&mut rng, n));
        let run = |v: &[f32]| {
            let mut o = vec![f32::NAN; m];
            if apply {
                op.forward(v, &mut o)
            } else {
                op.adjoint(v, &mut o)
            }
            o
        };
        let z: Vec<f32> = x.iter().zip(&y).map(|(p, q)| a * p + b * q).collect();
        let (ax, ay, az) = (run(&x), run(&y), run(&z));
        assert!(
            az.iter().all(|v| v.is_finite()),
            "{} output has non-finite values (or was not fully written)",
            if apply { "forward" } else { "adjoint" }
        );
        let err: f64 = az
            .iter()
            .zip(ax.iter().zip(&ay))
            .map(|(&r, (&p, &q))| (r as f64 - (a * p + b * q) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale: f64 = ax
            .iter()
            .chain(&ay)
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            * 2.0;
        assert!(
            err <= tol.linearity * scale.max(f64::MIN_POSITIVE),
            "{} is not linear: error {err:.3e} vs scale {scale:.3e}",
            if apply { "forward" } else { "adjoint" }
        );
    }

    let d = op.diag_aat();
    assert_eq!(d.len(), n_out, "diag_aat length");
    assert!(
        d.iter().all(|v| v.is_finite() && *v >= 0.0),
        "diag_aat must be finite and non-negative"
    );
    if n_in <= 4096 {
        let exact = exact_diag_aat(op);
        let top = exact.iter().cloned().fold(0.0, f64::max);
        let (k, worst) = d
            .iter()
            .zip(&exact)
            .map(|(&g, &e)| (g as f64 - e).abs())
            .enumerate()
            .fold(
                (0, 0.0),
                |(bk, bw), (k, w)| if w > bw { (k, w) } else { (bk, bw) },
            );
        assert!(
            worst <= tol.diag * top,
            "diag_aat[{k}] = {} but exact diag(AAᵀ) = {} (max {top:.4e}, tolerance {:e})",
            d[k],
            exact[k],
            tol.diag
        );
    }
}
