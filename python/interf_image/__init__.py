"""interf-image: Bayesian imaging of radio-interferometric data with score-based priors.

The same jobs as the ``interf-image`` command line, with numpy arrays in and out::

    import interf_image as ii
    res = ii.image("tests/data/vla_3c273_xband.ms", samples=16)
    res["mean"], res["std"]          # Jy/pixel, (64, 64)
    res["header"]                    # a FITS header for astropy.wcs.WCS

Errors raise :class:`InterfImageError` with the command line's messages; Ctrl-C stops a long
run with ``KeyboardInterrupt``.
"""

from ._core import (
    InterfImageError,
    Nufft,
    Prior,
    denoise,
    dirty,
    image,
    lens,
    read_vis,
    train_prior,
    validate,
)

__all__ = [
    "InterfImageError",
    "Nufft",
    "Prior",
    "denoise",
    "dirty",
    "image",
    "lens",
    "read_vis",
    "train_prior",
    "validate",
]
