//! Gridding of many chunks one w-plane at a time, as ducc0's wgridder does: the plan keeps
//! only a 4-byte id per sample (sorted by first w-plane, strip and tile), and coordinates and
//! values are recomputed from the caller's arrays on every pass. Memory is then one uv grid per
//! product plus 4 bytes per sample, instead of every w-plane's grid (64 MB each at 2048²) and
//! 32-byte planned samples. The dirty image and its PSF share the plan, the kernel taps and
//! the sweep over the samples.

use super::exec::Setup;
use super::grid::{has_fma, plane_weight, start_and_offset, wrap_coord, Sample, TILE};
use super::kernel::madd;
use super::kernel::taps;
use super::wstack::PixelFactors;
use super::VisSource;
use num_complex::Complex;
use rayon::prelude::*;

type C64 = Complex<f64>;

/// Rows of consecutive chunks whose sample ids `(row << shift) | channel` fit in a u32.
struct Block {
    /// Per row of the block: (chunk, row within the chunk).
    rows: Vec<(u32, u32)>,
    /// Sample ids sorted by bucket (first plane, strip, tile); stable within a bucket, so the
    /// channels of a row stay together and reads of `vis`/`weight` stay mostly sequential.
    ids: Vec<u32>,
    /// `offsets[g * n_strips + s]`: first id of group `g`, strip `s`.
    offsets: Vec<usize>,
}

struct Ctx<'a> {
    setup: &'a Setup,
    src: &'a [VisSource<'a>],
    /// Per chunk, per channel: `[ν/c · dx, ν/c · dy, ν/c]`.
    scale: Vec<Vec<[f64; 3]>>,
    shift: u32,
    phase: CentrePhase,
    n_groups: usize,
    n_strips: usize,
    n_tx: usize,
}

/// `Setup::centre_phase` without a `sin_cos` per sample and plane (a sixth of the gridding
/// time): `exp(iβ w_c)` is linear in the plane coordinate, so it is a table entry at the
/// sample's first plane times `exp(iβ x)` with `|x| ≤ 1/2`, by a short Taylor series.
struct CentrePhase {
    /// Phase at plane coordinate `p + half − 1/2` for first plane `p`.
    table: Vec<C64>,
    /// Phase at plane coordinate 0.
    c0: C64,
    /// Phase step per unit of plane coordinate (`π/σ`).
    beta: f64,
    half: f64,
    /// Taylor coefficients of cos and sin/θ in θ².
    cos_c: [f64; 9],
    sin_c: [f64; 8],
}

impl CentrePhase {
    fn new(setup: &Setup) -> Self {
        let half = setup.kernel.support as f64 / 2.0;
        let mut fact = [1.0f64; 18];
        for i in 1..18 {
            fact[i] = fact[i - 1] * i as f64;
        }
        let sign = |k: usize| if k.is_multiple_of(2) { 1.0 } else { -1.0 };
        let cos_c = std::array::from_fn(|k| sign(k) / fact[2 * k]);
        let sin_c = std::array::from_fn(|k| sign(k) / fact[2 * k + 1]);
        let (table, beta) = match &setup.planes {
            Some(p) => (
                (0..p.n_planes + 2)
                    .map(|i| setup.centre_phase(i as f64 + half - 0.5))
                    .collect(),
                -2.0 * std::f64::consts::PI * p.x_centre * p.dw,
            ),
            None => (Vec::new(), 0.0),
        };
        Self {
            table,
            c0: setup.centre_phase(0.0),
            beta,
            half,
            cos_c,
            sin_c,
        }
    }

