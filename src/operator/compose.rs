//! `A ∘ B`: `y = A(B x)`, adjoint `Bᵀ(Aᵀ r)`. A lens (source → sky image) followed by the
//! NUFFT (sky image → visibilities) is a lensed source seen by an interferometer.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;

use super::{ForwardOperator, OperatorError};

/// `outer ∘ inner`.
pub struct Compose<A, B> {
    pub outer: A,
    pub inner: B,
    diag: Vec<f32>,
}

/// Largest `n_in · n_out` for which `diag(A Aᵀ)` is computed exactly, column by column
/// (`n_in` forward applications); above it, by random probing.
pub const EXACT_DIAG_MAX: usize = 1 << 22;
/// Rademacher probes for the estimate of `diag(A Aᵀ)`: relative error ≈ `√(2/K)` per datum
/// for rows with many comparable entries (≈ 18 % at 64), ample for the convolved-likelihood
/// approximation, which only needs the scale of each datum's variance.
pub const DIAG_PROBES: usize = 64;
const DIAG_SEED: u64 = 0x5EED_D1A6;

impl<A: ForwardOperator, B: ForwardOperator> Compose<A, B> {
    pub fn new(outer: A, inner: B) -> Result<Self, OperatorError> {
        if outer.image_len() != inner.data_len() {
            return Err(OperatorError::LengthMismatch {
                what: "composition: outer operator's image vs inner operator's data",
                expected: outer.image_len(),
                got: inner.data_len(),
            });
        }
        let mut c = Self {
            outer,
            inner,
            diag: Vec::new(),
        };
        c.diag = if c.image_len() * c.data_len() <= EXACT_DIAG_MAX {
            c.diag_by_columns()
        } else {
            c.diag_by_probing(DIAG_PROBES, DIAG_SEED)
        };
        Ok(c)
    }

    /// Exact `diag(A Aᵀ)_k = Σ_j A_kj²` from the operator's columns `A e_j`.
    pub fn diag_by_columns(&self) -> Vec<f32> {
        let (n_in, n_out) = (self.image_len(), self.data_len());
        (0..n_in)
            .into_par_iter()
            .fold(
                || vec![0f64; n_out],
                |mut acc, j| {
                    let mut e = vec![0f32; n_in];
                    e[j] = 1.0;
                    let mut col = vec![0f32; n_out];
                    self.forward(&e, &mut col);
                    acc.iter_mut()
                        .zip(&col)
                        .for_each(|(a, &c)| *a += (c as f64).powi(2));
                    acc
                },
            )
            .reduce(
                || vec![0f64; n_out],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    /// Unbiased estimate `diag(A Aᵀ) ≈ mean_k (A z_k)²`, `z_k` Rademacher (±1) vectors from a
    /// fixed seed: `E[(A z)_i²] = Σ_j A_ij²`.
    pub fn diag_by_probing(&self, probes: usize, seed: u64) -> Vec<f32> {
        let (n_in, n_out) = (self.image_len(), self.data_len());
        let mut rng = StdRng::seed_from_u64(seed);
        let mut acc = vec![0f64; n_out];
        let mut y = vec![0f32; n_out];
        for _ in 0..probes {
            let z: Vec<f32> = (0..n_in)
                .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                .collect();
            self.forward(&z, &mut y);
            acc.iter_mut()
                .zip(&y)
                .for_each(|(a, &v)| *a += (v as f64).powi(2));
        }
        acc.into_iter()
            .map(|v| (v / probes.max(1) as f64) as f32)
            .collect()
    }
}

impl<A: ForwardOperator, B: ForwardOperator> ForwardOperator for Compose<A, B> {
    fn image_shape(&self) -> [usize; 2] {
        self.inner.image_shape()
    }

    fn data_len(&self) -> usize {
        self.outer.data_len()
    }

    fn forward(&self, image: &[f32], data: &mut [f32]) {
        let mut mid = vec![0f32; self.inner.data_len()];
        self.inner.forward(image, &mut mid);
        self.outer.forward(&mid, data);
    }

    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        let mut mid = vec![0f32; self.inner.data_len()];
        self.outer.adjoint(data, &mut mid);
        self.inner.adjoint(&mid, image);
    }

    fn diag_aat(&self) -> Vec<f32> {
        self.diag.clone()
    }
}

/// `ForwardOperator` for a pointer to one, forwarding every method.
macro_rules! forward_through_pointer {
    ($(#[$doc:meta])* $ty:ty) => {
        $(#[$doc])*
        impl<T: ForwardOperator + ?Sized> ForwardOperator for $ty {
            fn image_shape(&self) -> [usize; 2] {
                (**self).image_shape()
            }
            fn data_len(&self) -> usize {
                (**self).data_len()
            }
            fn forward(&self, image: &[f32], data: &mut [f32]) {
                (**self).forward(image, data)
            }
            fn adjoint(&self, data: &[f32], image: &mut [f32]) {
                (**self).adjoint(data, image)
            }
            fn diag_aat(&self) -> Vec<f32> {
                (**self).diag_aat()
            }
        }
    };
}

forward_through_pointer!(
    /// A borrowed operator: one NUFFT plan serves a likelihood and the caller's own evaluations.
    &T
);
forward_through_pointer!(
    /// Operators chosen at run time (a lens alone, or composed with a NUFFT) behind one type.
    Box<T>
);
