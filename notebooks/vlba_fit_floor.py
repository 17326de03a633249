"""How well can any static sky fit the VLBA 43 GHz 3C 279 visibilities?

Unconstrained weighted least squares over every pixel of a box around the emission, by direct
Fourier transform (no prior, no positivity): the lowest reduced chi^2 a sky confined to that
box can reach under the same noise model `interf-image image` uses (sigma^2 = f / w, with f from
successive differences). Then the same with complex station gains per scan solved alternately
(self-calibration), which is what `image --selfcal` adds.

    python3 notebooks/vlba_fit_floor.py ../shared/data/ms/vlba_3c279_43ghz.ms MEAN.fits F

MEAN.fits: the posterior mean of `interf-image image ... --scale 0.1masec` (only used to place
the box on the emission); F: the noise factor that run printed (sigma^2 = F/w).
Needs numpy, astropy, python-casacore.

Conventions, checked against WSClean's dirty image of 3C 273 (tests/data): Stokes I = (RR+LL)/2
with weights from WEIGHT_SPECTRUM (this MS's WEIGHT column is in another correlation order),
and V = sum I exp(+2 pi i (u l + v m)) for the MS's uvw, with l, m the SIN-projected offsets.
"""
import sys

import numpy as np
from astropy.io import fits
from casacore.tables import table

ms, mean_path, f = sys.argv[1], sys.argv[2], float(sys.argv[3])
t = table(ms, ack=False)
d = t.getcol("DATA")[:, 0, :]
flag = t.getcol("FLAG")[:, 0, :]
ws = t.getcol("WEIGHT_SPECTRUM")[:, 0, :]
last = d.shape[1] - 1
I = 0.5 * (d[:, 0] + d[:, last])
w = 2 * np.minimum(ws[:, 0], ws[:, last])  # the reader's Stokes I weight (WSClean's shape)
ok = ~(flag[:, 0] | flag[:, last]) & (w > 0)
a1, a2 = t.getcol("ANTENNA1")[ok], t.getcol("ANTENNA2")[ok]
tm = t.getcol("TIME")[ok]
nu = table(ms + "/SPECTRAL_WINDOW", ack=False).getcol("CHAN_FREQ")[0, 0]
u, v, _ = (t.getcol("UVW")[ok] * nu / 299792458.0).T
y, sw = I[ok], np.sqrt(w[ok] / f)

h = fits.open(mean_path)[0]
mean = h.data.squeeze().astype(float)
hd = h.header
ys, xs = np.nonzero(mean > 0.01 * mean.max())
mas = lambda pix, ax: (pix + 1 - hd[f"CRPIX{ax}"]) * hd[f"CDELT{ax}"] * 3.6e6
lc = (mas(xs, 1) * mean[ys, xs]).sum() / mean[ys, xs].sum()
mc = (mas(ys, 2) * mean[ys, xs]).sum() / mean[ys, xs].sum()

# Scans: time stamps that jump by more than five integrations, as the program cuts them.
ut = np.unique(tm)
gap = 5 * np.median(np.diff(ut))
starts = ut[np.r_[0, np.where(np.diff(ut) > gap)[0] + 1]]
scan = np.searchsorted(starts, tm, side="right") - 1
ants = np.unique(np.r_[a1, a2])


def box_operator(scale_mas, half):
    g = np.arange(-half, half) * scale_mas
    L, M = np.meshgrid(g + lc, g + mc)
    L, M = np.radians(L.ravel() / 3.6e6), np.radians(M.ravel() / 3.6e6)
    return np.exp(2j * np.pi * (np.outer(u, L) + np.outer(v, M)))


def least_squares(A, data):
    Ar = np.r_[(A * sw[:, None]).real, (A * sw[:, None]).imag]
    yr = np.r_[(data * sw).real, (data * sw).imag]
    x, _, rank, _ = np.linalg.lstsq(Ar, yr, rcond=1e-6)
    return A @ x, rank


def solve_gains(model, data):
    """Per scan and antenna, y_ab = g_a conj(g_b) m_ab by alternating least squares."""
    g = np.ones((len(starts), ants.max() + 1), complex)
    for s in range(len(starts)):
        sel = scan == s
        for _ in range(60):
            for a in ants:
                m1, m2 = sel & (a1 == a), sel & (a2 == a)
                z1 = np.conj(g[s, a2[m1]]) * model[m1]
                z2 = np.conj(g[s, a1[m2]]) * np.conj(model[m2])
                num = np.sum(sw[m1] ** 2 * np.conj(z1) * data[m1]) + np.sum(
                    sw[m2] ** 2 * np.conj(z2) * np.conj(data[m2]))
                den = np.sum(sw[m1] ** 2 * abs(z1) ** 2) + np.sum(sw[m2] ** 2 * abs(z2) ** 2)
                if den > 0:
                    g[s, a] = 0.5 * (g[s, a] + num / den)
    return g[scan, a1] * np.conj(g[scan, a2])


n = 2 * len(y)
print(f"{len(y)} visibilities, {len(starts)} scans, {len(ants)} antennas; f = {f}")
for scale_mas, half in [(0.1, 8), (0.1, 12), (0.1, 16)]:
    A = box_operator(scale_mas, half)
    model, rank = least_squares(A, y)
    chi2 = np.sum(abs((y - model) * sw) ** 2)
    line = (f"box {2 * half * scale_mas:.1f} mas ({2 * half}² pixels of {scale_mas} mas): "
            f"sky only chi2/(n - rank) = {chi2 / (n - rank):.3f} (rank {rank})")
    G = np.ones_like(y)
    for _ in range(4):
        G = solve_gains(model, y)
        model, rank = least_squares(A, y / G)
    p = rank + 2 * len(ants) * len(starts)
    chi2 = np.sum(abs((y - G * model) * sw) ** 2)
    print(line + f"; with gains per scan {chi2 / (n - p):.3f} ({p} parameters)")
