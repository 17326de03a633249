"""Where does the 3C 279 posterior mean's chi^2 come from, and would more freedom for the compact
components remove it?

    python3 notebooks/vlba_fit_diagnostics.py ../shared/data/ms/vlba_3c279_43ghz.ms \
        NAME-mean.fits NAME-summary.json F [SOLINT]

NAME: an `interf-image image ... --scale 0.1masec --window auto --selfcal 3 --selfcal-interval 60`
run; F its noise factor (sigma^2 = F/w, printed and in the summary's `noise_factor`); SOLINT the
gain interval in seconds (default 60). Direct Fourier transform of the mean (the MS's uvw,
V = sum I exp(+2 pi i (u l + v m))), complex station gains per interval by alternating least
squares against it (the data as they came), then:
1. chi^2/n split by residual size, uv distance and station;
2. the compact components of the summary moved off the pixel grid (free positions and fluxes,
   Levenberg-Marquardt, the rest of the mean fixed, gains re-solved);
3. the K brightest pixels of the mean given free fluxes (flat prior, least squares).
Needs numpy, scipy, astropy, python-casacore.
"""
import json
import sys

import numpy as np
from astropy.io import fits
from casacore.tables import table
from scipy.optimize import least_squares

ms, mean_path, summary_path, f = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
solint = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
t = table(ms, ack=False)
d = t.getcol("DATA")[:, 0, :]
flag = t.getcol("FLAG")[:, 0, :]
ws = t.getcol("WEIGHT_SPECTRUM")[:, 0, :]
# The reader's Stokes I and weight (this MS's WEIGHT column is in another correlation order).
I = 0.5 * (d[:, 0] + d[:, -1])
w = 2 * np.minimum(ws[:, 0], ws[:, -1])
ok = ~(flag[:, 0] | flag[:, -1]) & (w > 0) & (t.getcol("ANTENNA1") != t.getcol("ANTENNA2"))
a1, a2, tm = t.getcol("ANTENNA1")[ok], t.getcol("ANTENNA2")[ok], t.getcol("TIME")[ok]
nu = table(ms + "/SPECTRAL_WINDOW", ack=False).getcol("CHAN_FREQ")[0, 0]
u, v, _ = (t.getcol("UVW")[ok] * nu / 299792458.0).T
y, sw = I[ok], np.sqrt(w[ok] / f)
n2 = 2 * len(y)

h = fits.open(mean_path)[0]
img = h.data.squeeze().astype(float)
hd = h.header
ny, nx = img.shape
lpix = (np.arange(nx) + 1 - hd["CRPIX1"]) * hd["CDELT1"] * 3.6e6  # mas, RA offset (east +)
mpix = (np.arange(ny) + 1 - hd["CRPIX2"]) * hd["CDELT2"] * 3.6e6


def dft(l_mas, m_mas):
    return np.exp(2j * np.pi * (np.outer(u, np.radians(l_mas / 3.6e6))
                                + np.outer(v, np.radians(m_mas / 3.6e6))))


slot = np.floor((tm - tm.min()) / solint).astype(int)
ants = np.unique(np.r_[a1, a2])


def gains(model):
    """Per interval and antenna, y_ab = g_a conj(g_b) m_ab by alternating least squares."""
    g = np.ones((slot.max() + 1, ants.max() + 1), complex)
    for s in np.unique(slot):
        sel = slot == s
        for _ in range(40):
            for a in ants:
                m1, m2 = sel & (a1 == a), sel & (a2 == a)
                z1 = np.conj(g[s, a2[m1]]) * model[m1]
                z2 = np.conj(g[s, a1[m2]]) * np.conj(model[m2])
                num = np.sum(sw[m1] ** 2 * np.conj(z1) * y[m1]) + np.sum(
                    sw[m2] ** 2 * np.conj(z2) * np.conj(y[m2]))
                den = np.sum(sw[m1] ** 2 * abs(z1) ** 2) + np.sum(sw[m2] ** 2 * abs(z2) ** 2)
                if den > 0:
                    g[s, a] = 0.5 * (g[s, a] + num / den)
    return g[slot, a1] * np.conj(g[slot, a2])


ys, xs = np.nonzero(img != 0)
A = dft(lpix[xs], mpix[ys])
x0 = img[ys, xs]
model = A @ x0
print(f"{len(y)} visibilities, mean {x0.sum():.3f} Jy over {len(x0)} pixels")
print(f"no gains: chi2/n = {np.sum(abs((y - model) * sw) ** 2) / n2:.3f}")
G = gains(model)
c = abs((y - G * model) * sw) ** 2
print(f"gains per {solint:.0f} s: chi2/n = {c.sum() / n2:.3f}")

# 1. Where the chi^2 is.
cs = np.sort(c)[::-1]
for frac in [0.01, 0.05, 0.1]:
    k = int(frac * len(c))
    print(f"  top {frac:.0%} residuals hold {cs[:k].sum() / c.sum():.1%} of chi2; "
          f"without them chi2/n = {cs[k:].sum() / (n2 - 2 * k):.3f}")
uvd = np.hypot(u, v)
qs = np.quantile(uvd, np.linspace(0, 1, 6))
for lo, hi in zip(qs[:-1], qs[1:]):
    s = (uvd >= lo) & (uvd <= hi)
    print(f"  uv {lo / 1e6:5.0f}-{hi / 1e6:5.0f} Mlambda: chi2/n = {c[s].sum() / (2 * s.sum()):.3f}")
for a in ants:
    s = (a1 == a) | (a2 == a)
    print(f"  antenna {a}: chi2/n = {c[s].sum() / (2 * s.sum()):.3f}")

# 2. Compact components off the grid.
comps = json.load(open(summary_path))["compact_components"]
diffuse = img.copy()
pts = []
for k in comps:
    (py, px), fl = k["pixel_yx"], k["flux_jy"]["mean"]
    diffuse[py, px] -= fl
    pts.append((lpix[px], mpix[py], fl))
Vd = A @ diffuse[ys, xs]


def points(p):
    p = p.reshape(-1, 3)
    return dft(p[:, 0], p[:, 1]) @ p[:, 2]


p = np.array(pts).ravel()
G = gains(Vd + points(p))
print(f"compact components on the grid: chi2/n = {np.sum(abs((y - G * (Vd + points(p))) * sw) ** 2) / n2:.3f}")
for _ in range(3):
    def res(q):
        r = (y - G * (Vd + points(q))) * sw
        return np.r_[r.real, r.imag]
    p = least_squares(res, p, method="lm").x
    G = gains(Vd + points(p))
print(f"off the grid (free positions and fluxes): chi2/n = {np.sum(abs((y - G * (Vd + points(p))) * sw) ** 2) / n2:.3f}")

# 3. The K brightest pixels with free fluxes.
order = np.argsort(-x0)
for K in [5, 16, 32, 64, 128]:
    x = x0.copy()
    G = gains(A @ x)
    free = order[:K]
    for _ in range(3):
        fixed = A @ np.where(np.isin(np.arange(len(x)), free), 0, x)
        B = (G[:, None] * A[:, free]) * sw[:, None]
        r = (y - G * fixed) * sw
        x[free] = np.linalg.lstsq(np.r_[B.real, B.imag], np.r_[r.real, r.imag], rcond=None)[0]
        G = gains(A @ x)
    print(f"{K:4d} free pixels: chi2/n = {np.sum(abs((y - G * (A @ x)) * sw) ** 2) / n2:.3f}, "
          f"lowest free flux {x[free].min():.3g} Jy")
