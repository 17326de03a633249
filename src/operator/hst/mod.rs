//! Optical imaging (HST-like): PSF convolution, an optional sub-pixel shift and integer
//! downsampling from a super-resolved model grid to the observed pixels.
//!
//! `A x = crop_W( D_f( K_s ⊛ x ) )`:
//! - `⊛` is the **linear** convolution ('same' size as the model grid, as
//!   `scipy.signal.convolve(x, K, mode="same")`): zero-padded FFTs, no wrap-around.
//!   The PSF element at index `c = (k − 1) / 2` (integer division) along each axis sits at zero
//!   displacement: the central pixel of an odd PSF, the one just before the middle of an even
//!   one (scipy's convention). A delta at model pixel `p` comes out as the PSF with element `c`
//!   on `p`. The PSF is normalised to sum 1.
//! - `K_s` is the PSF moved by a sub-pixel shift `s = (dy, dx)` (model pixels) by bilinear
//!   interpolation. Shifting the kernel rather than the image keeps the operator one convolution,
//!   so its adjoint is exact by construction and nothing is lost at the grid edge; the price is
//!   the slight smoothing of bilinear interpolation (a 2-tap filter), none at integer shifts.
//! - `D_f` **sums** f×f blocks of model pixels into one observed pixel: a model pixel holds the
//!   flux that falls on it, so the total flux of the model equals that of the prediction whatever
//!   f is (a mean would divide the data's flux by f² and tie the model's units to f).
//! - `crop_W` keeps a window of the downsampled grid: the observed pixels. A model grid larger
//!   than the window lets sources just outside the data spill their PSF wings into it.
//!
//! Only the part of the PSF within ±(model size − 1) of its centre can reach an output pixel;
//! the rest is dropped before the FFTs (exactly, after normalising to sum 1 over the whole PSF).

pub mod prep;
pub mod wcs;

use std::sync::Arc;

use num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use super::{ForwardOperator, OperatorError};

type C32 = Complex<f32>;

/// Observed pixels within the downsampled model grid: `[y0, x0]` first pixel, `[ny, nx]` size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataWindow {
    pub origin: [usize; 2],
    pub shape: [usize; 2],
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HstOptions {
    /// Model pixels per observed pixel along each axis (1 = same grid).
    pub factor: usize,
    /// Shift of the model relative to the PSF, `[dy, dx]` in model pixels (bilinear).
    pub shift: [f64; 2],
    /// Observed window in the downsampled grid; `None` = all of it.
    pub window: Option<DataWindow>,
}

impl Default for HstOptions {
    fn default() -> Self {
        Self {
            factor: 1,
            shift: [0.0, 0.0],
            window: None,
        }
    }
}

/// PSF convolution + shift + downsampling; see the module docs.
pub struct Hst {
    model: [usize; 2],
    factor: usize,
    window: DataWindow,
    /// Cropped, shifted, normalised kernel (row-major) and its zero-displacement index.
    kernel: Vec<f64>,
    kshape: [usize; 2],
    centre: [usize; 2],
    /// Padded FFT grid `[Ly, Lx]`.
    pad: [usize; 2],
    /// Kernel spectrum in the transposed layout `[kx][ky]` that [`Hst::convolve`] works in,
    /// pre-divided by `Ly·Lx` (the inverse FFT's normalisation).
    spectrum: Vec<C32>,
    row_fwd: Arc<dyn Fft<f32>>,
    row_inv: Arc<dyn Fft<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    diag: Vec<f32>,
}

/// Smallest n' ≥ n whose prime factors are 2, 3, 5, 7 (sizes rustfft transforms fastest).
fn fast_len(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut r = m;
        for p in [2, 3, 5, 7] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return m;
        }
        m += 1;
    }
}

