"""The Python module against the command line and against independent truth.

Run after `cargo build` (the CLI binary) and installing the module (`pip install .`, or the
wheel of `maturin build`): `python -m pytest tests/python`. INTERF_IMAGE_BIN names the binary
(default: target/debug/interf-image, then target/release/interf-image).
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import interf_image as ii

ROOT = Path(__file__).resolve().parents[2]
MS = ROOT / "tests" / "data" / "vla_3c273_xband.ms"


def cli_binary() -> Path:
    env = os.environ.get("INTERF_IMAGE_BIN")
    candidates = [Path(env)] if env else []
    candidates += [ROOT / "target" / "debug" / "interf-image", ROOT / "target" / "release" / "interf-image"]
    for c in candidates:
        if c.is_file():
            return c
    raise AssertionError(
        f"no interf-image binary at {', '.join(map(str, candidates))}: run `cargo build` first"
    )


def run_cli(*args, cwd):
    return subprocess.run(
        [str(cli_binary()), *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def test_data_are_there():
    assert MS.is_dir(), f"{MS} is missing: it belongs to the repository (tests/data/README.md)"


def test_nufft_matches_a_direct_fourier_sum_and_its_adjoint():
    v = ii.read_vis(MS)
    w = v["weight"]
    keep = w[:, 0] > 0
    op = ii.Nufft(v["uvw"], v["freq"], 32, 2.0, weight=w, epsilon=1e-7)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 32))
    got = op.forward(x)
    # Direct sum, WSClean's convention: l = (nx/2 − ix)·Δ (RA to the left), m = (iy − ny/2)·Δ.
    d = np.deg2rad(2.0 / 3600.0)
    iy, ix = np.mgrid[0:32, 0:32]
    l, m = (16 - ix) * d, (iy - 16) * d
    n1 = np.sqrt(1 - l**2 - m**2) - 1
    lam = 299_792_458.0 / v["freq"][0]
    uvw = v["uvw"][keep] / lam
    k = np.arange(0, uvw.shape[0], 97)
    phase = 2j * np.pi * (uvw[k, 0, None, None] * l + uvw[k, 1, None, None] * m + uvw[k, 2, None, None] * n1)
    want = (x * np.exp(phase)).sum(axis=(1, 2))
    assert np.max(np.abs(got[k] - want)) < 1e-5 * np.abs(want).max()
    # ⟨A x, V⟩ = ⟨x, Aᵀ V⟩ in the real representation.
    vv = rng.standard_normal(op.n_vis) + 1j * rng.standard_normal(op.n_vis)
    lhs = np.sum(got.real * vv.real + got.imag * vv.imag)
    rhs = np.sum(x * op.adjoint(vv))
    assert abs(lhs - rhs) < 1e-6 * abs(lhs)


def test_dirty_equals_the_cli_fits(tmp_path):
    r = run_cli(
        "dirty", MS, "--size", 128, "--scale", "0.5asec", "--weight", "briggs", "0",
        "--name", tmp_path / "cli", cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    res = ii.dirty(MS, 128, scale_arcsec=0.5, weighting="briggs", robust=0.0)
    for key in ["dirty", "psf"]:
        with fits.open(tmp_path / f"cli-{key}.fits") as h:
            cli = np.squeeze(h[0].data).astype(np.float64)
        assert res[key].shape == cli.shape == (128, 128)
        assert np.max(np.abs(res[key] - cli)) <= 1e-6 * np.abs(cli).max(), key
    assert abs(res["psf"].max() - 1.0) < 1e-6


def test_errors_are_exceptions_with_the_cli_message(tmp_path):
    with pytest.raises(ii.InterfImageError) as e:
        ii.image(tmp_path / "missing.ms")
    r = run_cli("image", tmp_path / "missing.ms", cwd=tmp_path)
    assert r.returncode != 0
    assert str(e.value) in r.stderr, (str(e.value), r.stderr)
    with pytest.raises(ii.InterfImageError, match="method"):
        ii.image(MS, method="nope")


def test_posterior_equals_the_cli_for_the_same_seed(tmp_path):
    args = dict(samples=2, steps=100, seed=7)
    r = run_cli(
        "image", MS, "--samples", 2, "--steps", 100, "--seed", 7, "--name", tmp_path / "cli", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    res = ii.image(MS, **args)
    for key in ["mean", "std", "dirty", "psf"]:
        with fits.open(tmp_path / f"cli-{key}.fits") as h:
            cli = np.squeeze(h[0].data).astype(np.float64)
        ours = res[key]
        assert ours.shape == cli.shape
        scale = np.abs(cli).max()
        assert np.max(np.abs(ours - cli)) <= 1e-6 * scale, key
    with fits.open(tmp_path / "cli-samples.fits") as h:
        cli = np.squeeze(h[0].data)
    assert np.allclose(res["samples"], cli, rtol=0, atol=1e-6 * np.abs(cli).max())
    # The header places the image on the sky as the FITS file does.
    from astropy.wcs import WCS

    with fits.open(tmp_path / "cli-mean.fits") as h:
        cli_wcs = WCS(h[0].header).celestial
    ours_wcs = WCS(fits.Header(res["header"]))
    for p in [(0, 0), (10, 40), (63, 63)]:
        a = cli_wcs.pixel_to_world(*p)
        b = ours_wcs.pixel_to_world(*p)
        assert a.separation(b).arcsec < 1e-6


def test_prior_draws_are_seeded():
    p = ii.Prior()
    a = p.sample(2, steps=20, seed=1)
    b = p.sample(2, steps=20, seed=1)
    c = p.sample(2, steps=20, seed=2)
    assert a.shape == (2, p.image_size, p.image_size)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
