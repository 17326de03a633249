//! Gridding (samples → uv grid) and degridding (uv grid → samples) for one w-plane.
//!
//! Samples are bucketed once per plan by (first w-plane, strip of 16 grid rows, tile of 16
//! columns). A sample's footprint starts inside its tile and reaches at most `W ≤ 16` cells
//! further, so it touches only its own strip and the next one: gridding runs over even strips
//! in parallel, then odd strips, and no two tasks ever write the same grid row. Within a strip,
//! samples of one tile accumulate into a small private buffer that is added to the grid once.

use super::kernel::{madd, taps, EsKernel};
use super::wstack::WPlanes;
use num_complex::Complex;
use rayon::prelude::*;

type C64 = Complex<f64>;

pub const TILE: usize = 16;

/// A sample in grid units: `u`, `v` in `[0, N)`, `w` the plane coordinate (0 without w).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub u: f64,
    pub v: f64,
    pub w: f64,
    /// Index of the sample in the caller's list.
    pub idx: u32,
    /// Mirrored to `−(u, v, w)`: the value is conjugated.
    pub flip: bool,
}

/// Samples sorted into buckets, ready for any number of gridding/degridding passes.
pub struct Plan {
    pub grid: [usize; 2],
    pub support: usize,
    pub n_groups: usize,
    pub n_strips: usize,
    pub samples: Vec<Sample>,
    /// `offsets[g * n_strips + s]`: first sample of group `g`, strip `s` (length `groups·strips+1`).
    pub offsets: Vec<usize>,
}

#[derive(Clone, Copy)]
struct SamplePtr(*mut Sample);
unsafe impl Send for SamplePtr {}
unsafe impl Sync for SamplePtr {}

#[derive(Clone, Copy)]
struct SendPtr(*mut C64);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[inline(always)]
pub(super) fn start_and_offset(x: f64, half: f64) -> (isize, f64) {
    let a = x - half;
    let i0 = a.ceil();
    (i0 as isize, i0 - a)
}

