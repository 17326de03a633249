//! A CPU 2-D convolution (stride 1, zero padding) as a candle custom op, with its backward.
//!
//! candle's own `conv2d` is a reasonable forward, but its input gradient is a direct
//! `conv_transpose2d` loop and its weight gradient another convolution: about ten times the
//! forward on the U-Net's shapes. Here all three products are GEMMs (the `gemm` crate, as
//! candle's matmul) on im2col columns:
//!
//! * forward, per image: `Y = W · cols(X) + b`;
//! * input gradient, per image: `dX = col2im(Wᵀ · dY)`;
//! * weight gradient: `dW = Σ_images dY · cols(X)ᵀ`, `db = Σ dY`.
//!
//! Images are spread over candle's CPU worker pool (one single-threaded GEMM each), which keeps
//! all cores busy on the small channel counts of a score network where a multithreaded GEMM
//! per image would mostly synchronise. Columns are built a band of output rows at a time into a
//! per-thread scratch buffer, so the working set stays bounded at any image size and nothing
//! of image size is allocated per call beyond the outputs. The columns are rebuilt in the
//! backward rather than kept from the forward.
//!
//! Other devices and dtypes fall back to candle's `conv2d` (see [`conv2d`]).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};

use super::simd::multiversion;

/// Scratch floats per thread for a band of columns (512 KiB): the band's rows are chosen to
/// fit. Small enough that the columns and the GEMM's packed copies stay in a 1 MiB L2 (10 %
/// faster than 4 MiB bands on the U-Net at 64²).
const BAND_FLOATS: usize = 1 << 17;

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geom {
    /// Batch, input channels, input height and width.
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    /// Output channels, kernel side, padding.
    o: usize,
    k: usize,
    p: usize,
    /// Scratch budget for one band of columns (floats).
    band_floats: usize,
}

impl Geom {
    fn ho(&self) -> usize {
        self.h + 2 * self.p + 1 - self.k
    }
    fn wo(&self) -> usize {
        self.w + 2 * self.p + 1 - self.k
    }
    /// Rows of the column matrix, `C·k²`.
    fn ck2(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Output the size of the input (`k = 2p + 1`).
    fn same(&self) -> bool {
        self.k == 2 * self.p + 1
    }
    /// A 1×1 unpadded convolution needs no columns: the image is its own column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.p == 0
    }
    /// Output rows per band of columns: as many as fit the scratch, rounded down so that a
    /// band is a whole number of the GEMM's 6-column panels (a band of 7 rows of 32 would
    /// end each GEMM on a 2-column panel, at a third of the speed).
    fn band_rows(&self) -> usize {
        let rows = (self.band_floats / (self.ck2() * self.wo()).max(1)).clamp(1, self.ho());
        let step = 6 / gcd(self.wo(), 6);
        if rows < self.ho() {
            // At least one step, a little over the scratch budget if need be.
            ((rows / step).max(1) * step).min(self.ho())
        } else {
            rows
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Columns of output rows `r0..r1` of one image `x` (C, H, W):
/// `cols[(ci·k + ky)·k + kx][(y − r0)·Wo + xo] = x[ci][y + ky − p][xo + kx − p]` (0 outside).
fn im2col_band(x: &[f32], g: &Geom, r0: usize, r1: usize, cols: &mut [f32]) {
    if g.same() {
        return im2col_same(x, g, r0, r1, cols);
    }
    let (h, w, k, p, wo) = (g.h, g.w, g.k, g.p, g.wo());
    let n = (r1 - r0) * wo;
    for ci in 0..g.c {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((ci * k + ky) * k + kx) * n..][..n];
                // Output columns whose input column is inside the image.
                let x0 = p.saturating_sub(kx).min(wo);
                let x1 = (w + p).saturating_sub(kx).min(wo).max(x0);
                for y in r0..r1 {
                    let d = &mut row[(y - r0) * wo..(y - r0 + 1) * wo];
                    let sy = y + ky;
                    if sy < p || sy - p >= h {
                        d.fill(0.0);
                        continue;
                    }
                    let s = &src[(sy - p) * w..(sy - p + 1) * w];
                    d[..x0].fill(0.0);
                    d[x1..].fill(0.0);
                    let sx0 = x0 + kx - p;
                    d[x0..x1].copy_from_slice(&s[sx0..sx0 + (x1 - x0)]);
                }
            }
        }
    }
}

