#!/usr/bin/env python3
"""Simulated black-hole images for an EHT score prior (issue 16, item 3).

Writes an N×64×64 float32 .npy of noiseless, peak-normalised images. Most are what the EHT
sees of M87* and Sgr A*: a ring or crescent, brightness ∝ a Gaussian ring profile of radius R
and width w times (1 + a·cos(θ − φ)) (brightness asymmetry a toward position angle φ), blurred,
sometimes on a faint diffuse floor. The rest are deliberately not rings: uniform or tapered
disks, doubles and single elliptical blobs. A prior of rings alone would draw a ring from any
data (the acceptance's check "the ring is not the prior talking" images a disk and a double
through the same uv coverage), so the prior must know other compact shapes too.

    python3 notebooks/ring_sim.py --n 4000 --seed 0 --out /tmp/ring-sim.npy

Sizes are in pixels of the 64² grid; at 2 µas per pixel the field is 128 µas and M87*'s
42 µas ring is 21 pixels across. Radii run 5–16 px (20–64 µas diameters), widths 1–5 px,
centres within ±3 px of the middle. Every pixel is the mean of a 4×4 sub-pixel grid. Needs
numpy only. Written atomically (a temporary file renamed into place).

Mix (fractions of N): rings/crescents 0.6, disks 0.15, doubles 0.15, blobs 0.1.
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


def to_pixels(fine):
    return fine.reshape(SIZE, SUB, SIZE, SUB).mean(axis=(1, 3))


def blur(img, sigma):
    """Gaussian blur by FFT (periodic edges are harmless: sources stay near the middle)."""
    if sigma <= 0:
        return img
    k = np.fft.fftfreq(SIZE)
    kx, ky = np.meshgrid(k, k, indexing="xy")
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (kx**2 + ky**2))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * g))


def gauss(x, y, x0, y0, sx, sy, phi):
    c, s = np.cos(phi), np.sin(phi)
    dx, dy = x - x0, y - y0
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def ring(rng, x, y):
    x0, y0 = rng.uniform(-3, 3, size=2)
    r0 = rng.uniform(5, 16)
    w = rng.uniform(1, min(5, 0.6 * r0))
    a = rng.uniform(0, 0.95)
    phi = rng.uniform(0, 2 * np.pi)
    dx, dy = x - x0, y - y0
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    img = np.exp(-0.5 * ((r - r0) / w) ** 2) * (1 + a * np.cos(theta - phi))
    if rng.random() < 0.4:
        # A faint diffuse floor: the emission inside and around the ring.
        img += rng.uniform(0.02, 0.15) * gauss(x, y, x0, y0, r0, r0, 0.0)
    return img, rng.uniform(0, 2)


def disk(rng, x, y):
    x0, y0 = rng.uniform(-3, 3, size=2)
    r0 = rng.uniform(4, 16)
    r = np.hypot(x - x0, y - y0)
    edge = rng.uniform(0.5, 3)
    # From a flat top to a taper toward the edge.
    taper = 1 - rng.uniform(0, 0.8) * (r / r0) ** 2
    img = np.clip(taper, 0, None) / (1 + np.exp((r - r0) / edge))
    return img, rng.uniform(0, 2)


def double(rng, x, y):
    sep = rng.uniform(8, 30)
    pa = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(-3, 3, size=2)
    img = np.zeros_like(x)
    for sign, amp in ((1, 1.0), (-1, rng.uniform(0.2, 1.0))):
        x0 = cx + sign * 0.5 * sep * np.cos(pa)
        y0 = cy + sign * 0.5 * sep * np.sin(pa)
        s = rng.uniform(1, 5)
        img += amp * gauss(x, y, x0, y0, s, s * rng.uniform(0.6, 1), rng.uniform(0, np.pi))
    return img, rng.uniform(0, 1.5)


def blob(rng, x, y):
    x0, y0 = rng.uniform(-3, 3, size=2)
    s = rng.uniform(2, 12)
    img = gauss(x, y, x0, y0, s, s * rng.uniform(0.4, 1), rng.uniform(0, np.pi))
    return img, 0.0


KINDS = ((ring, 0.6), (disk, 0.15), (double, 0.15), (blob, 0.1))


def make(n, seed):
    rng = np.random.default_rng(seed)
    x, y = subpixel_grid()
    names = [k for k, _ in KINDS]
    probs = np.array([p for _, p in KINDS])
    out = np.empty((n, SIZE, SIZE), dtype=np.float32)
    kinds = rng.choice(len(names), size=n, p=probs / probs.sum())
    for i, k in enumerate(kinds):
        fine, sigma = names[k](rng, x, y)
        img = blur(to_pixels(fine), sigma)
        img = np.clip(img, 0, None)
        out[i] = img / img.max()
    return out, kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png", help="also write a 4×8 grid of the first images (matplotlib)")
    a = ap.parse_args()
    imgs, kinds = make(a.n, a.seed)
    d = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".npy")
    os.close(fd)
    np.save(tmp, imgs)
    os.replace(tmp, a.out)
    counts = np.bincount(kinds, minlength=len(KINDS))
    print(
        f"wrote {a.out}: {a.n} images {SIZE}×{SIZE} "
        + ", ".join(f"{k.__name__} {c}" for (k, _), c in zip(KINDS, counts))
    )
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(4, 8, figsize=(12, 6))
        for ax, img in zip(axes.flat, imgs):
            ax.imshow(img, origin="lower", cmap="afmhot")
            ax.set_axis_off()
        fig.tight_layout()
        fig.savefig(a.png, dpi=80)
        print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
