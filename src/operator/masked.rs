//! `A ∘ diag(m)`: an operator that sees only the pixels of a window (a CLEAN mask). The sky is
//! `m ⊙ x`; pixels outside the window do not reach the data, so under a prior on `x` they keep
//! the prior and are dropped from the sky.

use super::ForwardOperator;

pub struct Masked<A> {
    pub inner: A,
    mask: Vec<bool>,
    inside: usize,
}

impl<A: ForwardOperator> Masked<A> {
    /// `mask` has one entry per pixel of `inner`'s image (row-major), `true` inside.
    pub fn new(inner: A, mask: Vec<bool>) -> Result<Self, super::OperatorError> {
        if mask.len() != inner.image_len() {
            return Err(super::OperatorError::LengthMismatch {
                what: "window (one entry per pixel)",
                expected: inner.image_len(),
                got: mask.len(),
            });
        }
        let inside = mask.iter().filter(|&&m| m).count();
        Ok(Masked {
            inner,
            mask,
            inside,
        })
    }

    pub fn mask(&self) -> &[bool] {
        &self.mask
    }
}

impl<A: ForwardOperator> ForwardOperator for Masked<A> {
    fn image_shape(&self) -> [usize; 2] {
        self.inner.image_shape()
    }
    fn data_len(&self) -> usize {
        self.inner.data_len()
    }
    fn forward(&self, image: &[f32], data: &mut [f32]) {
        let masked: Vec<f32> = image
            .iter()
            .zip(&self.mask)
            .map(|(&v, &m)| if m { v } else { 0.0 })
            .collect();
        self.inner.forward(&masked, data);
    }
    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        self.inner.adjoint(data, image);
        image
            .iter_mut()
            .zip(&self.mask)
            .filter(|(_, &m)| !m)
            .for_each(|(v, _)| *v = 0.0);
    }
    /// `Σ_{j ∈ window} |A_ij|²`: the inner diagonal times the window's share of the pixels,
    /// exact for Fourier operators, whose entries all have the same modulus.
    fn diag_aat(&self) -> Vec<f32> {
        let share = self.inside as f32 / self.mask.len().max(1) as f32;
        self.inner
            .diag_aat()
            .into_iter()
            .map(|d| d * share)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::testing::{assert_adjoint, exact_diag_aat};
    use crate::operator::{ImageGeometry, Nufft, NufftOptions};

    #[test]
    fn adjoint_and_diagonal_of_a_windowed_nufft() {
        let g = ImageGeometry::new(16, 16, 1e-5, 1e-5).unwrap();
        let uvw: Vec<[f64; 3]> = (0..40)
            .map(|k| {
                let a = k as f64 * 0.7;
                [
                    300.0 * a.cos() * (1.0 + k as f64 / 10.0),
                    200.0 * a.sin(),
                    0.0,
                ]
            })
            .collect();
        let op = Nufft::new(g, &uvw, &[1.4e9], None, &NufftOptions::default()).unwrap();
        let mask: Vec<bool> = (0..256).map(|k| (k / 16) % 3 != 0 && k % 5 != 1).collect();
        let inside = mask.iter().filter(|&&m| m).count();
        let m = Masked::new(&op, mask.clone()).unwrap();
        assert_adjoint(&m, 1e-4);
        let exact = exact_diag_aat(&m);
        // Per complex visibility (real and imaginary rows together: each alone depends on
        // the phases), the window's share of the pixels.
        let approx = m.diag_aat();
        for k in 0..approx.len() / 2 {
            let (a, e) = (
                (approx[2 * k] + approx[2 * k + 1]) as f64,
                exact[2 * k] + exact[2 * k + 1],
            );
            assert!((a / e - 1.0).abs() < 1e-2, "{a} vs {e}");
            assert!((e / inside as f64 - 1.0).abs() < 1e-2, "{e} vs {inside}");
        }
        // Pixels outside the window do not reach the data.
        let mut x = vec![0.0f32; 256];
        let out = mask.iter().position(|&m| !m).unwrap();
        x[out] = 1.0;
        let mut y = vec![1.0f32; m.data_len()];
        m.forward(&x, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        assert!(Masked::new(&op, vec![true; 10]).is_err());
    }
}
