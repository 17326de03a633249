"""Manual check of our FITS output against astropy (not run in CI: python is not there).

    INTERF_IO_CHECK_DIR=/tmp/io-check cargo test --lib io::tests::astropy_files -- --ignored
    python src/io/astropy_check.py /tmp/io-check tests/data/reference/3c273_natural-dirty.fits

Checks that astropy finds no FITS verification problem, that our WCS gives the same world
coordinates as WSClean's header at a few pixels, that our SkyWcs agrees with astropy, that the pixels are identical, and that the
sample cube's WCS puts the sample index on axis 3.
"""
import sys
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

out_dir, ref_path = sys.argv[1], sys.argv[2]
ours_path = f"{out_dir}/ours-3c273.fits"
pixels = [(0, 0), (256, 256), (511, 0), (100, 400), (511, 511)]  # (x, y), 0-based

for path in (ours_path, f"{out_dir}/ours-samples.fits"):
    with fits.open(path) as hdul:
        hdul.verify("exception")
    print(f"verify('exception'): OK  {path}")

with fits.open(ours_path) as ours, fits.open(ref_path) as ref:
    w_ours, w_ref = WCS(ours[0].header), WCS(ref[0].header)
    print("our header:\n" + repr(ours[0].header))
    worst = 0.0
    for x, y in pixels:
        a = w_ours.celestial.pixel_to_world(x, y)
        b = w_ref.celestial.pixel_to_world(x, y)
        sep = a.separation(b).arcsec
        worst = max(worst, sep)
        print(f"pixel ({x},{y}): ours {a.to_string('hmsdms', precision=4)}  "
              f"WSClean {b.to_string('hmsdms', precision=4)}  sep {sep:.2e} arcsec")
    freq_ours = w_ours.sub([3]).pixel_to_world_values(0)
    freq_ref = w_ref.sub([3]).pixel_to_world_values(0)
    print(f"frequency: ours {float(freq_ours):.6e} Hz, WSClean {float(freq_ref):.6e} Hz")
    assert worst < 1e-6, worst
    assert np.array_equal(ours[0].data, ref[0].data), "pixels differ"
    print(f"pixels identical; worst separation {worst:.2e} arcsec")
    for line in open(f"{out_dir}/ours-wcs.txt"):
        x, y, ra, dec = map(float, line.split())
        a = w_ref.celestial.pixel_to_world(x, y)
        dra = (ra - a.ra.deg) * 3600 * np.cos(np.radians(dec))
        ddec = (dec - a.dec.deg) * 3600
        print(f"SkyWcs::pixel_to_world({x:.0f},{y:.0f}) - astropy: {dra:.1e}, {ddec:.1e} arcsec")
        assert abs(dra) < 1e-6 and abs(ddec) < 1e-6
    print(f"CMDLINE (CONTINUE) = {ours[0].header['CMDLINE']!r}")

with fits.open(f"{out_dir}/ours-samples.fits") as cube:
    w = WCS(cube[0].header)
    print("cube axes:", w.world_axis_physical_types, "shape", cube[0].data.shape)
    print("sample index of plane 2:", w.sub([3]).pixel_to_world_values(2))