multiversion! {
    /// The adjoint of [`im2col_band`]: adds the band's columns onto the image gradient `dx`.
    fn col2im_band(cols: &mut [f32], g: &Geom, r0: usize, r1: usize, dx: &mut [f32]) {
    if g.same() {
        return col2im_same(cols, g, r0, r1, dx);
    }
    let (h, w, k, p, wo) = (g.h, g.w, g.k, g.p, g.wo());
    let n = (r1 - r0) * wo;
    for ci in 0..g.c {
        let dst = &mut dx[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &cols[((ci * k + ky) * k + kx) * n..][..n];
                let x0 = p.saturating_sub(kx).min(wo);
                let x1 = (w + p).saturating_sub(kx).min(wo).max(x0);
                for y in r0..r1 {
                    let sy = y + ky;
                    if sy < p || sy - p >= h {
                        continue;
                    }
                    let s = &row[(y - r0) * wo + x0..(y - r0) * wo + x1];
                    let sx0 = x0 + kx - p;
                    let d = &mut dst[(sy - p) * w + sx0..(sy - p) * w + sx0 + (x1 - x0)];
                    for (a, b) in d.iter_mut().zip(s) {
                        *a += b;
                    }
                }
            }
        }
    }
}
}

/// Where row `(ky, kx)` of a band of columns of a "same" convolution (`k = 2p + 1`, output
/// the size of the input) comes from.
///
/// In flattened order that row is the image shifted by `(ky − p)·W + kx − p`: one contiguous
/// copy, except for the output rows whose input row is outside the image (zero), and the
/// `|kx − p|` columns at one end of each row that would wrap around into the neighbouring
/// input row (zero too). One copy per row of columns instead of one per image row: the
/// rows are 64 floats or fewer in a score network, where the per-call cost dominates.
struct SameShift {
    /// Valid part of the band's row: `d0..d1`.
    d0: usize,
    d1: usize,
    /// Within it, `d0 + lo .. d0 + hi` reads the image at `s0 + lo ..` (the ends outside the
    /// image stay zero).
    lo: usize,
    hi: usize,
    s0: isize,
    /// Column shift `kx − p`.
    shift: isize,
}

impl SameShift {
    fn new(g: &Geom, r0: usize, r1: usize, ky: usize, kx: usize) -> Self {
        let (h, w, p) = (g.h, g.w, g.p);
        // Output rows y with 0 ≤ y + ky − p < h.
        let ya = p.saturating_sub(ky).clamp(r0, r1);
        let yb = (h + p).saturating_sub(ky).min(r1).max(ya);
        let (d0, d1) = ((ya - r0) * w, (yb - r0) * w);
        let shift = kx as isize - p as isize;
        let s0 = ((ya + ky).saturating_sub(p) * w) as isize + shift;
        let len = d1 - d0;
        let lo = ((-s0).max(0) as usize).min(len);
        let hi = (((h * w) as isize - s0).max(0) as usize).min(len).max(lo);
        Self {
            d0,
            d1,
            lo,
            hi,
            s0,
            shift,
        }
    }

    /// The columns of `row` (a band's row of columns) that wrapped around a row end.
    fn zero_wrapped(&self, row: &mut [f32], w: usize) {
        let a = self.shift.unsigned_abs().min(w);
        if a == 0 {
            return;
        }
        for r in row[self.d0..self.d1].chunks_mut(w) {
            if self.shift < 0 {
                r[..a].fill(0.0);
            } else {
                r[w - a..].fill(0.0);
            }
        }
    }

    fn src(&self) -> std::ops::Range<usize> {
        (self.s0 + self.lo as isize) as usize..(self.s0 + self.hi as isize) as usize
    }

    fn dst(&self) -> std::ops::Range<usize> {
        self.d0 + self.lo..self.d0 + self.hi
    }
}

