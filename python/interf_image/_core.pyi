"""Type stubs of the compiled module (python/src/lib.rs)."""

from os import PathLike
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]

class InterfImageError(Exception):
    """An error of interf-image: what went wrong, with the file or option it concerns."""

def read_vis(
    path: _Path,
    *,
    field: Optional[str] = None,
    spw: Optional[Sequence[int]] = None,
    channels: Optional[Tuple[int, int]] = None,
    column: str = "DATA",
) -> dict[str, np.ndarray]:
    """Stokes I visibilities of a Measurement Set or UVFITS file.

    Keys: ``uvw`` (nrow, 3) metres, ``freq`` (nchan,) Hz, ``vis`` (nrow, nchan) complex64 Jy,
    ``weight`` (nrow, nchan) float32 (0 where flagged), ``antenna1``, ``antenna2``, ``time``
    (MJD seconds). Autocorrelations are left out, as the command line does.
    """

def dirty(
    vis: _Path,
    size: int,
    *,
    scale_arcsec: Optional[float] = None,
    weighting: str = "natural",
    robust: float = 0.0,
    padding: float = 1.2,
    rank_filter: float = 3.0,
    epsilon: float = 1e-5,
    field: Optional[str] = None,
    spw: Optional[Sequence[int]] = None,
    channels: Optional[Tuple[int, int]] = None,
    column: str = "DATA",
) -> dict[str, Any]:
    """Dirty image and PSF (Jy/beam), as ``interf-image dirty`` and ``wsclean -niter 0``.

    Keys: ``dirty``, ``psf`` (size, size), ``header``, ``pixel_arcsec``, ``n_usable``.
    """