    #[inline(always)]
    fn at(&self, wc: f64) -> C64 {
        let a = wc - self.half;
        let p0 = a.ceil();
        let th = self.beta * (0.5 - (p0 - a));
        match self.table.get(p0 as usize) {
            // The series to θ¹⁶ is exact to rounding for |θ| ≤ π/2.
            Some(t) if p0 >= 0.0 && th.abs() <= 1.6 => {
                let t2 = th * th;
                let mut c = self.cos_c[8];
                for &k in self.cos_c[..8].iter().rev() {
                    c = c * t2 + k;
                }
                let mut s = self.sin_c[7];
                for &k in self.sin_c[..7].iter().rev() {
                    s = s * t2 + k;
                }
                *t * C64::new(c, th * s)
            }
            _ => self.c0 * C64::from_polar(1.0, self.beta * wc),
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut C64);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl Ctx<'_> {
    /// The sample in grid units, exactly as `Plan::new` places it.
    #[inline(always)]
    fn locate(&self, c: usize, r: usize, ch: usize) -> Sample {
        let x = self.src[c].uvw[r];
        let s = self.scale[c][ch];
        let planes = self.setup.planes.as_ref();
        let (mut fu, mut fv) = (x[0] * s[0], x[1] * s[1]);
        let mut wl = if planes.is_some() { x[2] * s[2] } else { 0.0 };
        let flip = planes.is_some() && wl < 0.0;
        if flip {
            fu = -fu;
            fv = -fv;
            wl = -wl;
        }
        let [gny, gnx] = self.setup.grid;
        Sample {
            u: wrap_coord(fu, gnx),
            v: wrap_coord(fv, gny),
            w: planes.map_or(0.0, |p| p.coord(wl)),
            idx: 0,
            flip,
        }
    }

    #[inline(always)]
    fn key(&self, s: &Sample) -> usize {
        let [gny, gnx] = self.setup.grid;
        let half = self.setup.kernel.support as f64 / 2.0;
        let g = if self.setup.planes.is_some() {
            let (g, _) = start_and_offset(s.w, half);
            g.clamp(0, self.n_groups as isize - 1) as usize
        } else {
            0
        };
        let (iu, _) = start_and_offset(s.u, half);
        let (iv, _) = start_and_offset(s.v, half);
        let iu = iu.rem_euclid(gnx as isize) as usize;
        let iv = iv.rem_euclid(gny as isize) as usize;
        (g * self.n_strips + iv / TILE) * self.n_tx + iu / TILE
    }

    /// Counting sort of the used samples (weight ≠ 0) of `rows` by bucket, in parallel parts.
    fn plan_block(&self, rows: Vec<(u32, u32)>) -> Block {
        let n_keys = self.n_groups * self.n_strips * self.n_tx;
        let n_parts = (2 * rayon::current_num_threads())
            .min(rows.len().div_ceil(256))
            .max(1);
        let part_len = rows.len().div_ceil(n_parts).max(1);
        let each = |rs: &[(u32, u32)], f: &mut dyn FnMut(usize)| {
            for &(c, r) in rs {
                let (c, r) = (c as usize, r as usize);
                let src = &self.src[c];
                let nchan = src.freq.len();
                for ch in 0..nchan {
                    if src.weight[r * nchan + ch] != 0.0 {
                        f(self.key(&self.locate(c, r, ch)));
                    }
                }
            }
        };
        let hists: Vec<Vec<u32>> = rows
            .par_chunks(part_len)
            .map(|rs| {
                let mut h = vec![0u32; n_keys];
                each(rs, &mut |k| h[k] += 1);
                h
            })
            .collect();
        let mut start = vec![0usize; n_keys + 1];
        let mut pos: Vec<Vec<u32>> = vec![vec![0u32; n_keys]; hists.len()];
        let mut acc = 0usize;
        for k in 0..n_keys {
            start[k] = acc;
            for (p, h) in hists.iter().enumerate() {
                pos[p][k] = acc as u32;
                acc += h[k] as usize;
            }
        }
        start[n_keys] = acc;
        drop(hists);
        let mut ids = vec![0u32; acc];
        let ptr = IdPtr(ids.as_mut_ptr());
        rows.par_chunks(part_len)
            .zip(pos.into_par_iter())
            .enumerate()
            .for_each(|(p, (rs, mut pos))| {
                let out = ptr;
                for (j, &(c, r)) in (p * part_len..).zip(rs) {
                    let (c, r) = (c as usize, r as usize);
                    let src = &self.src[c];
                    let nchan = src.freq.len();
                    let row_id = (j as u32) << self.shift;
                    for ch in 0..nchan {
                        if src.weight[r * nchan + ch] != 0.0 {
                            let slot = &mut pos[self.key(&self.locate(c, r, ch))];
                            // SAFETY: the slots of (key, part) pairs are disjoint ranges.
                            unsafe { *out.0.add(*slot as usize) = row_id | ch as u32 };
                            *slot += 1;
                        }
                    }
                }
            });
        let ns = self.n_strips;
        let offsets = (0..=self.n_groups * ns)
            .map(|gs| start[gs * self.n_tx])
            .collect();
        Block { rows, ids, offsets }
    }

    fn groups_for_plane(&self, k: usize) -> std::ops::Range<usize> {
        let lo = (k + 1).saturating_sub(self.setup.kernel.support);
        lo..(k + 1).min(self.n_groups)
    }

    fn touches_plane(&self, blk: &Block, k: usize) -> bool {
        let r = self.groups_for_plane(k);
        !r.is_empty() && blk.offsets[r.end * self.n_strips] > blk.offsets[r.start * self.n_strips]
    }

    fn grid_plane<const P: usize>(&self, blk: &Block, k: usize, grids: [SendPtr; P]) {
        match self.setup.kernel.support {
            2 => grid_plane_w::<2, P>(self, blk, k, grids),
            3 => grid_plane_w::<3, P>(self, blk, k, grids),
            4 => grid_plane_w::<4, P>(self, blk, k, grids),
            5 => grid_plane_w::<5, P>(self, blk, k, grids),
            6 => grid_plane_w::<6, P>(self, blk, k, grids),
            7 => grid_plane_w::<7, P>(self, blk, k, grids),
            8 => grid_plane_w::<8, P>(self, blk, k, grids),
            9 => grid_plane_w::<9, P>(self, blk, k, grids),
            10 => grid_plane_w::<10, P>(self, blk, k, grids),
            11 => grid_plane_w::<11, P>(self, blk, k, grids),
            12 => grid_plane_w::<12, P>(self, blk, k, grids),
            w => unreachable!("support {w} is not instantiated"),
        }
    }
}

#[derive(Clone, Copy)]
struct IdPtr(*mut u32);
unsafe impl Send for IdPtr {}
unsafe impl Sync for IdPtr {}

fn grid_plane_w<const W: usize, const P: usize>(
    ctx: &Ctx,
    blk: &Block,
    k: usize,
    grids: [SendPtr; P],
) {
    let ns = ctx.n_strips;
    let groups = ctx.groups_for_plane(k);
    let tb = TILE + W;
    let fma = has_fma();
    for parity in 0..2 {
        (parity..ns)
            .step_by(2)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each_init(
                || vec![C64::default(); P * tb * tb],
                |tile, s| {
                    for g in groups.clone() {
                        let a = blk.offsets[g * ns + s];
                        let b = blk.offsets[g * ns + s + 1];
                        if a == b {
                            continue;
                        }
                        // SAFETY: strip `s` writes only rows [16 s, 16 s + 16 + W) (mod ny),
                        // and strips of one parity are two apart, so no row is shared.
                        unsafe {
                            #[cfg(target_arch = "x86_64")]
                            if fma {
                                strip_fma::<W, P>(ctx, blk, k, a, b, s, tile, grids);
                                continue;
                            }
                            strip::<W, P, false>(ctx, blk, k, a, b, s, tile, grids)
                        };
                    }
                },
            );
    }
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn strip_fma<const W: usize, const P: usize>(
    ctx: &Ctx,
    blk: &Block,
    k: usize,
    a: usize,
    b: usize,
    s: usize,
    tile: &mut [C64],
    grids: [SendPtr; P],
) {
    strip::<W, P, true>(ctx, blk, k, a, b, s, tile, grids)
}

/// Adds the touched rectangle of each product's tile buffer to its grid and clears it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn flush<const P: usize>(
    tile: &mut [C64],
    tb: usize,
    grids: [SendPtr; P],
    row0: usize,
    col0: usize,
    (umin, umax, vmin, vmax): (usize, usize, usize, usize),
    gny: usize,
    gnx: usize,
) {
    for (p, grid) in grids.iter().enumerate() {
        let t = &mut tile[p * tb * tb..(p + 1) * tb * tb];
        for r in vmin..vmax {
            let grow = grid.0.add(((row0 + r) % gny) * gnx);
            let trow = &mut t[r * tb..(r + 1) * tb];
            if col0 + umax <= gnx {
                let dst = std::slice::from_raw_parts_mut(grow.add(col0 + umin), umax - umin);
                for (d, x) in dst.iter_mut().zip(&mut trow[umin..umax]) {
                    *d += *x;
                    *x = C64::default();
                }
            } else {
                for (c, x) in trow.iter_mut().enumerate().take(umax).skip(umin) {
                    *grow.add((col0 + c) % gnx) += *x;
                    *x = C64::default();
                }
            }
        }
    }
}

/// Grids ids `a..b` of one strip onto plane `k`: product 0 is `weight · vis`, product 1 (when
/// `P = 2`) is `weight` alone (the PSF).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn strip<const W: usize, const P: usize, const F: bool>(
    ctx: &Ctx,
    blk: &Block,
    k: usize,
    a: usize,
    b: usize,
    strip: usize,
    tile: &mut [C64],
    grids: [SendPtr; P],
) {
    let setup = ctx.setup;
    let kernel = &setup.kernel;
    let use_w = setup.planes.is_some();
    let [gny, gnx] = setup.grid;
    let half = W as f64 / 2.0;
    let tb = TILE + W;
    let coeffs = kernel.coeffs();
    let deg = kernel.degree;
    let row0 = strip * TILE;
    let mask = (1u32 << ctx.shift) - 1;
    let mut tx = usize::MAX;
    let mut col0 = 0;
    let empty = (tb, 0, tb, 0);
    let mut rect = empty;
    for &id in &blk.ids[a..b] {
        let (c, r) = blk.rows[(id >> ctx.shift) as usize];
        let (c, r, ch) = (c as usize, r as usize, (id & mask) as usize);
        let smp = ctx.locate(c, r, ch);
        let pw = plane_weight(kernel, use_w, smp.w, k);
        if pw == 0.0 {
            continue;
        }
        let (iu, tu) = start_and_offset(smp.u, half);
        let iu = iu.rem_euclid(gnx as isize) as usize;
        if iu / TILE != tx {
            if tx != usize::MAX {
                flush(tile, tb, grids, row0, col0, rect, gny, gnx);
            }
            tx = iu / TILE;
            col0 = tx * TILE;
            rect = empty;
        }
        let (iv, tv) = start_and_offset(smp.v, half);
        let iv = iv.rem_euclid(gny as isize) as usize;
        let (ou, ov) = (iu - col0, iv - row0);
        let src = &ctx.src[c];
        let j = r * src.freq.len() + ch;
        let base = if use_w {
            ctx.phase.at(smp.w) * (src.weight[j] as f64 * pw)
        } else {
            C64::new(src.weight[j] as f64, 0.0)
        };
        let vis = src.vis[j];
        let vis = C64::new(
            vis.re as f64,
            if smp.flip { -vis.im } else { vis.im } as f64,
        );
        let mut vals = [base; P];
        vals[0] = vis * base;
        let ku = taps::<W, F>(coeffs, deg, tu);
        let kv = taps::<W, F>(coeffs, deg, tv);
        for (p, val) in vals.iter().enumerate() {
            let t = &mut tile[p * tb * tb..(p + 1) * tb * tb];
            for (rr, &kvr) in kv.iter().enumerate() {
                let av = *val * kvr;
                let o = (ov + rr) * tb + ou;
                let row: &mut [C64; W] = (&mut t[o..o + W]).try_into().unwrap();
                for cc in 0..W {
                    row[cc].re = madd::<F>(av.re, ku[cc], row[cc].re);
                    row[cc].im = madd::<F>(av.im, ku[cc], row[cc].im);
                }
            }
        }
        rect = (
            rect.0.min(ou),
            rect.1.max(ou + W),
            rect.2.min(ov),
            rect.3.max(ov + W),
        );
    }
    if tx != usize::MAX {
        flush(tile, tb, grids, row0, col0, rect, gny, gnx);
    }
}