/// [`im2col_band`] for a "same" convolution (see [`SameShift`]).
fn im2col_same(x: &[f32], g: &Geom, r0: usize, r1: usize, cols: &mut [f32]) {
    let (hw, k) = (g.h * g.w, g.k);
    let n = (r1 - r0) * g.w;
    for ci in 0..g.c {
        let src = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((ci * k + ky) * k + kx) * n..][..n];
                let s = SameShift::new(g, r0, r1, ky, kx);
                row[..s.d0 + s.lo].fill(0.0);
                row[s.d0 + s.hi..].fill(0.0);
                if s.hi > s.lo {
                    row[s.dst()].copy_from_slice(&src[s.src()]);
                }
                s.zero_wrapped(row, g.w);
            }
        }
    }
}

multiversion! {
    /// [`col2im_band`] for a "same" convolution; zeroes the wrapped columns of `cols`, then
    /// adds each row of columns in one pass.
    fn col2im_same(cols: &mut [f32], g: &Geom, r0: usize, r1: usize, dx: &mut [f32]) {
        let (hw, k) = (g.h * g.w, g.k);
        let n = (r1 - r0) * g.w;
        for ci in 0..g.c {
            let dst = &mut dx[ci * hw..(ci + 1) * hw];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut cols[((ci * k + ky) * k + kx) * n..][..n];
                    let s = SameShift::new(g, r0, r1, ky, kx);
                    if s.hi == s.lo {
                        continue;
                    }
                    s.zero_wrapped(row, g.w);
                    for (a, b) in dst[s.src()].iter_mut().zip(&row[s.dst()]) {
                        *a += b;
                    }
                }
            }
        }
    }
}

/// Row-major strided matrix operand.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

impl Mat {
    /// The transpose, as a view.
    fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// `dst (m×n, row stride dst_rs) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded.
///
/// # Safety
/// Every operand must cover the extent its dimensions and strides address.
#[allow(clippy::too_many_arguments)] // the BLAS-style signature of gemm::gemm
unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Runs `f` with this thread's two scratch buffers grown to at least `n1` and `n2` floats.
fn with_scratch<R>(n1: usize, n2: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (a, b) = &mut *s;
        if a.len() < n1 {
            a.resize(n1, 0.0);
        }
        if b.len() < n2 {
            b.resize(n2, 0.0);
        }
        f(&mut a[..n1], &mut b[..n2])
    })
}

/// Runs `f(i)` for every `i < n` on candle's CPU worker pool, a few items per grab.
///
/// These are the threads candle's own element-wise kernels run on: a second pool (rayon's)
/// beside them would leave idle workers of one spinning on the cores the other needs.
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(n, |r| r.for_each(&f));
}

/// A new buffer of `n` floats cut into `parts` equal consecutive pieces, piece `i` handed to
/// `f(i, piece)` on the worker pool.
///
/// The buffer is not zeroed first: for a cheap op, a serial memset on the calling thread is a
/// good part of its time, with the other workers idle.
///
/// # Safety
/// `f` must write every element of its piece before reading it.
pub(crate) unsafe fn par_new(
    n: usize,
    parts: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    assert!(
        parts > 0 && n.is_multiple_of(parts),
        "{n} floats in {parts} pieces"
    );
    let len = n / parts;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    let out = SharedOut(v.as_mut_ptr());
    // SAFETY: piece i of the allocation, handed to one call only.
    par_for(parts, |i| f(i, unsafe { out.slice(i * len, len) }));
    // SAFETY: every piece has been written (the caller's contract).
    unsafe { v.set_len(n) };
    v
}

/// One output buffer written in disjoint parts from [`par_for`].
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);

// SAFETY: only used to hand disjoint sub-slices of one live buffer to different threads.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(v: &mut [f32]) -> Self {
        Self(v.as_mut_ptr())
    }
    /// # Safety
    /// `start..start + len` must lie in the buffer, which must outlive the slice, and no two
    /// live slices may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// `bias` is (O,) or, per image, (B, O).