impl Hst {
    /// `psf` row-major `[ky][kx]`, any positive-sum PSF (normalised here); `model` = `[ny, nx]`
    /// of the model grid, each a multiple of `opts.factor`.
    pub fn new(
        psf: &[f64],
        psf_shape: [usize; 2],
        model: [usize; 2],
        opts: &HstOptions,
    ) -> Result<Self, OperatorError> {
        let [ky, kx] = psf_shape;
        let f = opts.factor;
        let bad = |m: String| Err(OperatorError::Invalid(m));
        if ky == 0 || kx == 0 {
            return bad(format!("the PSF is empty ({ky}×{kx})"));
        }
        if psf.len() != ky * kx {
            return Err(OperatorError::LengthMismatch {
                what: "PSF",
                expected: ky * kx,
                got: psf.len(),
            });
        }
        if let Some(i) = psf.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "the PSF has a non-finite value ({}) at pixel ({}, {})",
                psf[i],
                i / kx,
                i % kx
            ));
        }
        let sum: f64 = psf.iter().sum();
        let abs_sum: f64 = psf.iter().map(|v| v.abs()).sum();
        // A sum that is zero up to rounding cannot be normalised into a PSF.
        if sum <= 1e-12 * abs_sum || abs_sum == 0.0 {
            return bad(format!(
                "the PSF sums to {sum:e}: it must have a positive sum to be normalised"
            ));
        }
        if f == 0 {
            return bad("the downsampling factor must be at least 1".into());
        }
        let [ny, nx] = model;
        if ny == 0 || nx == 0 || ny % f != 0 || nx % f != 0 {
            return bad(format!(
                "model grid {ny}×{nx} must be non-empty and a multiple of the factor {f}"
            ));
        }
        let coarse = [ny / f, nx / f];
        let window = opts.window.unwrap_or(DataWindow {
            origin: [0, 0],
            shape: coarse,
        });
        for a in 0..2 {
            if window.shape[a] == 0 || window.origin[a] + window.shape[a] > coarse[a] {
                return bad(format!(
                    "data window {:?} + {:?} does not fit the {}×{} downsampled grid",
                    window.origin, window.shape, coarse[0], coarse[1]
                ));
            }
        }
        let [sy, sx] = opts.shift;
        if !(sy.is_finite() && sx.is_finite()) {
            return bad(format!("shift ({sy}, {sx}) is not finite"));
        }

        // Normalise, shift (bilinear, separable), then crop to displacements within the grid.
        let k: Vec<f64> = psf.iter().map(|v| v / sum).collect();
        let c0 = [(ky - 1) / 2, (kx - 1) / 2];
        let (k, shape, centre) = shift_kernel(&k, [ky, kx], c0, [sy, sx])?;
        let (kernel, kshape, centre) = crop_kernel(&k, shape, centre, model);

        let pad = [fast_len(ny + kshape[0] - 1), fast_len(nx + kshape[1] - 1)];
        let mut planner = FftPlanner::<f32>::new();
        let mut op = Hst {
            model,
            factor: f,
            window,
            kernel,
            kshape,
            centre,
            pad,
            spectrum: Vec::new(),
            row_fwd: planner.plan_fft_forward(pad[1]),
            row_inv: planner.plan_fft_inverse(pad[1]),
            col_fwd: planner.plan_fft_forward(pad[0]),
            col_inv: planner.plan_fft_inverse(pad[0]),
            diag: Vec::new(),
        };
        op.spectrum = op.kernel_spectrum();
        op.diag = op.exact_diag_aat();
        Ok(op)
    }

    /// The normalised, shifted, cropped kernel `[ky][kx]` and its zero-displacement index.
    pub fn kernel(&self) -> (&[f64], [usize; 2], [usize; 2]) {
        (&self.kernel, self.kshape, self.centre)
    }

    pub fn factor(&self) -> usize {
        self.factor
    }

    pub fn window(&self) -> DataWindow {
        self.window
    }

    /// Padded FFT size `[Ly, Lx]`.
    pub fn fft_shape(&self) -> [usize; 2] {
        self.pad
    }

    fn kernel_spectrum(&self) -> Vec<C32> {
        let [ly, lx] = self.pad;
        let [ky, kx] = self.kshape;
        let mut buf = vec![C32::default(); ly * lx];
        for iy in 0..ky {
            for ix in 0..kx {
                buf[iy * lx + ix] = C32::new(self.kernel[iy * kx + ix] as f32, 0.0);
            }
        }
        // f64 would be no better: the image side of every product is f32 anyway.
        let mut t = self.fft_rows_then_cols(&mut buf, 0..ky);
        let norm = 1.0 / (ly * lx) as f32;
        t.iter_mut().for_each(|v| *v *= norm);
        t
    }

    /// Forward 2-D FFT of `buf` (`[Ly][Lx]`, non-zero only in `rows`), returned transposed
    /// (`[Lx][Ly]`): the spectrum is only ever multiplied elementwise, so it never needs to be
    /// transposed back.
    fn fft_rows_then_cols(&self, buf: &mut [C32], rows: std::ops::Range<usize>) -> Vec<C32> {
        let [ly, lx] = self.pad;
        let mut scratch = vec![
            C32::default();
            self.row_fwd
                .get_inplace_scratch_len()
                .max(self.col_fwd.get_inplace_scratch_len())
        ];
        self.row_fwd
            .process_with_scratch(&mut buf[rows.start * lx..rows.end * lx], &mut scratch);
        let mut t = vec![C32::default(); ly * lx];
        transpose(buf, &mut t, ly, lx);
        self.col_fwd.process_with_scratch(&mut t, &mut scratch);
        t
    }

    /// Circular convolution (or correlation with `conj`) of the padded `buf` with the kernel.
    /// `in_rows` are the rows of `buf` that may be non-zero; `out_rows` the rows wanted back.
    fn convolve(
        &self,
        buf: &mut [C32],
        in_rows: std::ops::Range<usize>,
        out_rows: std::ops::Range<usize>,
        conj: bool,
    ) {
        let [ly, lx] = self.pad;
        let mut t = self.fft_rows_then_cols(buf, in_rows);
        if conj {
            t.iter_mut()
                .zip(&self.spectrum)
                .for_each(|(v, s)| *v *= s.conj());
        } else {
            t.iter_mut().zip(&self.spectrum).for_each(|(v, s)| *v *= s);
        }
        let mut scratch = vec![
            C32::default();
            self.row_inv
                .get_inplace_scratch_len()
                .max(self.col_inv.get_inplace_scratch_len())
        ];
        self.col_inv.process_with_scratch(&mut t, &mut scratch);
        // Back to [Ly][Lx], only the rows wanted.
        for iy in out_rows.clone() {
            let row = &mut buf[iy * lx..(iy + 1) * lx];
            for (ix, v) in row.iter_mut().enumerate() {
                *v = t[ix * ly + iy];
            }
        }
        self.row_inv.process_with_scratch(
            &mut buf[out_rows.start * lx..out_rows.end * lx],
            &mut scratch,
        );
    }

    /// `‖row_p(A)‖²` for every observed pixel, exactly. Row p of A is `Aᵀ e_p`:
    /// `(Aᵀ e_p)[q] = B[f·P + c − q]` with `B[t] = Σ_{a ∈ [0,f)²} K[t + a]` (the kernel summed
    /// over one observed pixel's block) and P the pixel's place in the downsampled grid. So
    /// `‖row_p‖²` is the sum of B² over the displacements that land on the model grid: one
    /// lookup in a summed-area table of B² per pixel (O(kernel + data) in all).
    fn exact_diag_aat(&self) -> Vec<f32> {
        let f = self.factor;
        let [ky, kx] = self.kshape;
        let [by, bx] = [ky + f - 1, kx + f - 1];
        // B at index u = t + (f − 1), t ∈ [−(f−1), k−1].
        let mut b = vec![0.0f64; by * bx];
        for uy in 0..by {
            for ux in 0..bx {
                let mut s = 0.0;
                for ay in 0..f {
                    for ax in 0..f {
                        let jy = uy as isize - (f as isize - 1) + ay as isize;
                        let jx = ux as isize - (f as isize - 1) + ax as isize;
                        if (0..ky as isize).contains(&jy) && (0..kx as isize).contains(&jx) {
                            s += self.kernel[jy as usize * kx + jx as usize];
                        }
                    }
                }
                b[uy * bx + ux] = s;
            }
        }
        // Summed-area table with a zero first row and column: sat[y][x] = Σ_{<y, <x} B².
        let mut sat = vec![0.0f64; (by + 1) * (bx + 1)];
        for uy in 0..by {
            let mut run = 0.0;
            for ux in 0..bx {
                run += b[uy * bx + ux].powi(2);
                sat[(uy + 1) * (bx + 1) + ux + 1] = sat[uy * (bx + 1) + ux + 1] + run;
            }
        }
        let rect = |y0: isize, y1: isize, x0: isize, x1: isize| -> f64 {
            // Σ over u ∈ [y0, y1] × [x0, x1] (inclusive), clipped to B.
            let (y0, x0) = (y0.max(0), x0.max(0));
            let (y1, x1) = (y1.min(by as isize - 1), x1.min(bx as isize - 1));
            if y0 > y1 || x0 > x1 {
                return 0.0;
            }
            let at = |y: isize, x: isize| sat[y as usize * (bx + 1) + x as usize];
            at(y1 + 1, x1 + 1) - at(y0, x1 + 1) - at(y1 + 1, x0) + at(y0, x0)
        };
        let [ny, nx] = self.model;
        let DataWindow { origin, shape } = self.window;
        let off = f as isize - 1;
        let mut d = Vec::with_capacity(shape[0] * shape[1]);
        for wy in 0..shape[0] {
            for wx in 0..shape[1] {
                let ty = (f * (origin[0] + wy) + self.centre[0]) as isize;
                let tx = (f * (origin[1] + wx) + self.centre[1]) as isize;
                // q ∈ [0, n) ⇒ t = T − q ∈ [T − n + 1, T]; u = t + (f − 1).
                let v = rect(
                    ty - ny as isize + 1 + off,
                    ty + off,
                    tx - nx as isize + 1 + off,
                    tx + off,
                );
                d.push(v as f32);
            }
        }
        d
    }
}