/// The `P` dirty images (product 0: `weight · vis`; product 1: `weight`) of all samples of
/// `src` with weight ≠ 0; `max_rows` caps the rows of one block (tests force several blocks).
pub(super) fn grid_chunks<const P: usize>(
    setup: &Setup,
    src: &[VisSource],
    max_rows: usize,
) -> [Vec<f64>; P] {
    let [gny, gnx] = setup.grid;
    let max_nchan = src.iter().map(|s| s.freq.len()).max().unwrap_or(1).max(1);
    let shift = max_nchan.next_power_of_two().trailing_zeros();
    let use_w = setup.planes.is_some();
    let ctx = Ctx {
        setup,
        src,
        scale: src
            .iter()
            .map(|s| {
                s.freq
                    .iter()
                    .map(|f| {
                        let l = f / super::exec::SPEED_OF_LIGHT;
                        [
                            l * setup.geom.dx,
                            l * setup.geom.dy,
                            if use_w { l } else { 0.0 },
                        ]
                    })
                    .collect()
            })
            .collect(),
        shift,
        phase: CentrePhase::new(setup),
        n_groups: setup.planes.as_ref().map_or(1, |p| p.n_groups()),
        n_strips: gny / TILE,
        n_tx: gnx / TILE,
    };
    let block_rows = (((1u64 << 32) >> shift) as usize).min(max_rows).max(1);
    let mut blocks = Vec::new();
    let mut rows = Vec::new();
    for (c, s) in src.iter().enumerate() {
        for r in 0..s.uvw.len() {
            rows.push((c as u32, r as u32));
            if rows.len() == block_rows {
                blocks.push(ctx.plan_block(std::mem::take(&mut rows)));
            }
        }
    }
    if !rows.is_empty() {
        blocks.push(ctx.plan_block(rows));
    }

    let mut pf = PixelFactors::new(
        &setup.geom,
        &setup.kernel,
        setup.grid,
        setup.planes.as_ref(),
    );
    let mut grids: Vec<Vec<C64>> = Vec::new();
    let mut acc: [Vec<f64>; P] = std::array::from_fn(|_| vec![0.0; setup.geom.len()]);
    for k in 0..setup.n_planes() {
        if blocks.iter().any(|b| ctx.touches_plane(b, k)) {
            if grids.is_empty() {
                grids = (0..P).map(|_| vec![C64::default(); gny * gnx]).collect();
            } else {
                for g in &mut grids {
                    g.par_iter_mut().for_each(|c| *c = C64::default());
                }
            }
            let ptrs: [SendPtr; P] = std::array::from_fn(|p| SendPtr(grids[p].as_mut_ptr()));
            for b in &blocks {
                if ctx.touches_plane(b, k) {
                    ctx.grid_plane(b, k, ptrs);
                }
            }
            for (g, a) in grids.iter_mut().zip(acc.iter_mut()) {
                setup.fft.grid_to_image(g);
                setup.accumulate(g, &pf.cur, a);
            }
        }
        pf.advance();
    }
    acc
}