fn conv_forward(x: &[f32], wt: &[f32], bias: &[f32], g: &Geom) -> Vec<f32> {
    let (ho, wo, ck2, o) = (g.ho(), g.wo(), g.ck2(), g.o);
    let (in_sz, out_sz) = (g.c * g.h * g.w, o * ho * wo);
    let per_image_bias = bias.len() == g.b * o && g.b > 1;
    let band = g.band_rows();
    let image = |bi: usize, yb: &mut [f32]| {
        let xb = &x[bi * in_sz..][..in_sz];
        let bb = if per_image_bias {
            &bias[bi * o..][..o]
        } else {
            &bias[..o]
        };
        for (row, &bv) in yb.chunks_mut(ho * wo).zip(bb) {
            row.fill(bv);
        }
        let cols_len = if g.pointwise() { 0 } else { ck2 * band * wo };
        with_scratch(cols_len, 0, |cols, _| {
            let wm = Mat {
                ptr: wt.as_ptr(),
                rs: ck2,
                cs: 1,
            };
            let mut r0 = 0;
            while r0 < ho {
                let r1 = (r0 + band).min(ho);
                let n = (r1 - r0) * wo;
                let rhs = if g.pointwise() {
                    Mat {
                        ptr: xb[r0 * wo..].as_ptr(),
                        rs: ho * wo,
                        cs: 1,
                    }
                } else {
                    im2col_band(xb, g, r0, r1, cols);
                    Mat {
                        ptr: cols.as_ptr(),
                        rs: n,
                        cs: 1,
                    }
                };
                // SAFETY: W is o×ck2, the columns ck2×n, the output band o×n with row
                // stride ho·wo inside yb.
                unsafe {
                    sgemm(
                        o,
                        n,
                        ck2,
                        yb[r0 * wo..].as_mut_ptr(),
                        ho * wo,
                        true,
                        wm,
                        rhs,
                    )
                };
                r0 = r1;
            }
        })
    };
    // SAFETY: image bi's output block is filled with the bias before the GEMMs add to it.
    unsafe { par_new(g.b * out_sz, g.b, image) }
}