fn transpose(src: &[C32], dst: &mut [C32], rows: usize, cols: usize) {
    const B: usize = 16;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

type Kernel = (Vec<f64>, [usize; 2], [usize; 2]);

/// `K_s[d] = K(d − s)` by bilinear interpolation, `d` the displacement. The zero-displacement
/// index of the result must stay inside it (|shift| below the PSF's half-size).
fn shift_kernel(
    k: &[f64],
    [ky, kx]: [usize; 2],
    c: [usize; 2],
    s: [f64; 2],
) -> Result<Kernel, OperatorError> {
    if s == [0.0, 0.0] {
        return Ok((k.to_vec(), [ky, kx], c));
    }
    // Per axis: K_s[d] = (1−t) K[d−n] + t K[d−n−1], s = n + t. In array indices of the result
    // (size k+1, j' = j + n + (the +1 tap)), the zero displacement moves from c to c − n.
    let axis = |s: f64, c: usize, k: usize| -> Result<(isize, f64, usize), OperatorError> {
        let n = s.floor();
        let t = s - n;
        let n = n as isize;
        let c_new = c as isize - n;
        if c_new < 0 || c_new > k as isize {
            return Err(OperatorError::Invalid(format!(
                "shift {s} pixels is larger than the PSF's half-size"
            )));
        }
        Ok((n, t, c_new as usize))
    };
    let (_, ty, cy) = axis(s[0], c[0], ky)?;
    let (_, tx, cx) = axis(s[1], c[1], kx)?;
    // Result array index j' holds displacement j' − c_new; source index j = (j' − c_new) − n
    // − {0,1} + c = j' − {0,1} since c − n = c_new.
    let (ny, nx) = (ky + 1, kx + 1);
    let mut out = vec![0.0; ny * nx];
    let get = |y: isize, x: isize| -> f64 {
        if (0..ky as isize).contains(&y) && (0..kx as isize).contains(&x) {
            k[y as usize * kx + x as usize]
        } else {
            0.0
        }
    };
    for jy in 0..ny as isize {
        for jx in 0..nx as isize {
            out[jy as usize * nx + jx as usize] = (1.0 - ty) * (1.0 - tx) * get(jy, jx)
                + ty * (1.0 - tx) * get(jy - 1, jx)
                + (1.0 - ty) * tx * get(jy, jx - 1)
                + ty * tx * get(jy - 1, jx - 1);
        }
    }
    Ok((out, [ny, nx], [cy, cx]))
}

/// Keeps displacements within ±(n − 1) of the centre along each axis (all a 'same' output on
/// an n-pixel grid can see).
fn crop_kernel(k: &[f64], [ky, kx]: [usize; 2], c: [usize; 2], model: [usize; 2]) -> Kernel {
    let lo = |c: usize, n: usize| c.saturating_sub(n - 1);
    let hi = |c: usize, n: usize, k: usize| (c + n).min(k);
    let (y0, y1) = (lo(c[0], model[0]), hi(c[0], model[0], ky));
    let (x0, x1) = (lo(c[1], model[1]), hi(c[1], model[1], kx));
    let mut out = Vec::with_capacity((y1 - y0) * (x1 - x0));
    for y in y0..y1 {
        out.extend_from_slice(&k[y * kx + x0..y * kx + x1]);
    }
    (out, [y1 - y0, x1 - x0], [c[0] - y0, c[1] - x0])
}

impl ForwardOperator for Hst {
    fn image_shape(&self) -> [usize; 2] {
        self.model
    }

    fn data_len(&self) -> usize {
        self.window.shape[0] * self.window.shape[1]
    }

    fn forward(&self, image: &[f32], data: &mut [f32]) {
        let [ny, nx] = self.model;
        let [_, lx] = self.pad;
        let [cy, cx] = self.centre;
        let mut buf = vec![C32::default(); self.pad[0] * lx];
        for iy in 0..ny {
            for ix in 0..nx {
                buf[iy * lx + ix].re = image[iy * nx + ix];
            }
        }
        self.convolve(&mut buf, 0..ny, cy..cy + ny, false);
        // 'same' output pixel m is full-convolution pixel m + c; sum f×f blocks in the window.
        let f = self.factor;
        let DataWindow { origin, shape } = self.window;
        for wy in 0..shape[0] {
            for wx in 0..shape[1] {
                let (my, mx) = (f * (origin[0] + wy), f * (origin[1] + wx));
                let mut s = 0.0f32;
                for ay in 0..f {
                    let row = (my + ay + cy) * lx + mx + cx;
                    s += buf[row..row + f].iter().map(|v| v.re).sum::<f32>();
                }
                data[wy * shape[1] + wx] = s;
            }
        }
    }

    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        let [ny, nx] = self.model;
        let [_, lx] = self.pad;
        let [cy, cx] = self.centre;
        let f = self.factor;
        let DataWindow { origin, shape } = self.window;
        let mut buf = vec![C32::default(); self.pad[0] * lx];
        // Dᵀ copies each observed pixel onto its f×f block, placed where the forward read it.
        for wy in 0..shape[0] {
            for wx in 0..shape[1] {
                let v = data[wy * shape[1] + wx];
                let (my, mx) = (f * (origin[0] + wy), f * (origin[1] + wx));
                for ay in 0..f {
                    let row = (my + ay + cy) * lx + mx + cx;
                    buf[row..row + f].iter_mut().for_each(|b| b.re = v);
                }
            }
        }
        let rows = cy + f * origin[0]..cy + f * (origin[0] + shape[0]);
        self.convolve(&mut buf, rows, 0..ny, true);
        for iy in 0..ny {
            for ix in 0..nx {
                image[iy * nx + ix] = buf[iy * lx + ix].re;
            }
        }
    }

    /// Exact: see [`Hst::exact_diag_aat`] (summed-area table of the block-summed kernel²).
    fn diag_aat(&self) -> Vec<f32> {
        self.diag.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::testing::dot_test;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f64>() - 0.3).collect()
    }

    /// scipy.signal.convolve(x, k, mode="same") by direct sums (k normalised first).
    fn brute_same(x: &[f64], [ny, nx]: [usize; 2], k: &[f64], [ky, kx]: [usize; 2]) -> Vec<f64> {
        let s: f64 = k.iter().sum();
        let (cy, cx) = ((ky - 1) / 2, (kx - 1) / 2);
        let mut out = vec![0.0; ny * nx];
        for my in 0..ny {
            for mx in 0..nx {
                let mut acc = 0.0;
                for qy in 0..ny {
                    for qx in 0..nx {
                        let jy = my as isize + cy as isize - qy as isize;
                        let jx = mx as isize + cx as isize - qx as isize;
                        if (0..ky as isize).contains(&jy) && (0..kx as isize).contains(&jx) {
                            acc += x[qy * nx + qx] * k[jy as usize * kx + jx as usize];
                        }
                    }
                }
                out[my * nx + mx] = acc / s;
            }
        }
        out
    }

    fn apply(op: &Hst, x: &[f64]) -> Vec<f64> {
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut y = vec![0.0f32; op.data_len()];
        op.forward(&xf, &mut y);
        y.into_iter().map(f64::from).collect()
    }

    fn max_abs(v: &[f64]) -> f64 {
        v.iter().fold(0.0, |a, b| a.max(b.abs()))
    }

    #[test]
    fn matches_direct_convolution_odd_and_even_psfs() {
        for (model, kshape) in [
            ([12, 10], [5, 5]),
            ([12, 10], [4, 6]),
            ([9, 14], [7, 4]),
            // PSF larger than the grid (cropped internally), as HST PSFs are.
            ([8, 8], [21, 19]),
        ] {
            let x = random(model[0] * model[1], 1);
            let k: Vec<f64> = random(kshape[0] * kshape[1], 2)
                .iter()
                .map(|v| v + 0.5)
                .collect();
            let op = Hst::new(&k, kshape, model, &HstOptions::default()).unwrap();
            let got = apply(&op, &x);
            let want = brute_same(&x, model, &k, kshape);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                err <= 2e-6 * max_abs(&want),
                "{model:?} ⊛ {kshape:?}: max error {err:e} vs {}",
                max_abs(&want)
            );
        }
    }

    #[test]
    fn delta_returns_the_psf_centred_on_it() {
        // Even 4×6 PSF: centre index ((4−1)/2, (6−1)/2) = (1, 2).
        let (ky, kx) = (4, 6);
        let k: Vec<f64> = (0..ky * kx).map(|i| 1.0 + i as f64).collect();
        let s: f64 = k.iter().sum();
        let model = [16, 16];
        let op = Hst::new(&k, [ky, kx], model, &HstOptions::default()).unwrap();
        let (py, px) = (7, 9);
        let mut x = vec![0.0; 256];
        x[py * 16 + px] = 1.0;
        let y = apply(&op, &x);
        for my in 0..16 {
            for mx in 0..16 {
                let (jy, jx) = (my as isize - py as isize + 1, mx as isize - px as isize + 2);
                let want = if (0..ky as isize).contains(&jy) && (0..kx as isize).contains(&jx) {
                    k[jy as usize * kx + jx as usize] / s
                } else {
                    0.0
                };
                assert!((y[my * 16 + mx] - want).abs() < 1e-6, "({my}, {mx})");
            }
        }
    }

    #[test]
    fn adjoint_passes_dot_test_with_shift_factor_and_window() {
        let k = random(9 * 8, 3).iter().map(|v| v + 0.4).collect::<Vec<_>>();
        for opts in [
            HstOptions::default(),
            HstOptions {
                factor: 2,
                shift: [0.3, -0.7],
                window: None,
            },
            HstOptions {
                factor: 3,
                shift: [-1.25, 2.5],
                window: Some(DataWindow {
                    origin: [1, 2],
                    shape: [3, 2],
                }),
            },
        ] {
            let op = Hst::new(&k, [9, 8], [12, 18], &opts).unwrap();
            for seed in 1..4 {
                let t = dot_test(&op, seed);
                assert!(t.rel_err < 1e-6, "{opts:?}: {t:?}");
            }
        }
    }

    #[test]
    fn diag_aat_equals_row_norms() {
        let k = random(7 * 6, 4).iter().map(|v| v + 0.4).collect::<Vec<_>>();
        let opts = HstOptions {
            factor: 2,
            shift: [0.4, 0.1],
            window: Some(DataWindow {
                origin: [0, 1],
                shape: [5, 4],
            }),
        };
        let op = Hst::new(&k, [7, 6], [10, 12], &opts).unwrap();
        let d = op.diag_aat();
        for (p, &dp) in d.iter().enumerate() {
            let mut e = vec![0.0f32; op.data_len()];
            e[p] = 1.0;
            let mut row = vec![0.0f32; 120];
            op.adjoint(&e, &mut row);
            let n2: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!(
                (n2 - dp as f64).abs() <= 1e-5 * n2.max(1e-12),
                "pixel {p}: {n2} vs {dp}"
            );
        }
    }

    #[test]
    fn downsampling_sums_blocks_and_conserves_flux() {
        // Compact PSF, sources well inside: every bit of flux lands in the data.
        let k = vec![0.05, 0.1, 0.05, 0.1, 0.4, 0.1, 0.05, 0.1, 0.05];
        let op = Hst::new(
            &k,
            [3, 3],
            [24, 24],
            &HstOptions {
                factor: 4,
                shift: [0.25, -0.5],
                window: None,
            },
        )
        .unwrap();
        let mut x = vec![0.0; 576];
        let mut rng = StdRng::seed_from_u64(5);
        for iy in 4..20 {
            for ix in 4..20 {
                x[iy * 24 + ix] = rng.random::<f64>();
            }
        }
        let y = apply(&op, &x);
        assert_eq!(y.len(), 36);
        let (sx, sy): (f64, f64) = (x.iter().sum(), y.iter().sum());
        assert!((sx - sy).abs() < 1e-5 * sx, "model {sx} vs data {sy}");
        // Unshifted, factor 2, delta PSF: a data pixel is exactly the sum of its 2×2 block.
        let op = Hst::new(
            &[1.0],
            [1, 1],
            [6, 6],
            &HstOptions {
                factor: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let x: Vec<f64> = (0..36).map(|i| i as f64).collect();
        let y = apply(&op, &x);
        assert!((y[0] - (0.0 + 1.0 + 6.0 + 7.0)).abs() < 1e-5);
        assert!((y[8] - (28.0 + 29.0 + 34.0 + 35.0)).abs() < 1e-4);
    }

    #[test]
    fn shifts_move_the_response() {
        let k: Vec<f64> = random(25, 6).iter().map(|v| v + 0.5).collect();
        let model = [16, 16];
        let mut x = vec![0.0; 256];
        x[8 * 16 + 8] = 1.0;
        let base = apply(
            &Hst::new(&k, [5, 5], model, &HstOptions::default()).unwrap(),
            &x,
        );
        let mv = |s: [f64; 2]| {
            apply(
                &Hst::new(
                    &k,
                    [5, 5],
                    model,
                    &HstOptions {
                        shift: s,
                        ..Default::default()
                    },
                )
                .unwrap(),
                &x,
            )
        };
        // An integer shift moves the image exactly: +1 in y is one row up.
        let one = mv([1.0, 0.0]);
        let two = mv([-2.0, 1.0]);
        for iy in 2..14 {
            for ix in 2..14 {
                assert!((one[iy * 16 + ix] - base[(iy - 1) * 16 + ix]).abs() < 1e-6);
                assert!((two[iy * 16 + ix] - base[(iy + 2) * 16 + ix - 1]).abs() < 1e-6);
            }
        }
        // Half a pixel in x: the average of the unshifted and one-pixel-shifted responses.
        let half = mv([0.0, 0.5]);
        for iy in 1..15 {
            for ix in 1..15 {
                let want = 0.5 * (base[iy * 16 + ix] + base[iy * 16 + ix - 1]);
                assert!((half[iy * 16 + ix] - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn rejects_bad_psfs_and_geometry() {
        let o = HstOptions::default();
        assert!(Hst::new(&[1.0, -1.0], [1, 2], [8, 8], &o).is_err());
        assert!(Hst::new(&[0.0; 4], [2, 2], [8, 8], &o).is_err());
        assert!(Hst::new(&[f64::NAN, 1.0], [1, 2], [8, 8], &o).is_err());
        assert!(Hst::new(&[1.0; 3], [2, 2], [8, 8], &o).is_err());
        let f3 = HstOptions { factor: 3, ..o };
        assert!(Hst::new(&[1.0], [1, 1], [8, 9], &f3).is_err());
        let w = HstOptions {
            window: Some(DataWindow {
                origin: [6, 0],
                shape: [3, 8],
            }),
            ..o
        };
        assert!(Hst::new(&[1.0], [1, 1], [8, 8], &w).is_err());
        let far = HstOptions {
            shift: [10.0, 0.0],
            ..o
        };
        assert!(Hst::new(&[1.0; 9], [3, 3], [8, 8], &far).is_err());
    }
}
