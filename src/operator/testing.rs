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
