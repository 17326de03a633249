#!/usr/bin/env python3
"""Write a large simulated VLA Measurement Set for the end-to-end anchor benchmark.

    python benches/make_large_ms.py WORKDIR [--times 662] [--chans 64] [--corr 2] [--force]

Default: 28 VLA antennas (the real pad positions of tests/data/vla_3c273_xband.ms), 378
baselines, 662 integrations over 8 h of hour angle (earth-rotation uvw), 1 spectral window of
64 × 2 MHz channels around 8 GHz, RR and LL: 250 236 rows, 16.0 M Stokes-I samples, about
0.3 GB. DATA = three point sources + Gaussian noise, with WSClean's convention
V = Σ I·exp(+2πi(ul + vm + w(n−1))), UVW in metres, so every imager sees the same sky.

Writes WORKDIR/large_vla.ms and WORKDIR/large_vla.ms.info (shell-readable key=value: rows,
samples, the longest baseline and a pixel scale of a third of the finest fringe). Refuses to
write inside tests/data or the shared data folder; an existing MS is kept unless --force.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np
from casacore.tables import default_ms, makearrcoldesc, maketabdesc, table

C = 299792458.0
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TEMPLATE = os.path.join(REPO, "tests", "data", "vla_3c273_xband.ms")
# 3C 286, a VLA calibrator high enough (+30.5°) for a round 8-hour synthesis.
RA0, DEC0 = np.deg2rad(202.784533), np.deg2rad(30.509155)
MJD_START_S = 60000.0 * 86400.0


def vla_positions():
    """ITRF positions (m) of the 28 VLA pads used by the 3C 273 observation."""
    with table(os.path.join(TEMPLATE, "ANTENNA"), ack=False) as t:
        pos, names = t.getcol("POSITION"), t.getcol("NAME")
    keep = np.linalg.norm(pos, axis=1) > 6e6  # pyuvdata's placeholder row sits at the origin
    return pos[keep], [n for n, k in zip(names, keep) if k]


def uvw_for(pos, a1, a2, gha):
    """UVW (m) of baselines pos[a1] - pos[a2] at Greenwich hour angles `gha` (rad)."""
    b = pos[a1] - pos[a2]
    bx, by, bz = (b[None, :, i] for i in range(3))
    sh, ch = np.sin(gha)[:, None], np.cos(gha)[:, None]
    sd, cd = np.sin(DEC0), np.cos(DEC0)
    u = sh * bx + ch * by
    v = -sd * ch * bx + sd * sh * by + cd * bz
    w = cd * ch * bx - cd * sh * by + sd * bz
    return np.stack([u.ravel(), v.ravel(), w.ravel()], axis=1)


def create_ms(path, nchan, ncorr):
    cols = [
        makearrcoldesc("DATA", 0j, shape=[nchan, ncorr], valuetype="complex",
                       datamanagertype="TiledColumnStMan", datamanagergroup="TiledData"),
        makearrcoldesc("FLAG", False, shape=[nchan, ncorr], valuetype="boolean",
                       datamanagertype="TiledColumnStMan", datamanagergroup="TiledFlag"),
        makearrcoldesc("WEIGHT", 0.0, shape=[ncorr], valuetype="float",
                       datamanagertype="TiledColumnStMan", datamanagergroup="TiledWeight"),
        makearrcoldesc("SIGMA", 0.0, shape=[ncorr], valuetype="float",
                       datamanagertype="TiledColumnStMan", datamanagergroup="TiledSigma"),
    ]
    return default_ms(path, maketabdesc(cols))


def fill_subtables(ms, pos, names, freqs, chan_width, ncorr, t_range):
    nant = len(pos)
    with table(ms.getkeyword("ANTENNA"), readonly=False, ack=False) as t:
        t.addrows(nant)
        t.putcol("POSITION", pos)
        t.putcol("NAME", names)
        t.putcol("STATION", names)
        t.putcol("DISH_DIAMETER", np.full(nant, 25.0))
        t.putcol("MOUNT", ["ALT-AZ"] * nant)
        t.putcol("TYPE", ["GROUND-BASED"] * nant)
        t.putcol("OFFSET", np.zeros((nant, 3)))
    with table(ms.getkeyword("FEED"), readonly=False, ack=False) as t:
        t.addrows(nant)
        t.putcol("ANTENNA_ID", np.arange(nant))
        t.putcol("SPECTRAL_WINDOW_ID", np.full(nant, -1))
        t.putcol("NUM_RECEPTORS", np.full(nant, 2))
        for i in range(nant):
            t.putcell("POLARIZATION_TYPE", i, np.array(["R", "L"]))
            t.putcell("RECEPTOR_ANGLE", i, np.zeros(2))
            t.putcell("BEAM_OFFSET", i, np.zeros((2, 2)))
            t.putcell("POL_RESPONSE", i, np.eye(2, dtype=np.complex64))
            t.putcell("POSITION", i, np.zeros(3))
    with table(ms.getkeyword("SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("CHAN_FREQ", 0, freqs)
        for col in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
            t.putcell(col, 0, np.full(len(freqs), chan_width))
        t.putcell("NUM_CHAN", 0, len(freqs))
        t.putcell("REF_FREQUENCY", 0, float(freqs[len(freqs) // 2]))
        t.putcell("TOTAL_BANDWIDTH", 0, chan_width * len(freqs))
        t.putcell("MEAS_FREQ_REF", 0, 5)  # TOPO
        t.putcell("NAME", 0, "X-band")
    with table(ms.getkeyword("POLARIZATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        corr_type = [5, 8] if ncorr == 2 else [5, 6, 7, 8]  # RR LL / RR RL LR LL
        prod = [[0, 0], [1, 1]] if ncorr == 2 else [[0, 0], [0, 1], [1, 0], [1, 1]]
        t.putcell("CORR_TYPE", 0, np.array(corr_type, dtype=np.int32))
        t.putcell("CORR_PRODUCT", 0, np.array(prod, dtype=np.int32))
        t.putcell("NUM_CORR", 0, ncorr)
    with table(ms.getkeyword("DATA_DESCRIPTION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("POLARIZATION_ID", 0, 0)
        t.putcell("SPECTRAL_WINDOW_ID", 0, 0)
    with table(ms.getkeyword("FIELD"), readonly=False, ack=False) as t:
        t.addrows(1)
        d = np.array([[RA0, DEC0]])
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            t.putcell(col, 0, d)
        t.putcell("NAME", 0, "SIM_3C286")
        t.putcell("TIME", 0, t_range[0])
    with table(ms.getkeyword("OBSERVATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, "VLA")
        t.putcell("OBSERVER", 0, "interf-image benches")
        t.putcell("PROJECT", 0, "anchor")
        t.putcell("TIME_RANGE", 0, np.array(t_range))
    with table(ms.getkeyword("STATE"), readonly=False, ack=False) as t:
        pass
    with table(ms.getkeyword("PROCESSOR"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TYPE", 0, "CORRELATOR")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir")
    ap.add_argument("--times", type=int, default=662, help="integrations over 8 h (default 662)")
    ap.add_argument("--chans", type=int, default=64, help="channels of 2 MHz (default 64)")
    ap.add_argument("--corr", type=int, default=2, choices=(2, 4), help="RR,LL or all four")
    ap.add_argument("--noise", type=float, default=0.5, help="noise per visibility, Jy (0.5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="rewrite an existing MS")
    args = ap.parse_args()

    work = os.path.realpath(args.workdir)
    for forbidden in (os.path.join(REPO, "tests", "data"), os.path.realpath(os.path.join(REPO, "..", "shared"))):
        if work == forbidden or work.startswith(forbidden + os.sep):
            sys.exit(f"make_large_ms: refusing to write into {forbidden} (inputs are never modified)")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "large_vla.ms")
    info_path = path + ".info"
    if os.path.exists(path) and os.path.exists(info_path) and not args.force:
        print(f"make_large_ms: {path} exists, kept (use --force to rewrite)")
        return
    if os.path.exists(path):
        shutil.rmtree(path)

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    pos, names = vla_positions()
    nant = len(pos)
    a1, a2 = np.triu_indices(nant, 1)
    nbl = len(a1)
    nchan, ncorr = args.chans, args.corr
    chan_width = 2e6
    freqs = 8.0e9 + (np.arange(nchan) - nchan / 2 + 0.5) * chan_width
    interval = 8 * 3600.0 / args.times
    lon = np.arctan2(pos[:, 1].mean(), pos[:, 0].mean())
    hour_angle = np.linspace(-4, 4, args.times) * np.pi / 12  # local
    gha = hour_angle - lon
    times = MJD_START_S + (np.arange(args.times) + 0.5) * interval
    nrow = args.times * nbl

    bl_len = np.linalg.norm(pos[a1] - pos[a2], axis=1)
    # The finest fringe over the whole synthesis sets the pixel: a third of it, as the benches do.
    uvw_all = uvw_for(pos, a1, a2, gha)
    umax = np.max(np.hypot(uvw_all[:, 0], uvw_all[:, 1])) * freqs.max() / C
    scale_asec = np.rad2deg(1.0 / (3.0 * umax)) * 3600.0
    scale_asec = float(f"{scale_asec:.3g}")
    pix = np.deg2rad(scale_asec / 3600.0)
    # Point sources at whole pixel offsets (dx to the east, dy north), Jy.
    sources = [(0, 0, 1.0), (150, -80, 0.3), (-250, 200, 0.1)]
    lmn = [(dx * pix, dy * pix, s) for dx, dy, s in sources]

    ms = create_ms(path, nchan, ncorr)
    fill_subtables(ms, pos, names, freqs, chan_width, ncorr, [times[0] - interval / 2, times[-1] + interval / 2])
    ms.addrows(nrow)
    sigma = args.noise
    chunk_t = max(1, 20000 // nbl)
    for t_start in range(0, args.times, chunk_t):
        t_end = min(args.times, t_start + chunk_t)
        nt = t_end - t_start
        rows = slice(t_start * nbl, t_end * nbl)
        n = nt * nbl
        uvw = uvw_all[rows]
        vis = np.zeros((n, nchan), np.complex128)
        for l, m, s in lmn:
            nm1 = np.sqrt(1.0 - l * l - m * m) - 1.0
            path_m = uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * nm1
            vis += s * np.exp((2j * np.pi / C) * path_m[:, None] * freqs[None, :])
        data = np.empty((n, nchan, ncorr), np.complex64)
        noise = sigma * (rng.standard_normal((n, nchan, ncorr)) + 1j * rng.standard_normal((n, nchan, ncorr)))
        if ncorr == 2:
            data[:] = vis[:, :, None] + noise
        else:
            data[:, :, [0, 3]] = vis[:, :, None] + noise[:, :, [0, 3]]
            data[:, :, [1, 2]] = noise[:, :, [1, 2]]
        start = t_start * nbl
        ms.putcol("UVW", uvw, startrow=start, nrow=n)
        ms.putcol("DATA", data, startrow=start, nrow=n)
        ms.putcol("FLAG", np.zeros((n, nchan, ncorr), bool), startrow=start, nrow=n)
        ms.putcol("WEIGHT", np.full((n, ncorr), 1.0 / sigma**2, np.float32), startrow=start, nrow=n)
        ms.putcol("SIGMA", np.full((n, ncorr), sigma, np.float32), startrow=start, nrow=n)
        ms.putcol("ANTENNA1", np.tile(a1, nt).astype(np.int32), startrow=start, nrow=n)
        ms.putcol("ANTENNA2", np.tile(a2, nt).astype(np.int32), startrow=start, nrow=n)
        tcol = np.repeat(times[t_start:t_end], nbl)
        ms.putcol("TIME", tcol, startrow=start, nrow=n)
        ms.putcol("TIME_CENTROID", tcol, startrow=start, nrow=n)
        ms.putcol("INTERVAL", np.full(n, interval), startrow=start, nrow=n)
        ms.putcol("EXPOSURE", np.full(n, interval), startrow=start, nrow=n)
        ms.putcol("SCAN_NUMBER", np.ones(n, np.int32), startrow=start, nrow=n)
    ms.close()

    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    samples = nrow * nchan
    info = {
        "MS": path,
        "ROWS": nrow,
        "CHANNELS": nchan,
        "CORRELATIONS": ncorr,
        "SAMPLES": samples,
        "LONGEST_BASELINE_M": f"{bl_len.max():.1f}",
        "UMAX_LAMBDA": f"{umax:.1f}",
        "SCALE_ASEC": scale_asec,
        "MS_BYTES": size,
    }
    with open(info_path, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in info.items())
    print(f"make_large_ms: {path}: {nant} antennas, {nbl} baselines, {args.times} times, {nchan} channels, "
          f"{ncorr} correlations: {nrow} rows, {samples / 1e6:.1f} M Stokes-I samples, {size / 1e6:.0f} MB; "
          f"longest baseline {bl_len.max():.0f} m, pixel {scale_asec} asec; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
