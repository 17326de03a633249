#!/usr/bin/env python3
"""ducc0.wgridder reference timings for benches/anchor_gridder.rs, on the same data.

Data, in order of preference:
  ANCHOR_NPY=DIR   uvw.npy (nrow,3) f64 metres, freq.npy (nchan,) f64 Hz,
                   vis.npy (nrow,nchan) complex64, weight.npy (nrow,nchan) f32
  ANCHOR_MS=PATH   a Measurement Set read with python-casacore (Stokes I = (XX+YY)/2 or
                   (RR+LL)/2 of DATA, weight from WEIGHT/FLAG: zero where flagged)
Other settings: ANCHOR_EPS (1e-6), ANCHOR_SIZE (1024), ANCHOR_SCALE_ASEC (default: from the
longest baseline, 1/(3 u_max)), RAYON_NUM_THREADS (ducc0's nthreads, default 2).
If ANCHOR_SAVE=DIR and DIR/ours_dirty.npy exists (written by the Rust bench), the relative L2
difference between the two dirty images is printed.

Prints `ducc0_ms2dirty_s <s>` and `ducc0_dirty2ms_s <s>` (median of 3).

`python anchor_ducc0.py --make DIR [--rows N] [--chans N]` writes a synthetic VLA-like
coverage (27 antennas on a Y, earth rotation) with a few point sources as npy files to DIR.
"""
import os
import sys
import time

import numpy as np

C = 299792458.0


def make_synthetic(out, n_times, n_chan, seed=1):
    rng = np.random.default_rng(seed)
    lat = np.deg2rad(34.08)
    dec = np.deg2rad(40.0)
    # VLA-like B configuration: 9 antennas per arm, power-law spacing out to ~5 km.
    ant = []
    for arm_az in np.deg2rad([5.0, 125.0, 245.0]):
        r = 5000.0 * (np.arange(1, 10) / 9.0) ** 1.716
        ant += [(r_ * np.sin(arm_az), r_ * np.cos(arm_az), 0.0) for r_ in r]
    ant = np.array(ant)
    e, n, u = ant.T
    # Local (east, north, up) to equatorial (X towards H=0, Y east, Z north pole).
    X = -np.sin(lat) * n + np.cos(lat) * u
    Y = e
    Z = np.cos(lat) * n + np.sin(lat) * u
    a1, a2 = np.triu_indices(len(ant), 1)
    L = np.stack([X[a1] - X[a2], Y[a1] - Y[a2], Z[a1] - Z[a2]], axis=1)
    H = np.linspace(-4, 4, n_times) * np.pi / 12
    sH, cH = np.sin(H)[:, None], np.cos(H)[:, None]
    Lx, Ly, Lz = L[None, :, 0], L[None, :, 1], L[None, :, 2]
    uu = sH * Lx + cH * Ly
    vv = -np.sin(dec) * cH * Lx + np.sin(dec) * sH * Ly + np.cos(dec) * Lz
    ww = np.cos(dec) * cH * Lx - np.cos(dec) * sH * Ly + np.sin(dec) * Lz
    uvw = np.stack([uu.ravel(), vv.ravel(), ww.ravel()], axis=1)
    freq = np.linspace(1.0e9, 1.5e9, n_chan)
    nrow = uvw.shape[0]
    # A few point sources (l, m in radians) and noise.
    src = [(0.0, 0.0, 1.0), (2e-3, -1.5e-3, 0.5), (-3e-3, 2.5e-3, 0.3)]
    vis = np.zeros((nrow, n_chan), np.complex128)
    for ch, f in enumerate(freq):
        uvl = uvw * (f / C)
        for l, m, s in src:
            nm1 = np.sqrt(1 - l * l - m * m) - 1
            vis[:, ch] += s * np.exp(2j * np.pi * (uvl[:, 0] * l + uvl[:, 1] * m + uvl[:, 2] * nm1))
    vis += 0.1 * (rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape))
    weight = np.ones((nrow, n_chan), np.float32)
    weight[rng.random(weight.shape) < 0.02] = 0.0
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "uvw.npy"), uvw)
    np.save(os.path.join(out, "freq.npy"), freq)
    np.save(os.path.join(out, "vis.npy"), vis.astype(np.complex64))
    np.save(os.path.join(out, "weight.npy"), weight)
    print(f"wrote {nrow} rows x {n_chan} channels = {nrow * n_chan} samples to {out}")