class Nufft:
    """The NUFFT of a ``size × size`` image of ``scale_arcsec`` pixels to the samples ``uvw`` ×
    ``freq`` where ``weight > 0`` (all when ``weight`` is None), WSClean's conventions."""

    def __init__(
        self,
        uvw: npt.NDArray[np.float64],
        freq: npt.NDArray[np.float64],
        size: int,
        scale_arcsec: float,
        *,
        weight: Optional[npt.NDArray[np.float32]] = None,
        epsilon: float = 1e-5,
    ) -> None: ...
    @property
    def n_vis(self) -> int: ...
    def forward(self, image: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
        """``V = A x``: the visibilities of an image (size, size), shape (n_vis,)."""
    def adjoint(self, vis: npt.NDArray[np.complex128]) -> npt.NDArray[np.float64]:
        """``x = Aᵀ V``: the unnormalised dirty image (size, size) of visibilities (n_vis,)."""

class Prior:
    """A score-based prior: a checkpoint folder, or the built-in MiraBest prior (None)."""

    def __init__(self, path: Optional[_Path] = None) -> None: ...
    @property
    def image_size(self) -> int: ...
    def sample(
        self, n: int, *, steps: int = 300, seed: int = 0, batch: int = 16
    ) -> npt.NDArray[np.float32]:
        """``n`` draws (n, size, size) in prior units (peak ≈ 1)."""

def image(
    vis: _Path,
    *,
    prior: Optional[Prior] = None,
    samples: int = 64,
    steps: Optional[int] = None,
    batch: Optional[int] = None,
    method: str = "dps",
    alpha: float = 1.0,
    corrector_snr: float = 0.0,
    seed: int = 0,
    scale_arcsec: Optional[float] = None,
    flux_scale: Optional[float] = None,
    likelihood: str = "auto",
    compact: str = "auto",
    compact_max: int = 32,
    window: str = "off",
    data: str = "vis",
    total_flux: Optional[float] = None,
    noise: str = "auto",
    epsilon: float = 1e-5,
    field: Optional[str] = None,
    spw: Optional[Sequence[int]] = None,
    channels: Optional[Tuple[int, int]] = None,
    column: str = "DATA",
) -> dict[str, Any]:
    """Posterior imaging, as ``interf-image image`` (same options, same numbers for a seed).

    Keys: ``samples`` (n, size, size), ``mean``, ``std`` (Jy/pixel); ``dirty``, ``psf``,
    ``residual``, ``clean`` (Jy/beam, natural weighting); ``header``/``beam_header`` (2-D FITS
    headers for ``astropy.wcs.WCS``); ``chi2_samples``, ``chi2_mean``, ``chi2_clean``,
    ``flux_scale``, ``total_flux`` (mean, std), ``pixel_arcsec``, ``prior_check``, ...
    """

def validate(
    like: _Path,
    noise: float,
    *,
    truths: Optional[_Path] = None,
    split: str = "all",
    truth_scaling: str = "peak",
    truth_floor: bool = True,
    n: int = 100,
    prior: Optional[Prior] = None,
    samples: int = 100,
    steps: Optional[int] = None,
    batch: Optional[int] = None,
    method: str = "dps",
    alpha: float = 1.0,
    seed: int = 0,
    flux_scale: float = 1.0,
    scale_arcsec: Optional[float] = None,
    bootstrap: int = 1000,
    clean: bool = True,
    epsilon: float = 1e-5,
) -> dict[str, Any]:
    """Calibration on the uv coverage of ``like``, as ``interf-image validate``.

    Keys: ``truth``, ``mean``, ``std`` (k, size, size) Jy/pixel; ``tarp`` (with ``alpha``,
    ``ecp``, ``max_deviation``, ``band_half_width``, ``verdict``), ``summary`` (pixel coverage,
    χ², RMSE), ``truth_indices``, ``header``.
    ``truth_floor``: file truths get the prior's resolution floor, N(0, σ_min²) per pixel
    (``validate --no-truth-floor`` turns it off).
    """

def train_prior(
    data: _Path,
    out: _Path,
    *,
    steps: int = 2000,
    preset: str = "small",
    size: int = 64,
    batch: int = 16,
    lr: float = 2e-4,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    seed: int = 0,
    sigma_min: float = 1e-3,
    sigma_max: Optional[float] = None,
    checkpoint_every: int = 250,
    max_minutes: Optional[float] = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Trains a prior on images (.npy N×H×W or a FITS cube), as ``interf-image prior train``.

    Returns ``steps``, ``final_loss``, ``final_val_loss``, ``n_train``, ``n_val``,
    ``wall_time_s``, ``out``, ``stopped_early``; ``Prior(out)`` loads the result.
    """

def lens(
    data: _Path,
    noise: _Path,
    lens: _Path,
    *,
    psf: Optional[_Path] = None,
    uv: Optional[_Path] = None,
    prior: Optional[_Path] = None,
    samples: int = 16,
    steps: int = 300,
    method: str = "cla",
    seed: int = 0,
    alpha: float = 1.0,
    source_size: int = 64,
    image_size: int = 512,
    supersample: int = 3,
    flux_scale: Optional[float] = None,
) -> dict[str, Any]:
    """The source behind a strong lens (autolens ``tracer.json``), as ``interf-image lens``.

    Keys: ``samples``, ``mean``, ``std``, ``truth`` (when the lens file has one),
    ``source_header``; ``data``, ``model``, ``residual``, ``image_header``; ``chi2_samples``,
    ``chi2_mean``, ``truth_correlation``, ``flux_scale``, ``mode``.
    """

def denoise(
    image: _Path,
    psf: _Path,
    *,
    sigma: Optional[float] = None,
    prior: Optional[_Path] = None,
    samples: int = 16,
    steps: int = 300,
    method: str = "cla",
    seed: int = 0,
    alpha: float = 1.0,
    bin: int = 1,
    upsample: int = 1,
    margin: int = 4,
    flux_scale: Optional[float] = None,
) -> dict[str, Any]:
    """PSF deconvolution of an HST image, as ``interf-image denoise``.

    Keys: ``samples``, ``mean``, ``std``, ``header``; ``data``, ``prediction``,
    ``residual_sigma``, ``data_header``; ``sigma``, ``chi2_samples``, ``data_flux``,
    ``model_flux``, ``pixel_arcsec``.
    """