/// The kernel of the convolution whose forward is this one's input gradient: channels
/// swapped and the taps reversed, `w'[c][o][k−1−ky][k−1−kx] = w[o][c][ky][kx]`.
fn adjoint_kernel(wt: &[f32], g: &Geom) -> Vec<f32> {
    let (k, c, o) = (g.k, g.c, g.o);
    let mut a = vec![0f32; wt.len()];
    for oi in 0..o {
        for ci in 0..c {
            let src = &wt[(oi * c + ci) * k * k..][..k * k];
            let dst = &mut a[(ci * o + oi) * k * k..][..k * k];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    a
}

/// Gradients of the input, the weight and the bias, the last per image: (B, O).
///
/// The input gradient of a k×k convolution is itself a stride-1 convolution of `dy` (padding
/// `k − 1 − p`, [`adjoint_kernel`]), computed by [`conv_forward`]: a GEMM with `O·k²` terms
/// per output instead of the `O` of `Wᵀ·dY`, whose `C·k²`-row result then had to be scattered
/// back by col2im (memory-bound: 40 % more time for the whole backward at `nf` 16).
///
/// Each image's weight gradient goes to its own slot and the slots are summed in a fixed
/// order afterwards, so the result does not depend on the number of threads or on timing.
fn conv_backward(x: &[f32], wt: &[f32], dy: &[f32], g: &Geom) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (ho, wo, ck2, o) = (g.ho(), g.wo(), g.ck2(), g.o);
    let (in_sz, out_sz, w_sz) = (g.c * g.h * g.w, o * ho * wo, o * ck2);
    let mut dw_parts = vec![0f32; g.b * w_sz];
    let mut db = vec![0f32; g.b * o];
    let band = g.band_rows();
    let (dw_out, db_out) = (SharedOut::new(&mut dw_parts), SharedOut::new(&mut db));
    // With a pointwise kernel `Wᵀ·dY` is the input gradient itself, computed beside dW.
    let adjoint = (!g.pointwise() && g.p < g.k).then(|| Geom {
        c: o,
        h: ho,
        w: wo,
        o: g.c,
        p: g.k - 1 - g.p,
        ..*g
    });
    let image = |bi: usize, dxb: &mut [f32]| {
        // SAFETY: image bi's weight-gradient slot and bias gradients, written by this call
        // only.
        let (dw, dbb) = unsafe { (dw_out.slice(bi * w_sz, w_sz), db_out.slice(bi * o, o)) };
        let with_dx = adjoint.is_none();
        if with_dx && !g.pointwise() {
            dxb.fill(0.0);
        }
        let xb = &x[bi * in_sz..][..in_sz];
        let dyb = &dy[bi * out_sz..][..out_sz];
        for (d, row) in dbb.iter_mut().zip(dyb.chunks(ho * wo)) {
            *d = row.iter().sum::<f32>();
        }
        let cols_len = if g.pointwise() { 0 } else { ck2 * band * wo };
        let dcols_len = if with_dx { cols_len } else { 0 };
        with_scratch(cols_len, dcols_len, |cols, dcols| {
            // Wᵀ as a strided view: ck2×o.
            let wt_t = Mat {
                ptr: wt.as_ptr(),
                rs: 1,
                cs: ck2,
            };
            let mut r0 = 0;
            while r0 < ho {
                let r1 = (r0 + band).min(ho);
                let n = (r1 - r0) * wo;
                let dyv = Mat {
                    ptr: dyb[r0 * wo..].as_ptr(),
                    rs: ho * wo,
                    cs: 1,
                };
                let acc = r0 > 0;
                if g.pointwise() {
                    let xv = Mat {
                        ptr: xb[r0 * wo..].as_ptr(),
                        rs: 1,
                        cs: ho * wo,
                    };
                    // SAFETY: X band c×n, dYᵀ band n×o, dWᵀ c×o; dX band c×n with row
                    // stride h·w (= ho·wo) inside dxb.
                    unsafe {
                        sgemm(ck2, o, n, dw.as_mut_ptr(), o, acc, xv.t(), dyv.t());
                        sgemm(
                            ck2,
                            n,
                            o,
                            dxb[r0 * wo..].as_mut_ptr(),
                            ho * wo,
                            false,
                            wt_t,
                            dyv,
                        );
                    }
                } else {
                    im2col_band(xb, g, r0, r1, cols);
                    let cv = Mat {
                        ptr: cols.as_ptr(),
                        rs: 1,
                        cs: n,
                    };
                    // SAFETY: columns ck2×n, dYᵀ band n×o, dWᵀ ck2×o.
                    unsafe { sgemm(ck2, o, n, dw.as_mut_ptr(), o, acc, cv.t(), dyv.t()) };
                    if with_dx {
                        // SAFETY: Wᵀ ck2×o, dY band o×n, the column gradient ck2×n in scratch.
                        unsafe { sgemm(ck2, n, o, dcols.as_mut_ptr(), n, false, wt_t, dyv) };
                        col2im_band(&mut dcols[..ck2 * n], g, r0, r1, dxb);
                    }
                }
                r0 = r1;
            }
        });
    };
    let dx = match &adjoint {
        Some(ga) => {
            par_for(g.b, |bi| image(bi, &mut []));
            conv_forward(dy, &adjoint_kernel(wt, g), &vec![0f32; g.c], ga)
        }
        // SAFETY: image bi's block of dx is zeroed or overwritten by a GEMM before it is
        // added to.
        None => unsafe { par_new(g.b * in_sz, g.b, image) },
    };
    // Sum the slots (each dWᵀ), image by image, over slices of the weight; then transpose
    // the sum once.
    let mut dw_t = vec![0f32; w_sz];
    let piece = w_sz.div_ceil(64).max(1024);
    let dw_sum = SharedOut::new(&mut dw_t);
    par_for(w_sz.div_ceil(piece), |j| {
        let (a, e) = (j * piece, ((j + 1) * piece).min(w_sz));
        // SAFETY: slice j of dw_t, written by this call only.
        let d = unsafe { dw_sum.slice(a, e - a) };
        for part in dw_parts.chunks(w_sz) {
            d.iter_mut().zip(&part[a..e]).for_each(|(s, v)| *s += v);
        }
    });
    let mut dw = vec![0f32; w_sz];
    for (r, row) in dw_t.chunks(o).enumerate() {
        for (oi, &v) in row.iter().enumerate() {
            dw[oi * ck2 + r] = v;
        }
    }
    (dx, dw, db)
}

/// The data of a contiguous f32 CPU tensor; `what` names it in errors ("conv2d: input").
pub(crate) fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// [`f32_data`] of a (B, C, H, W) tensor, with its dimensions.
pub(crate) fn f32_images<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<(&'a [f32], [usize; 4])> {
    let dims = match l.shape().dims() {
        &[b, c, h, w] => [b, c, h, w],
        d => candle_core::bail!("{what} must be (B, C, H, W), got {d:?}"),
    };
    Ok((f32_data(s, l, what)?, dims))
}

/// Runs `f` on the contiguous f32 CPU data of `t`.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => Ok(f(f32_data(cs, l, what)?)),
        _ => candle_core::bail!("{what} must be on the CPU"),
    }
}

