//! Direct 2-D convolution with a small PSF ('same' size, zero outside the image) and its
//! adjoint (correlation with the same kernel = convolution with the flipped kernel). Direct is
//! the right choice for the kernels lens imaging uses (≤ ~31², a few M multiply-adds).

use rayon::prelude::*;

use crate::operator::OperatorError;

#[derive(Clone, Debug, PartialEq)]
pub struct Psf {
    pub ny: usize,
    pub nx: usize,
    /// Row-major `[ky][kx]`, centre at `(ny/2, nx/2)`.
    pub kernel: Vec<f32>,
}

impl Psf {
    /// A kernel of odd sides (its centre is then a pixel).
    pub fn new(ny: usize, nx: usize, kernel: Vec<f32>) -> Result<Self, OperatorError> {
        if ny.is_multiple_of(2) || nx.is_multiple_of(2) || kernel.len() != ny * nx {
            return Err(OperatorError::Invalid(format!(
                "PSF must have odd sides and ny·nx values; got {ny}×{nx} with {} values",
                kernel.len()
            )));
        }
        if kernel.iter().any(|v| !v.is_finite()) {
            return Err(OperatorError::Invalid("PSF has non-finite values".into()));
        }
        Ok(Self { ny, nx, kernel })
    }

    /// `out[y][x] = Σ k[a][b] img[y − a + cy][x − b + cx]`.
    pub fn convolve(&self, img: &[f32], ny: usize, nx: usize, out: &mut [f32]) {
        self.apply(img, ny, nx, out, false)
    }

    /// The adjoint of [`Psf::convolve`]: `out[y][x] = Σ k[a][b] r[y + a − cy][x + b − cx]`.
    pub fn correlate(&self, r: &[f32], ny: usize, nx: usize, out: &mut [f32]) {
        self.apply(r, ny, nx, out, true)
    }

    fn apply(&self, src: &[f32], ny: usize, nx: usize, out: &mut [f32], adjoint: bool) {
        let (cy, cx) = ((self.ny / 2) as i64, (self.nx / 2) as i64);
        let sign = if adjoint { 1 } else { -1 };
        out.par_chunks_mut(nx).enumerate().for_each(|(y, row)| {
            row.iter_mut().for_each(|v| *v = 0.0);
            for a in 0..self.ny as i64 {
                let sy = y as i64 + sign * (a - cy);
                if sy < 0 || sy >= ny as i64 {
                    continue;
                }
                let srow = &src[sy as usize * nx..(sy as usize + 1) * nx];
                for b in 0..self.nx as i64 {
                    let k = self.kernel[(a * self.nx as i64 + b) as usize];
                    if k == 0.0 {
                        continue;
                    }
                    // x + sign·(b − cx) must lie in [0, nx).
                    let off = sign * (b - cx);
                    let x0 = (-off).max(0) as usize;
                    let x1 = ((nx as i64) - off).min(nx as i64).max(0) as usize;
                    for x in x0..x1 {
                        row[x] += k * srow[(x as i64 + off) as usize];
                    }
                }
            }
        });
    }
}