def read_ms(path):
    from casacore.tables import table

    t = table(path, ack=False)
    uvw = t.getcol("UVW")
    data = t.getcol("DATA")
    flag = t.getcol("FLAG")
    w = t.getcol("WEIGHT")
    spw = table(os.path.join(path, "SPECTRAL_WINDOW"), ack=False)
    freq = spw.getcol("CHAN_FREQ")[0]
    pol = table(os.path.join(path, "POLARIZATION"), ack=False)
    corr = list(pol.getcol("CORR_TYPE")[0])
    # Stokes I from the parallel hands (casacore codes RR=5, LL=8, XX=9, YY=12).
    i0, i1 = (corr.index(5), corr.index(8)) if 5 in corr else (corr.index(9), corr.index(12))
    vis = 0.5 * (data[:, :, i0] + data[:, :, i1])
    wt = 4.0 / (1.0 / w[:, i0] + 1.0 / w[:, i1])
    weight = np.repeat(wt[:, None], len(freq), axis=1).astype(np.float32)
    bad = flag[:, :, i0] | flag[:, :, i1] | ~np.isfinite(vis)
    weight[bad] = 0.0
    vis[bad] = 0.0
    return uvw, freq, vis.astype(np.complex64), weight


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--make":
        rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 29000
        chans = int(sys.argv[sys.argv.index("--chans") + 1]) if "--chans" in sys.argv else 16
        make_synthetic(sys.argv[2], max(1, rows // 351), chans)
        return
    import ducc0

    if os.environ.get("ANCHOR_NPY"):
        d = os.environ["ANCHOR_NPY"]
        uvw = np.load(os.path.join(d, "uvw.npy"))
        freq = np.load(os.path.join(d, "freq.npy"))
        vis = np.load(os.path.join(d, "vis.npy"))
        weight = np.load(os.path.join(d, "weight.npy"))
    else:
        uvw, freq, vis, weight = read_ms(os.environ["ANCHOR_MS"])
    eps = float(os.environ.get("ANCHOR_EPS", "1e-6"))
    size = int(os.environ.get("ANCHOR_SIZE", "1024"))
    nthreads = int(os.environ.get("RAYON_NUM_THREADS", "2"))
    if os.environ.get("ANCHOR_SCALE_ASEC"):
        pix = np.deg2rad(float(os.environ["ANCHOR_SCALE_ASEC"]) / 3600.0)
    else:
        # Same rule as the Rust bench: a third of the finest fringe.
        umax = np.max(np.hypot(uvw[:, 0], uvw[:, 1])) * np.max(freq) / C
        pix = 1.0 / (3.0 * umax)
    print(f"samples {vis.size}, size {size}, pixel {np.rad2deg(pix) * 3600:.4f} asec, eps {eps}, threads {nthreads}")
    kw = dict(pixsize_x=pix, pixsize_y=pix, epsilon=eps, do_wstacking=True, nthreads=nthreads, verbosity=0)
    t_grid, t_degrid = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        dirty = ducc0.wgridder.ms2dirty(uvw=uvw, freq=freq, ms=vis, wgt=weight, npix_x=size, npix_y=size, **kw)
        t_grid.append(time.perf_counter() - t0)
    model = dirty / np.max(np.abs(dirty))
    for _ in range(3):
        t0 = time.perf_counter()
        ducc0.wgridder.dirty2ms(uvw=uvw, freq=freq, dirty=model, **kw)
        t_degrid.append(time.perf_counter() - t0)
    print(f"ducc0_ms2dirty_s {np.median(t_grid):.4f}")
    print(f"ducc0_dirty2ms_s {np.median(t_degrid):.4f}")
    save = os.environ.get("ANCHOR_SAVE")
    if save:
        # Checked with an off-centre point source: ducc0 computes
        # V = Σ I/n · exp(−2πi (u l_d + v m_d − w (n − 1))) with l_d = (a − nx/2)·dx along the
        # FIRST axis of dirty[a, b] and m_d = (b − ny/2)·dy. Ours is [iy][ix] with
        # exp(+2πi (u l + v m + w (n − 1))), l = (nx/2 − ix)·dx, m = (iy − ny/2)·dy, no 1/n:
        # ours[iy][ix] = n · ducc0[ix, ny − iy]; row iy = 0 has no counterpart.
        ny, nx = size, size
        theirs = np.full((ny, nx), np.nan)
        theirs[1:, :] = dirty[:, ny - 1:0:-1].T
        iy, ix = np.mgrid[0:ny, 0:nx]
        l, m = (nx / 2 - ix) * pix, (iy - ny / 2) * pix
        theirs *= np.sqrt(1 - l * l - m * m)
        np.save(os.path.join(save, "ducc0_dirty.npy"), dirty)
        ours_p = os.path.join(save, "ours_dirty.npy")
        if os.path.exists(ours_p):
            ours = np.load(ours_p)
            ok = np.isfinite(theirs)
            diff = np.linalg.norm((ours - theirs)[ok]) / np.linalg.norm(theirs[ok])
            print(f"rel_l2_dirty_ours_vs_ducc0 {diff:.3e}")
            pk_o = np.unravel_index(np.argmax(ours), ours.shape)
            pk_t = np.unravel_index(np.nanargmax(theirs), theirs.shape)
            print(f"peak pixel [iy, ix]: ours {pk_o}, ducc0 (mapped) {pk_t}")


if __name__ == "__main__":
    main()