struct Conv2d {
    padding: usize,
    band_floats: usize,
}

impl Conv2d {
    fn geom(&self, x: &Shape, w: &Shape, b: &Shape) -> Result<Geom> {
        let (bn, c, h, wd) = x.dims4()?;
        let (o, c2, k, k2) = w.dims4()?;
        if c2 != c || k2 != k || (b.dims() != [o] && b.dims() != [bn, o]) {
            candle_core::bail!("conv2d: input {x:?}, weight {w:?} and bias {b:?} do not agree");
        }
        if h + 2 * self.padding < k || wd + 2 * self.padding < k {
            candle_core::bail!(
                "conv2d: kernel {k} with padding {} does not fit {h}×{wd}",
                self.padding
            );
        }
        Ok(Geom {
            b: bn,
            c,
            h,
            w: wd,
            o,
            k,
            p: self.padding,
            band_floats: self.band_floats,
        })
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-im2col-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.shape(), l2.shape(), l3.shape())?;
        let x = f32_data(s1, l1, "conv2d: input")?;
        let w = f32_data(s2, l2, "conv2d: weight")?;
        let b = f32_data(s3, l3, "conv2d: bias")?;
        let y = conv_forward(x, w, b, &g);
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.o, g.ho(), g.wo()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.shape(), w.shape(), b.shape())?;
        let grad = grad.contiguous()?;
        let (dx, dw, db) = with_cpu_f32(x, "conv2d: input", |xs| {
            with_cpu_f32(w, "conv2d: weight", |ws| {
                with_cpu_f32(&grad, "conv2d: output gradient", |dys| {
                    conv_backward(xs, ws, dys, &g)
                })
            })
        })???;
        let dev = x.device();
        let db = Tensor::from_vec(db, (g.b, g.o), dev)?;
        let db = if b.rank() == 1 { db.sum(0)? } else { db };
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(db),
        ))
    }
}

/// `conv2d(x, w) + b` with stride 1 and zero padding `padding` on every side: x (B, C, H, W),
/// w (O, C, k, k), b (O,) or one bias per image, (B, O) (a conditioning added to the
/// output, without a broadcast add over the image and its reduction in the backward).
/// f32 on the CPU uses the GEMM kernels of this module, anything else candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(
            &w.contiguous()?,
            &b.contiguous()?,
            Conv2d {
                padding,
                band_floats: BAND_FLOATS,
            },
        )
    } else {
        conv2d_ref(x, w, b, padding)
    }
}

