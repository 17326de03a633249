#!/usr/bin/env python3
"""Simulated compact radio jets for the `priors/jet-sim` score prior (issue 13's third route).

Writes an N×64×64 float32 .npy of noiseless, peak-normalised images of what VLBI and
arcsecond-scale maps of quasars and blazars show: a core, a one-sided jet of knots along a
(possibly bending) ridge whose brightness falls by 10²–10⁴ along it, a smooth underlying
ridge, sometimes a faint counter-jet and sometimes a diffuse lobe at the jet's end. The
MiraBest prior was trained on 8-bit FIRST images (dynamic range ≤ 255, mostly extended
lobes); these images span up to 10⁴ between the core and the jet's end, so that the faint
parts of a jet are something the prior has seen.

    python3 notebooks/jet_sim.py --n 4000 --seed 0 --out /tmp/jet-sim.npy

Sizes are in pixels of the 64² grid: at 3C 279's 0.1 mas pixels (VLBA 43 GHz, beam about
0.3 × 0.15 mas) a knot of 1–4 px is 0.1–0.4 mas, a jet of 8–30 px is 0.8–3 mas. Every pixel
is the mean of a 4×4 sub-pixel grid. Needs numpy only.
"""

import argparse
import os
import tempfile

import numpy as np

SIZE = 64
SUB = 4


def subpixel_grid():
    off = (np.arange(SUB) + 0.5) / SUB - 0.5
    c = np.arange(SIZE) - (SIZE - 1) / 2
    fine = (c[:, None] + off[None, :]).reshape(-1)
    return np.meshgrid(fine, fine, indexing="xy")


def gauss(x, y, x0, y0, sx, sy, phi):
    c, s = np.cos(phi), np.sin(phi)
    dx, dy = x - x0, y - y0
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def jet(rng, x, y):
    img = np.zeros_like(x)
    # Core near the centre (the phase centre is usually on it), slightly resolved at times.
    x0, y0 = rng.normal(0, 3, size=2).clip(-10, 10)
    core_w = rng.uniform(0.4, 1.5)
    img += gauss(x, y, x0, y0, core_w, core_w * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    # Jet ridge: direction, length, a gentle bend, opening (width grows with distance).
    theta = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(8, 30)
    bend = rng.normal(0, 0.5)  # radians over the jet's length
    w0, opening = rng.uniform(0.5, 1.5), rng.uniform(0.03, 0.15)
    # Brightness along the jet: a power law in distance over 2–4 decades, knots on top.
    decades = rng.uniform(1.5, 4.0)
    s = np.linspace(0.5, length, 80)
    ang = theta + bend * s / length
    px = x0 + np.cumsum(np.cos(ang)) * (s[1] - s[0])
    py = y0 + np.cumsum(np.sin(ang)) * (s[1] - s[0])
    level = 10 ** (-decades * (s / length) ** rng.uniform(0.5, 1.5)) * rng.uniform(0.05, 0.6)
    ridge = np.zeros_like(x)
    for k in range(0, len(s), 2):
        w = w0 + opening * s[k]
        ridge += level[k] * gauss(x, y, px[k], py[k], w, w, 0.0) * (s[1] - s[0]) / w
    img += rng.uniform(0.2, 1.0) * ridge
    # Knots: 1–6 along the ridge, each as bright as the ridge there or up to 5× brighter.
    for _ in range(rng.integers(1, 7)):
        k = rng.integers(0, len(s))
        w = (w0 + opening * s[k]) * rng.uniform(0.6, 1.6)
        img += level[k] * rng.uniform(0.5, 5.0) * gauss(
            x, y, px[k], py[k], w * rng.uniform(1, 2), w, ang[k]
        )
    # A faint counter-jet (Doppler-dimmed) a third of the time.
    if rng.random() < 0.33:
        for k in range(0, len(s) // 2, 3):
            w = w0 + opening * s[k]
            img += 0.02 * level[k] * gauss(
                x, y, 2 * x0 - px[k], 2 * y0 - py[k], w, w, 0.0
            )
    # A diffuse lobe or hot spot at the end a quarter of the time.
    if rng.random() < 0.25:
        w = rng.uniform(2, 6)
        img += level[-1] * rng.uniform(1, 10) * gauss(
            x, y, px[-1], py[-1], w, w * rng.uniform(0.5, 1), rng.uniform(0, np.pi)
        )
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    x, y = subpixel_grid()
    out = np.empty((a.n, SIZE, SIZE), np.float32)
    for i in range(a.n):
        fine = jet(rng, x, y)
        img = fine.reshape(SIZE, SUB, SIZE, SUB).mean(axis=(1, 3))
        out[i] = img / img.max()
    # Atomic: a temporary file in the destination folder, renamed into place.
    d = os.path.dirname(os.path.abspath(a.out))
    with tempfile.NamedTemporaryFile(dir=d, suffix=".npy", delete=False) as f:
        np.save(f, out)
    os.replace(f.name, a.out)
    dr = out.max(axis=(1, 2)) / np.maximum(np.where(out > 0, out, np.inf).min(axis=(1, 2)), 1e-30)
    print(f"wrote {a.out}: {a.n} images; median pixel > 1e-3 of peak: "
          f"{np.median((out > 1e-3).sum(axis=(1, 2)))} px")


if __name__ == "__main__":
    main()
