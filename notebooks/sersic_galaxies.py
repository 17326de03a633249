#!/usr/bin/env python3
"""Simulated galaxy stamps for the `priors/galaxy-sim` score prior.

Writes an N×64×64 float32 .npy of noiseless, peak-normalised galaxies: one Sersic component
(index 0.5–4, effective radius, axis ratio, angle, centre offset), often a second Sersic
component (bulge + disc), and a few Gaussian clumps, so that the prior is not only the family
of the HST lens' true source (a single cored Sersic of n = 1). The sizes are in pixels of the
64² source grid that `interf-image lens` picks for dataset_imaging_hst (0.0107″ per pixel:
the true source's R_e = 0.1″ is 9.4 px), spread a factor ~3 either way.

    python3 notebooks/sersic_galaxies.py --n 4000 --seed 0 --out /tmp/galaxy-sim.npy

Every pixel is the mean of a 4×4 grid of sub-pixel samples, so that steep n = 4 centres are
integrated over the pixel rather than point-sampled. Needs numpy only.
"""

import argparse
import os
import tempfile

import numpy as np

SIZE = 64
SUB = 4


def b_n(n):
    # Ciotti & Bertin (1999) asymptotic expansion; accurate to <1e-4 for n >= 0.36.
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2) + 131 / (1148175 * n**3)


def subpixel_grid():
    # Pixel centres at integer coordinates minus the image centre; SUB² samples per pixel.
    off = (np.arange(SUB) + 0.5) / SUB - 0.5
    c = np.arange(SIZE) - (SIZE - 1) / 2
    fine = (c[:, None] + off[None, :]).reshape(-1)
    return np.meshgrid(fine, fine, indexing="xy")


def elliptical_radius(x, y, x0, y0, q, phi):
    dx, dy = x - x0, y - y0
    c, s = np.cos(phi), np.sin(phi)
    xr = c * dx + s * dy
    yr = -s * dx + c * dy
    # Circularised radius: R_e is the geometric mean of the semi-axes.
    return np.sqrt(q * xr**2 + yr**2 / q)


def sersic(x, y, x0, y0, re, n, q, phi, core=0.0):
    r = elliptical_radius(x, y, x0, y0, q, phi)
    if core > 0:
        # A soft core keeps small, steep profiles from being a single bright pixel.
        r = np.sqrt(r**2 + core**2)
    return np.exp(-b_n(n) * ((r / re) ** (1 / n) - 1))


def galaxy(rng, x, y):
    img = np.zeros_like(x)
    x0, y0 = rng.normal(0, 4, size=2).clip(-12, 12)
    re = np.exp(rng.uniform(np.log(3.0), np.log(18.0)))
    n = rng.uniform(0.5, 4.0)
    q = rng.uniform(0.3, 1.0)
    phi = rng.uniform(0, np.pi)
    core = rng.uniform(0, 3) if rng.random() < 0.5 else 0.0
    img += sersic(x, y, x0, y0, re, n, q, phi, core)
    if rng.random() < 0.4:
        # Second component: a disc or bulge, offset a little, with its own shape.
        x1 = x0 + rng.normal(0, 2)
        y1 = y0 + rng.normal(0, 2)
        re1 = re * np.exp(rng.uniform(np.log(0.3), np.log(2.5)))
        n1 = rng.uniform(0.5, 4.0)
        q1 = rng.uniform(0.2, 1.0)
        phi1 = phi + rng.normal(0, 0.5)
        amp = rng.uniform(0.1, 1.0)
        img += amp * sersic(x, y, x1, y1, re1, n1, q1, phi1, rng.uniform(0, 2))
    peak = img.max()
    for _ in range(rng.integers(0, 5)):
        # Star-forming clumps around the body of the galaxy.
        r = abs(rng.normal(0, 1.2 * re))
        t = rng.uniform(0, 2 * np.pi)
        cx, cy = x0 + r * np.cos(t), y0 + r * np.sin(t)
        w = rng.uniform(0.8, 3.0)
        amp = peak * rng.uniform(0.05, 0.5)
        img += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w**2))
    img = img.reshape(SIZE, SUB, SIZE, SUB).mean(axis=(1, 3))
    return img / img.max()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    x, y = subpixel_grid()
    out = np.empty((a.n, SIZE, SIZE), dtype=np.float32)
    for i in range(a.n):
        out[i] = galaxy(rng, x, y)
    # Atomic: a partial file never sits at --out.
    d = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, out)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {out.shape}, float32, peak-normalised")


if __name__ == "__main__":
    main()