/// The same from candle's stock ops (any device; reference for tests).
pub fn conv2d_ref(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> Result<Tensor> {
    let y = x.conv2d(w, padding, 1, 1, 1)?;
    match b.rank() {
        1 => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        _ => y.broadcast_add(&b.unsqueeze(2)?.unsqueeze(3)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn rand_tensor(shape: &[usize], rng: &mut StdRng) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn op(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize, band_floats: usize) -> Tensor {
        x.apply_op3(
            w,
            b,
            Conv2d {
                padding,
                band_floats,
            },
        )
        .unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-30)
    }

    /// (batch, in, out, side, kernel, padding) as the U-Net uses them (3×3 "same", 1×1 skips,
    /// one input channel in, one out), at small sides; band sizes that split an image into
    /// several bands and leave a last, shorter one.
    const CASES: [(usize, usize, usize, usize, usize, usize); 10] = [
        (3, 1, 8, 9, 3, 1),
        (2, 8, 1, 8, 3, 1),
        (3, 12, 8, 7, 3, 1),
        (2, 16, 24, 6, 1, 0),
        (1, 5, 4, 5, 3, 0),
        (2, 3, 4, 6, 5, 2),
        (5, 6, 6, 4, 3, 1),
        // Narrower than the kernel: every column shift wraps past a whole row.
        (2, 2, 3, 2, 5, 2),
        // Padding of k or more: no adjoint convolution, the input gradient by col2im.
        (2, 3, 4, 5, 1, 1),
        (1, 2, 3, 4, 3, 3),
    ];

    #[test]
    fn matches_candle_conv2d_forward_and_gradients() {
        let mut rng = StdRng::seed_from_u64(1);
        for (bn, c, o, s, k, p) in CASES {
            for band in [1 << 20, c * k * k * s * 2 + 1] {
                let x = Var::from_tensor(&rand_tensor(&[bn, c, s, s + 1], &mut rng)).unwrap();
                let w = Var::from_tensor(&rand_tensor(&[o, c, k, k], &mut rng)).unwrap();
                let b = Var::from_tensor(&rand_tensor(&[o], &mut rng)).unwrap();
                let y = op(&x, &w, &b, p, band);
                let yr = conv2d_ref(&x, &w, &b, p).unwrap();
                assert_eq!(y.dims(), yr.dims());
                let e = rel_err(&y, &yr);
                assert!(e < 1e-5, "forward {:?}: {e}", (bn, c, o, s, k, p));
                let r = rand_tensor(y.dims(), &mut rng);
                let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let gr = (yr * &r).unwrap().sum_all().unwrap().backward().unwrap();
                for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                    let e = rel_err(g.get(v).unwrap(), gr.get(v).unwrap());
                    assert!(
                        e < 1e-4,
                        "d{name} {:?} band {band}: {e}",
                        (bn, c, o, s, k, p)
                    );
                }
            }
        }
    }

    /// The loss Σ r⊙conv(x, w, b) is linear in each argument, so a central difference with a
    /// large step is exact up to rounding: an independent check of all three gradients,
    /// borders and corners included.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(2);
        for (bn, c, o, s, k, p) in CASES {
            let args = [
                rand_tensor(&[bn, c, s, s], &mut rng),
                rand_tensor(&[o, c, k, k], &mut rng),
                rand_tensor(&[o], &mut rng),
            ];
            let vars: Vec<Var> = args.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            let y = op(&vars[0], &vars[1], &vars[2], p, 200);
            let r = rand_tensor(y.dims(), &mut rng);
            let loss = |a: &[Tensor]| -> f64 {
                let y = op(&a[0], &a[1], &a[2], p, 200);
                (y.to_dtype(DType::F64).unwrap() * r.to_dtype(DType::F64).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (ai, var) in vars.iter().enumerate() {
                let gv: Vec<f32> = grads
                    .get(var)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let scale = gv.iter().fold(0f32, |m, v| m.max(v.abs()));
                let n = gv.len();
                // First, last and a spread of coordinates in between.
                let mut idx: Vec<usize> = (0..n).step_by((n / 23).max(1)).collect();
                idx.push(n - 1);
                for i in idx {
                    let base: Vec<f32> = args[ai].flatten_all().unwrap().to_vec1().unwrap();
                    let mut plus = base.clone();
                    let mut minus = base;
                    plus[i] += 0.5;
                    minus[i] -= 0.5;
                    let at = |v: Vec<f32>| {
                        let mut a = args.to_vec();
                        a[ai] = Tensor::from_vec(v, args[ai].shape(), &Device::Cpu).unwrap();
                        loss(&a)
                    };
                    let fd = (at(plus) - at(minus)) as f32;
                    assert!(
                        (fd - gv[i]).abs() <= 1e-4 * scale,
                        "arg {ai} index {i} of {:?}: fd {fd} vs {}",
                        (bn, c, o, s, k, p),
                        gv[i]
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = rand_tensor(&[1, 3, 5, 5], &mut rng);
        let w = rand_tensor(&[2, 4, 3, 3], &mut rng);
        let b = rand_tensor(&[2], &mut rng);
        assert!(conv2d(&x, &w, &b, 1).is_err());
        let w = rand_tensor(&[2, 3, 7, 7], &mut rng);
        assert!(conv2d(&x, &w, &b, 0).is_err());
    }
}