impl Plan {
    /// `coord(i)` gives sample `i` as `(u·dx, v·dy, w)` (cycles per pixel, wavelengths).
    /// A parallel counting sort by bucket: keys first, then per-chunk histograms so that each
    /// chunk scatters into its own slots.
    pub fn new(
        grid: [usize; 2],
        kernel: &EsKernel,
        planes: Option<&WPlanes>,
        n: usize,
        coord: impl Fn(usize) -> [f64; 3] + Sync,
    ) -> Self {
        let [gny, gnx] = grid;
        let w = kernel.support;
        let half = w as f64 / 2.0;
        let n_strips = gny / TILE;
        let n_tx = gnx / TILE;
        let n_groups = planes.map_or(1, |p| p.n_groups());
        let per_group = n_strips * n_tx;
        let n_keys = n_groups * per_group;
        let make = |i: usize| -> (usize, Sample) {
            let [mut fu, mut fv, mut wl] = coord(i);
            let flip = planes.is_some() && wl < 0.0;
            if flip {
                fu = -fu;
                fv = -fv;
                wl = -wl;
            }
            let u = wrap_coord(fu, gnx);
            let v = wrap_coord(fv, gny);
            let (wc, g) = match planes {
                Some(p) => {
                    let wc = p.coord(wl);
                    let (g, _) = start_and_offset(wc, half);
                    (wc, g.clamp(0, n_groups as isize - 1) as usize)
                }
                None => (0.0, 0),
            };
            let (iu, _) = start_and_offset(u, half);
            let (iv, _) = start_and_offset(v, half);
            let iu = iu.rem_euclid(gnx as isize) as usize;
            let iv = iv.rem_euclid(gny as isize) as usize;
            let key = g * per_group + (iv / TILE) * n_tx + iu / TILE;
            let s = Sample {
                u,
                v,
                w: wc,
                idx: i as u32,
                flip,
            };
            (key, s)
        };
        let keys: Vec<u32> = (0..n).into_par_iter().map(|i| make(i).0 as u32).collect();
        let n_chunks = (4 * rayon::current_num_threads())
            .min(n.div_ceil(4096))
            .max(1);
        let chunk_len = n.div_ceil(n_chunks).max(1);
        let hists: Vec<Vec<u32>> = keys
            .par_chunks(chunk_len)
            .map(|ks| {
                let mut h = vec![0u32; n_keys];
                for &k in ks {
                    h[k as usize] += 1;
                }
                h
            })
            .collect();
        // Slot of (key, chunk) in key-major order; `start[k]` is the first slot of key k.
        let mut start = vec![0usize; n_keys + 1];
        let mut chunk_pos = vec![vec![0usize; n_keys]; hists.len()];
        let mut acc = 0usize;
        for k in 0..n_keys {
            start[k] = acc;
            for (c, h) in hists.iter().enumerate() {
                chunk_pos[c][k] = acc;
                acc += h[k] as usize;
            }
        }
        start[n_keys] = acc;
        drop(hists);
        let mut samples = vec![Sample::default(); n];
        let ptr = SamplePtr(samples.as_mut_ptr());
        keys.par_chunks(chunk_len)
            .zip(chunk_pos.into_par_iter())
            .enumerate()
            .for_each(|(c, (ks, mut pos))| {
                let p = ptr;
                for (j, &k) in ks.iter().enumerate() {
                    let i = c * chunk_len + j;
                    let slot = &mut pos[k as usize];
                    // SAFETY: slots of (key, chunk) pairs are disjoint ranges of `samples`.
                    unsafe { *p.0.add(*slot) = make(i).1 };
                    *slot += 1;
                }
            });
        let offsets = (0..=n_groups * n_strips)
            .map(|gs| start[gs * n_tx])
            .collect();
        Self {
            grid,
            support: w,
            n_groups,
            n_strips,
            samples,
            offsets,
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether any sample touches plane `k`.
    pub fn touches_plane(&self, k: usize) -> bool {
        let r = self.groups_for_plane(k);
        if r.is_empty() {
            return false;
        }
        let ns = self.n_strips;
        self.offsets[r.end * ns] > self.offsets[r.start * ns]
    }

    /// Groups (first planes) whose samples touch plane `k`.
    pub fn groups_for_plane(&self, k: usize) -> std::ops::Range<usize> {
        if self.n_groups == 1 && k == 0 {
            return 0..1;
        }
        let lo = (k + 1).saturating_sub(self.support);
        lo..(k + 1).min(self.n_groups)
    }
}

/// `f` (cycles per pixel, periodic) to a grid coordinate in `[0, n)`.
#[inline]
pub(super) fn wrap_coord(f: f64, n: usize) -> f64 {
    let x = (f - f.floor()) * n as f64;
    if x >= n as f64 {
        x - n as f64
    } else {
        x
    }
}

/// Weight of plane `k` for a sample at plane coordinate `wc` (1 without w).
#[inline(always)]
pub(super) fn plane_weight(kernel: &EsKernel, use_w: bool, wc: f64, k: usize) -> f64 {
    if !use_w {
        return 1.0;
    }
    let (p0, t) = start_and_offset(wc, kernel.support as f64 / 2.0);
    let j = k as isize - p0;
    if j < 0 || j >= kernel.support as isize {
        // Clamped at the first/last group by rounding: the tap is (numerically) zero there.
        return 0.0;
    }
    kernel.tap(j as usize, t)
}

macro_rules! dispatch_support {
    ($w:expr, $f:ident, $($arg:expr),*) => {
        match $w {
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            w => unreachable!("support {w} is not instantiated"),
        }
    };
}

/// Adds the samples of plane `k` (values `vals`, in plan order, already conjugated for
/// mirrored samples) onto `grid` (`ny × nx`, row-major).
pub fn grid_plane(
    plan: &Plan,
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    vals: &[C64],
    grid: &mut [C64],
) {
    assert_eq!(vals.len(), plan.samples.len());
    assert_eq!(grid.len(), plan.grid[0] * plan.grid[1]);
    dispatch_support!(
        plan.support,
        grid_plane_w,
        plan,
        kernel,
        use_w,
        k,
        vals,
        grid
    )
}

fn grid_plane_w<const W: usize>(
    plan: &Plan,
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    vals: &[C64],
    grid: &mut [C64],
) {
    let [gny, gnx] = plan.grid;
    let ns = plan.n_strips;
    let groups = plan.groups_for_plane(k);
    let ptr = SendPtr(grid.as_mut_ptr());
    let tb = TILE + W;
    let fma = has_fma();
    for parity in 0..2 {
        (parity..ns)
            .step_by(2)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each_init(
                || vec![C64::default(); tb * tb],
                |tile, s| {
                    for g in groups.clone() {
                        let a = plan.offsets[g * ns + s];
                        let b = plan.offsets[g * ns + s + 1];
                        // SAFETY: strip `s` writes only rows [16 s, 16 s + 16 + W) (mod ny),
                        // and strips of one parity are two apart, so no row is shared.
                        unsafe {
                            #[cfg(target_arch = "x86_64")]
                            if fma {
                                grid_strip_fma::<W>(
                                    plan, kernel, use_w, k, vals, a, b, s, tile, ptr, gny, gnx,
                                );
                                continue;
                            }
                            grid_strip::<W, false>(
                                plan, kernel, use_w, k, vals, a, b, s, tile, ptr, gny, gnx,
                            )
                        };
                    }
                },
            );
    }
}

/// Whether the CPU has AVX2 and FMA (checked once; the hot loops are compiled twice).
pub(super) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn grid_strip_fma<const W: usize>(
    plan: &Plan,
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    vals: &[C64],
    a: usize,
    b: usize,
    strip: usize,
    tile: &mut [C64],
    grid: SendPtr,
    gny: usize,
    gnx: usize,
) {
    grid_strip::<W, true>(
        plan, kernel, use_w, k, vals, a, b, strip, tile, grid, gny, gnx,
    )
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn grid_strip<const W: usize, const F: bool>(
    plan: &Plan,
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    vals: &[C64],
    a: usize,
    b: usize,
    strip: usize,
    tile: &mut [C64],
    grid: SendPtr,
    gny: usize,
    gnx: usize,
) {
    let half = W as f64 / 2.0;
    let tb = TILE + W;
    let coeffs = kernel.coeffs();
    let deg = kernel.degree;
    let row0 = strip * TILE;
    let mut i = a;
    while i < b {
        // One run of samples sharing a tile.
        let (iu_first, _) = start_and_offset(plan.samples[i].u, half);
        let tx = iu_first.rem_euclid(gnx as isize) as usize / TILE;
        let col0 = tx * TILE;
        let (mut umin, mut umax, mut vmin, mut vmax) = (tb, 0, tb, 0);
        while i < b {
            let smp = &plan.samples[i];
            let (iu, tu) = start_and_offset(smp.u, half);
            let iu = iu.rem_euclid(gnx as isize) as usize;
            if iu / TILE != tx {
                break;
            }
            let (iv, tv) = start_and_offset(smp.v, half);
            let iv = iv.rem_euclid(gny as isize) as usize;
            let ou = iu - col0;
            let ov = iv - row0;
            let wt = plane_weight(kernel, use_w, smp.w, k);
            let val = vals[i] * wt;
            let ku = taps::<W, F>(coeffs, deg, tu);
            let kv = taps::<W, F>(coeffs, deg, tv);
            for (r, &kvr) in kv.iter().enumerate() {
                let a = val * kvr;
                let row: &mut [C64; W] = (&mut tile[(ov + r) * tb + ou..(ov + r) * tb + ou + W])
                    .try_into()
                    .unwrap();
                for c in 0..W {
                    row[c].re = madd::<F>(a.re, ku[c], row[c].re);
                    row[c].im = madd::<F>(a.im, ku[c], row[c].im);
                }
            }
            umin = umin.min(ou);
            umax = umax.max(ou + W);
            vmin = vmin.min(ov);
            vmax = vmax.max(ov + W);
            i += 1;
        }
        // Flush the touched rectangle of the tile buffer and clear it.
        for r in vmin..vmax {
            let gr = (row0 + r) % gny;
            let grow = grid.0.add(gr * gnx);
            let trow = &mut tile[r * tb..(r + 1) * tb];
            if col0 + umax <= gnx {
                let dst = std::slice::from_raw_parts_mut(grow.add(col0 + umin), umax - umin);
                for (d, t) in dst.iter_mut().zip(&mut trow[umin..umax]) {
                    *d += *t;
                    *t = C64::default();
                }
            } else {
                for (c, t) in trow.iter_mut().enumerate().take(umax).skip(umin) {
                    *grow.add((col0 + c) % gnx) += *t;
                    *t = C64::default();
                }
            }
        }
    }
}

/// Adds plane `k`'s contribution, interpolated from `grid`, to `out` (plan order).
pub fn degrid_plane(
    plan: &Plan,
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    grid: &[C64],
    out: &mut [C64],
) {
    assert_eq!(out.len(), plan.samples.len());
    assert_eq!(grid.len(), plan.grid[0] * plan.grid[1]);
    dispatch_support!(
        plan.support,
        degrid_plane_w,
        plan,
        kernel,
        use_w,
        k,
        grid,
        out
    )
}

fn degrid_plane_w<const W: usize>(
    plan: &Plan,
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    grid: &[C64],
    out: &mut [C64],
) {
    let [gny, gnx] = plan.grid;
    let ns = plan.n_strips;
    for g in plan.groups_for_plane(k) {
        let a = plan.offsets[g * ns];
        let b = plan.offsets[(g + 1) * ns];
        let fma = has_fma();
        plan.samples[a..b]
            .par_chunks(2048)
            .zip(out[a..b].par_chunks_mut(2048))
            .for_each(|(ss, oo)| {
                #[cfg(target_arch = "x86_64")]
                if fma {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { degrid_chunk_fma::<W>(kernel, use_w, k, grid, gny, gnx, ss, oo) };
                    return;
                }
                degrid_chunk::<W, false>(kernel, use_w, k, grid, gny, gnx, ss, oo);
            });
    }
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn degrid_chunk_fma<const W: usize>(
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    grid: &[C64],
    gny: usize,
    gnx: usize,
    ss: &[Sample],
    oo: &mut [C64],
) {
    degrid_chunk::<W, true>(kernel, use_w, k, grid, gny, gnx, ss, oo)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn degrid_chunk<const W: usize, const F: bool>(
    kernel: &EsKernel,
    use_w: bool,
    k: usize,
    grid: &[C64],
    gny: usize,
    gnx: usize,
    ss: &[Sample],
    oo: &mut [C64],
) {
    let half = W as f64 / 2.0;
    let coeffs = kernel.coeffs();
    let deg = kernel.degree;
    for (smp, o) in ss.iter().zip(oo.iter_mut()) {
        let wt = plane_weight(kernel, use_w, smp.w, k);
        if wt == 0.0 {
            continue;
        }
        let (iu, tu) = start_and_offset(smp.u, half);
        let (iv, tv) = start_and_offset(smp.v, half);
        let ku = taps::<W, F>(coeffs, deg, tu);
        let kv = taps::<W, F>(coeffs, deg, tv);
        let iu = iu.rem_euclid(gnx as isize) as usize;
        let iv = iv.rem_euclid(gny as isize) as usize;
        let (mut sr, mut si) = (0.0, 0.0);
        for (r, &kvr) in kv.iter().enumerate() {
            let gr = (iv + r) % gny;
            let (mut rr, mut ri) = (0.0, 0.0);
            if iu + W <= gnx {
                let row: &[C64; W] = grid[gr * gnx + iu..gr * gnx + iu + W].try_into().unwrap();
                for c in 0..W {
                    rr = madd::<F>(row[c].re, ku[c], rr);
                    ri = madd::<F>(row[c].im, ku[c], ri);
                }
            } else {
                for (c, &kuc) in ku.iter().enumerate() {
                    let gv = grid[gr * gnx + (iu + c) % gnx];
                    rr = madd::<F>(gv.re, kuc, rr);
                    ri = madd::<F>(gv.im, kuc, ri);
                }
            }
            sr = madd::<F>(rr, kvr, sr);
            si = madd::<F>(ri, kvr, si);
        }
        *o += C64::new(sr * wt, si * wt);
    }
}
