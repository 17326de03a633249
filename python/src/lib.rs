//! `interf_image._core`: the pipeline layer of interf-image for Python, with numpy arrays in and
//! out. Each function calls the same pipeline function as the CLI command of the same name, so
//! the same options give the same numbers; errors are raised as `InterfImageError` with the
//! CLI's messages, and Ctrl-C stops a long run with `KeyboardInterrupt`.

use std::path::PathBuf;

use numpy::ndarray::{Array2, Array3};
use numpy::{
    Complex64, IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use interf_image::io::{HeaderValue, SkyHeader, SkyWcs};
use interf_image::observe::Observer;
use interf_image::operator::{ImageGeometry, Nufft as RustNufft, NufftOptions};
use interf_image::pipeline::image::{
    CellModel, CompactMode, DataKind, ImageOptions, LikelihoodKind, NoiseSource, WindowMode,
};
use interf_image::pipeline::split::Split;
use interf_image::pipeline::validate::{CalibrationOptions, TruthSource};
use interf_image::pipeline::PipelineError;
use interf_image::prior::ScoreModel;
use interf_image::sample::posterior::{Method, PosteriorOptions};
use interf_image::validate::truths::TruthScaling;
use ms_io::{DataColumn, FieldSelector, Selection, VisFile};

create_exception!(
    _core,
    InterfImageError,
    PyException,
    "An error of interf-image: what went wrong, with the file or option it concerns."
);

/// An error with its causes, as the CLI prints it (`anyhow`'s `{:#}`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn py_err(e: PipelineError) -> PyErr {
    if e.is_interrupted() {
        PyKeyboardInterrupt::new_err(e.to_string())
    } else {
        InterfImageError::new_err(chain(&e))
    }
}

fn other_err<E: std::error::Error>(e: E) -> PyErr {
    InterfImageError::new_err(chain(&e))
}

/// Progress goes nowhere (Python users call from scripts and notebooks); a pending
/// KeyboardInterrupt stops the run at its next step.
struct PythonSignals;

impl Observer for PythonSignals {
    fn stop_requested(&self) -> bool {
        Python::attach(|py| py.check_signals().is_err())
    }
}

fn radians_from_arcsec(a: f64) -> f64 {
    (a / 3600.0).to_radians()
}

/// The selection as the CLI's --field/--spw/--channels/--column spell it.
fn selection(
    field: Option<String>,
    spw: Option<Vec<usize>>,
    channels: Option<(usize, usize)>,
    column: &str,
) -> PyResult<Selection> {
    let column = match column.to_ascii_uppercase().as_str() {
        "DATA" => DataColumn::Data,
        "CORRECTED_DATA" | "CORRECTED" => DataColumn::CorrectedData,
        "MODEL_DATA" | "MODEL" => DataColumn::ModelData,
        other => {
            return Err(InterfImageError::new_err(format!(
                "column: unknown data column '{other}': use DATA, CORRECTED_DATA or MODEL_DATA"
            )))
        }
    };
    Ok(Selection {
        field: field.map(|f| match f.parse::<usize>() {
            Ok(id) => FieldSelector::Id(id),
            Err(_) => FieldSelector::Name(f),
        }),
        spws: spw,
        channels,
        column,
        chunk_rows: 0,
    })
}

/// A 2-D celestial FITS header (the keywords astropy's WCS needs, and the job's own) as a dict.
fn header_dict<'py>(
    py: Python<'py>,
    h: &SkyHeader,
    ny: usize,
    nx: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let wcs = SkyWcs::new(h, ny, nx);
    d.set_item("NAXIS", 2)?;
    d.set_item("NAXIS1", nx)?;
    d.set_item("NAXIS2", ny)?;
    d.set_item("CTYPE1", "RA---SIN")?;
    d.set_item("CRPIX1", wcs.crpix1)?;
    d.set_item("CRVAL1", h.ra_deg.rem_euclid(360.0))?;
    d.set_item("CDELT1", wcs.cdelt1)?;
    d.set_item("CUNIT1", "deg")?;
    d.set_item("CTYPE2", "DEC--SIN")?;
    d.set_item("CRPIX2", wcs.crpix2)?;
    d.set_item("CRVAL2", h.dec_deg)?;
    d.set_item("CDELT2", wcs.cdelt2)?;
    d.set_item("CUNIT2", "deg")?;
    d.set_item("RADESYS", "FK5")?;
    d.set_item("EQUINOX", 2000.0)?;
    d.set_item("BUNIT", &h.bunit)?;
    d.set_item("RESTFRQ", h.freq_hz)?;
    if let Some(b) = h.beam {
        d.set_item("BMAJ", b.major_deg)?;
        d.set_item("BMIN", b.minor_deg)?;
        d.set_item("BPA", b.pa_deg)?;
    }
    if let Some(v) = &h.date_obs {
        d.set_item("DATE-OBS", v)?;
    }
    if let Some(v) = &h.telescope {
        d.set_item("TELESCOP", v)?;
    }
    if let Some(v) = &h.object {
        d.set_item("OBJECT", v)?;
    }
    for (k, v) in &h.extra {
        match v {
            HeaderValue::Str(s) => d.set_item(k, s)?,
            HeaderValue::F64(x) => d.set_item(k, x)?,
            HeaderValue::I64(x) => d.set_item(k, x)?,
            HeaderValue::Bool(x) => d.set_item(k, x)?,
        }
    }
    Ok(d)
}

fn image2<'py>(py: Python<'py>, v: &[f32], ny: usize, nx: usize) -> PyResult<Bound<'py, PyAny>> {
    let a = Array2::from_shape_vec((ny, nx), v.to_vec()).map_err(other_err)?;
    Ok(a.into_pyarray(py).into_any())
}

fn cube<'py>(
    py: Python<'py>,
    v: &[f32],
    n: usize,
    ny: usize,
    nx: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let a = Array3::from_shape_vec((n, ny, nx), v.to_vec()).map_err(other_err)?;
    Ok(a.into_pyarray(py).into_any())
}

/// Reads the selected visibilities of a Measurement Set or UVFITS file (Stokes I; flagged and
/// autocorrelation samples have weight 0 or are left out, as the CLI reads them).
#[pyfunction]
#[pyo3(signature = (path, *, field=None, spw=None, channels=None, column="DATA"))]
fn read_vis<'py>(
    py: Python<'py>,
    path: PathBuf,
    field: Option<String>,
    spw: Option<Vec<usize>>,
    channels: Option<(usize, usize)>,
    column: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let sel = selection(field, spw, channels, column)?;
    let chunks = py
        .detach(|| -> Result<_, PipelineError> {
            let ms = VisFile::open(&path)?;
            let chunks = interf_image::pipeline::vis::read_vis(&ms, &sel, &PythonSignals)?;
            Ok(interf_image::pipeline::vis::merge_by_frequency(chunks))
        })
        .map_err(py_err)?;
    let c = match chunks.as_slice() {
        [c] => c,
        _ => {
            return Err(InterfImageError::new_err(format!(
                "{} has spectral windows with different channel frequencies; select one with spw",
                path.display()
            )))
        }
    };
    let (nrow, nchan) = (c.uvw.len(), c.freq.len());
    let d = PyDict::new(py);
    let uvw: Vec<f64> = c.uvw.iter().flatten().copied().collect();
    d.set_item(
        "uvw",
        Array2::from_shape_vec((nrow, 3), uvw)
            .map_err(other_err)?
            .into_pyarray(py),
    )?;
    d.set_item("freq", c.freq.clone().into_pyarray(py))?;
    let vis: Vec<numpy::Complex32> = c.vis.clone();
    d.set_item(
        "vis",
        Array2::from_shape_vec((nrow, nchan), vis)
            .map_err(other_err)?
            .into_pyarray(py),
    )?;
    d.set_item(
        "weight",
        Array2::from_shape_vec((nrow, nchan), c.weight.clone())
            .map_err(other_err)?
            .into_pyarray(py),
    )?;
    d.set_item("antenna1", c.antenna1.clone().into_pyarray(py))?;
    d.set_item("antenna2", c.antenna2.clone().into_pyarray(py))?;
    d.set_item("time", c.time.clone().into_pyarray(py))?;
    Ok(d)
}

/// The NUFFT of an image of `size × size` pixels of `scale_arcsec` to the samples `uvw` (metres,
/// `(nrow, 3)`) × `freq` (Hz), where `weight` (`(nrow, nchan)`) is positive (every sample when
/// it is not given): WSClean's conventions, `V = Σ I exp(+2πi(ul + vm + w(n−1)))`.
#[pyclass(frozen)]
struct Nufft {
    op: RustNufft,
    size: usize,
}

#[pymethods]
impl Nufft {
    #[new]
    #[pyo3(signature = (uvw, freq, size, scale_arcsec, *, weight=None, epsilon=1e-5))]
    fn new(
        uvw: PyReadonlyArray2<'_, f64>,
        freq: PyReadonlyArray1<'_, f64>,
        size: usize,
        scale_arcsec: f64,
        weight: Option<PyReadonlyArray2<'_, f32>>,
        epsilon: f64,
    ) -> PyResult<Self> {
        let uvw_a = uvw.as_array();
        if uvw_a.ncols() != 3 {
            return Err(InterfImageError::new_err(format!(
                "uvw must have shape (nrow, 3), got {:?}",
                uvw.shape()
            )));
        }
        let rows: Vec<[f64; 3]> = uvw_a
            .rows()
            .into_iter()
            .map(|r| [r[0], r[1], r[2]])
            .collect();
        let freq: Vec<f64> = freq.as_array().to_vec();
        let mask: Option<Vec<bool>> =
            weight.map(|w| w.as_array().iter().map(|&x| x > 0.0).collect());
        if let Some(m) = &mask {
            if m.len() != rows.len() * freq.len() {
                return Err(InterfImageError::new_err(format!(
                    "weight must have shape (nrow, nchan) = ({}, {})",
                    rows.len(),
                    freq.len()
                )));
            }
        }
        let scale = radians_from_arcsec(scale_arcsec);
        let geometry = ImageGeometry::new(size, size, scale, scale).map_err(other_err)?;
        let opts = NufftOptions {
            epsilon,
            ..Default::default()
        };
        let op =
            RustNufft::new(geometry, &rows, &freq, mask.as_deref(), &opts).map_err(other_err)?;
        Ok(Self { op, size })
    }

    /// Number of complex visibilities.
    #[getter]
    fn n_vis(&self) -> usize {
        self.op.n_vis()
    }

    /// `V = A x` for an image `(size, size)`: complex128 of shape `(n_vis,)`.
    fn forward<'py>(
        &self,
        py: Python<'py>,
        image: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let x: Vec<f64> = image.as_array().iter().copied().collect();
        if x.len() != self.size * self.size {
            return Err(InterfImageError::new_err(format!(
                "the image must be {0}×{0}, got {1:?}",
                self.size,
                image.shape()
            )));
        }
        let v: Vec<Complex64> = py.detach(|| self.op.forward_f64(&x)).map_err(other_err)?;
        Ok(v.into_pyarray(py).into_any())
    }

    /// `x = Aᵀ V` (the unnormalised dirty image) for visibilities of shape `(n_vis,)`.
    fn adjoint<'py>(
        &self,
        py: Python<'py>,
        vis: PyReadonlyArray1<'_, Complex64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let v: Vec<Complex64> = vis.as_array().to_vec();
        if v.len() != self.op.n_vis() {
            return Err(InterfImageError::new_err(format!(
                "expected {} visibilities, got {}",
                self.op.n_vis(),
                v.len()
            )));
        }
        let x = py.detach(|| self.op.adjoint_f64(&v)).map_err(other_err)?;
        Array2::from_shape_vec((self.size, self.size), x)
            .map_err(other_err)
            .map(|a| a.into_pyarray(py))
    }
}

/// A score-based prior: a checkpoint folder, or the built-in one (`path=None`).
#[pyclass(unsendable)]
struct Prior {
    model: ScoreModel,
    path: Option<PathBuf>,
}

#[pymethods]
impl Prior {
    #[new]
    #[pyo3(signature = (path=None))]
    fn new(path: Option<PathBuf>) -> PyResult<Self> {
        let dev = candle_core::Device::Cpu;
        let model = match &path {
            Some(p) => ScoreModel::load(p, &dev),
            None => interf_image::prior::default_prior(&dev),
        }
        .map_err(other_err)?;
        Ok(Self { model, path })
    }

    /// Side of the prior's (square) images.
    #[getter]
    fn image_size(&self) -> usize {
        self.model.image_size()
    }

    /// `n` draws from the prior (Euler–Maruyama, Tweedie-denoised), prior units (peak ≈ 1):
    /// shape `(n, size, size)`.
    #[pyo3(signature = (n, *, steps=300, seed=0, batch=16))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        steps: usize,
        seed: u64,
        batch: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let draws = interf_image::validate::truths::from_prior(
            &self.model,
            n,
            steps,
            batch,
            seed,
            &PythonSignals,
        )
        .map_err(|e| py_err(e.into()))?;
        let s = self.model.image_size();
        cube(py, &draws.concat(), draws.len(), s, s)
    }

    fn __repr__(&self) -> String {
        format!(
            "Prior({}, {}²)",
            self.path
                .as_ref()
                .map_or("built-in".into(), |p| format!("'{}'", p.display())),
            self.model.image_size()
        )
    }
}

fn parse<T: clap::ValueEnum>(what: &str, s: &str) -> PyResult<T> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        InterfImageError::new_err(format!("{what}: '{s}' is not one of {}", names.join(", ")))
    })
}

fn method(s: &str) -> PyResult<Method> {
    match s.to_ascii_lowercase().as_str() {
        "cla" => Ok(Method::Cla),
        "dps" => Ok(Method::Dps),
        _ => Err(InterfImageError::new_err(format!(
            "method: '{s}' is not one of cla, dps"
        ))),
    }
}

/// Posterior imaging of a Measurement Set, as `interf-image image` does (the same options and
/// defaults, the same numbers for the same seed). Returns a dict of numpy arrays (Jy/pixel for
/// the posterior, Jy/beam for the classic products) and numbers, with `header`, a 2-D FITS
/// header for astropy's WCS.
#[pyfunction]
#[pyo3(signature = (vis, *, prior=None, samples=64, steps=None, batch=None, method="dps", alpha=1.0,
    corrector_snr=0.0, seed=0, scale_arcsec=None, flux_scale=None, likelihood="auto", compact="auto",
    compact_max=32, window="off", data="vis", total_flux=None, noise="auto", epsilon=1e-5,
    field=None, spw=None, channels=None, column="DATA"))]
#[allow(clippy::too_many_arguments)]
fn image<'py>(
    py: Python<'py>,
    vis: PathBuf,
    prior: Option<&Prior>,
    samples: usize,
    steps: Option<usize>,
    batch: Option<usize>,
    method: &str,
    alpha: f32,
    corrector_snr: f64,
    seed: u64,
    scale_arcsec: Option<f64>,
    flux_scale: Option<f64>,
    likelihood: &str,
    compact: &str,
    compact_max: usize,
    window: &str,
    data: &str,
    total_flux: Option<f64>,
    noise: &str,
    epsilon: f64,
    field: Option<String>,
    spw: Option<Vec<usize>>,
    channels: Option<(usize, usize)>,
    column: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let owned;
    let prior = match prior {
        Some(p) => p,
        None => {
            owned = Prior::new(None)?;
            &owned
        }
    };
    let mut o = ImageOptions::new(vis);
    o.selection = selection(field, spw, channels, column)?;
    o.prior_dir = prior.path.clone();
    let method = self::method(method)?;
    o.posterior = PosteriorOptions {
        method,
        n_samples: samples,
        steps: steps.unwrap_or_else(|| method.default_steps()),
        batch: batch.unwrap_or_else(|| samples.clamp(1, 64)),
        seed,
        alpha,
        corrector: (corrector_snr > 0.0).then_some((corrector_snr, 1)),
    };
    o.likelihood = parse::<LikelihoodKind>("likelihood", likelihood)?;
    o.cell_model = CellModel::Auto;
    o.scale = scale_arcsec.map(radians_from_arcsec);
    o.flux_scale = flux_scale;
    o.compact = parse::<CompactMode>("compact", compact)?;
    o.compact_max = compact_max;
    o.window = parse::<WindowMode>("window", window)?;
    o.data = parse::<DataKind>("data", data)?;
    o.total_flux = total_flux;
    o.noise = parse::<NoiseSource>("noise", noise)?;
    o.nufft.epsilon = epsilon;
    let r =
        interf_image::pipeline::image::image(&prior.model, &o, &PythonSignals).map_err(py_err)?;
    let (n, s) = (r.n_samples, r.side);
    let d = PyDict::new(py);
    d.set_item("samples", cube(py, &r.samples, n, s, s)?)?;
    d.set_item("mean", image2(py, &r.mean, s, s)?)?;
    d.set_item("std", image2(py, &r.std, s, s)?)?;
    d.set_item("dirty", image2(py, &r.dirty.dirty, s, s)?)?;
    d.set_item("psf", image2(py, &r.dirty.psf, s, s)?)?;
    d.set_item("residual", image2(py, &r.residual_dirty, s, s)?)?;
    if let Some(c) = &r.clean {
        d.set_item("clean", image2(py, &c.restored, s, s)?)?;
    }
    d.set_item("header", header_dict(py, &r.header, s, s)?)?;
    d.set_item("beam_header", header_dict(py, &r.beam_header, s, s)?)?;
    d.set_item("pixel_arcsec", r.scale.to_degrees() * 3600.0)?;
    d.set_item("chi2_samples", r.chi2.clone().into_pyarray(py))?;
    d.set_item("chi2_mean", r.chi2_mean)?;
    d.set_item("chi2_clean", r.chi2_clean)?;
    d.set_item("flux_scale", r.flux_scale)?;
    d.set_item("total_flux", r.total_flux)?;
    d.set_item("n_visibilities", r.n_usable)?;
    d.set_item("method", format!("{:?}", r.method).to_lowercase())?;
    d.set_item("likelihood", format!("{:?}", r.likelihood).to_lowercase())?;
    d.set_item("prior_check", &r.prior_check.line)?;
    d.set_item("sampling_seconds", r.t_sample.as_secs_f64())?;
    Ok(d)
}

/// Calibration on a real uv coverage, as `interf-image validate` does: truths (a file, or draws
/// from the prior when `truths` is None) observed with noise `noise` (Jy per component), every
/// posterior sampled; TARP and pixel coverage. Returns a dict with the truth/mean/std cubes
/// (Jy/pixel), `tarp` and `summary` (dicts, the JSON's), and `alpha`/`ecp` (the TARP curve).
/// `truth_floor`: file truths get the prior's resolution floor (as `validate` without
/// `--no-truth-floor`).
#[pyfunction]
#[pyo3(signature = (like, noise, *, truths=None, split="all", truth_scaling="peak", truth_floor=true, n=100, prior=None,
    samples=100, steps=None, batch=None, method="dps", alpha=1.0, seed=0, flux_scale=1.0,
    scale_arcsec=None, bootstrap=1000, clean=true, epsilon=1e-5))]
#[allow(clippy::too_many_arguments)]
fn validate<'py>(
    py: Python<'py>,
    like: PathBuf,
    noise: f64,
    truths: Option<PathBuf>,
    split: &str,
    truth_scaling: &str,
    truth_floor: bool,
    n: usize,
    prior: Option<&Prior>,
    samples: usize,
    steps: Option<usize>,
    batch: Option<usize>,
    method: &str,
    alpha: f32,
    seed: u64,
    flux_scale: f64,
    scale_arcsec: Option<f64>,
    bootstrap: usize,
    clean: bool,
    epsilon: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let owned;
    let prior = match prior {
        Some(p) => p,
        None => {
            owned = Prior::new(None)?;
            &owned
        }
    };
    let method = self::method(method)?;
    let opts = CalibrationOptions {
        like,
        selection: Selection::default(),
        prior_dir: prior.path.clone(),
        truths: match truths {
            Some(path) => TruthSource::File {
                path,
                scaling: match truth_scaling {
                    "peak" => TruthScaling::Peak,
                    "physical" => TruthScaling::Physical,
                    other => {
                        return Err(InterfImageError::new_err(format!(
                            "truth_scaling: '{other}' is not one of peak, physical"
                        )))
                    }
                },
                split: parse::<Split>("split", split)?,
            },
            None => TruthSource::Prior { steps: None },
        },
        truth_floor,
        n,
        posterior: PosteriorOptions {
            method,
            n_samples: samples,
            steps: steps.unwrap_or_else(|| method.default_steps()),
            batch: batch.unwrap_or_else(|| (n * samples).clamp(1, 64)),
            seed,
            alpha,
            corrector: None,
        },
        noise,
        flux_scale,
        scale: scale_arcsec.map(radians_from_arcsec),
        bootstrap,
        clean_baseline: clean,
        nufft: NufftOptions {
            epsilon,
            ..Default::default()
        },
        max_memory: None,
    };
    let r = interf_image::pipeline::validate::validate(&prior.model, &opts, &PythonSignals)
        .map_err(py_err)?;
    let v = &r.validation;
    let s = r.side;
    let k = v.truths.len();
    let flat = |get: &dyn Fn(&interf_image::validate::TruthResult) -> &[f32]| -> Vec<f32> {
        v.truths.iter().flat_map(|t| get(t).to_vec()).collect()
    };
    let d = PyDict::new(py);
    d.set_item("truth", cube(py, &flat(&|t| &t.truth), k, s, s)?)?;
    d.set_item("mean", cube(py, &flat(&|t| &t.mean), k, s, s)?)?;
    d.set_item("std", cube(py, &flat(&|t| &t.std), k, s, s)?)?;
    let json = |x: &dyn erased::Ser| -> PyResult<Bound<'py, PyAny>> {
        let text = x.to_json().map_err(other_err)?;
        py.import("json")?.call_method1("loads", (text,))
    };
    d.set_item("tarp", json(&v.tarp)?)?;
    d.set_item("summary", json(&v.summary)?)?;
    d.set_item("truth_indices", r.truth_indices.clone())?;
    d.set_item("header", header_dict(py, &r.header, s, s)?)?;
    d.set_item("sampling_seconds", r.t_sample)?;
    Ok(d)
}

/// Trains a prior on images (.npy N×H×W or a FITS cube), as `interf-image prior train`: a
/// validation split held out, the 8 dihedral symmetries and small shifts as augmentation, σ_max
/// by Song & Ermon's rule, EMA weights, checkpoints every `checkpoint_every` steps (resumable
/// with `resume=True`). Returns the training summary; `Prior(out)` loads the result.
#[pyfunction]
#[pyo3(signature = (data, out, *, steps=2000, preset="small", size=64, batch=16, lr=2e-4,
    val_fraction=0.1, split_seed=0, seed=0, sigma_min=1e-3, sigma_max=None, checkpoint_every=250,
    max_minutes=None, resume=false))]
#[allow(clippy::too_many_arguments)]
fn train_prior<'py>(
    py: Python<'py>,
    data: PathBuf,
    out: PathBuf,
    steps: usize,
    preset: &str,
    size: usize,
    batch: usize,
    lr: f64,
    val_fraction: f64,
    split_seed: u64,
    seed: u64,
    sigma_min: f64,
    sigma_max: Option<f64>,
    checkpoint_every: usize,
    max_minutes: Option<f64>,
    resume: bool,
) -> PyResult<Bound<'py, PyDict>> {
    use interf_image::pipeline::train::{train_prior as run, SdeChoice, TrainOptions};
    use interf_image::prior::data::{NormKind, Preprocess, Resample};
    use interf_image::prior::model::UNetConfig;
    use interf_image::prior::train::TrainConfig;
    let occupied = out.read_dir().is_ok_and(|mut d| d.next().is_some());
    if occupied && !resume {
        return Err(InterfImageError::new_err(format!(
            "{} exists and is not empty: give resume=True to continue its training, or another folder",
            out.display()
        )));
    }
    let network = match preset {
        "tiny" => UNetConfig::tiny(size),
        "small" => UNetConfig::small(size),
        "large" => UNetConfig::large(size),
        other => {
            return Err(InterfImageError::new_err(format!(
                "preset: '{other}' is not one of tiny, small, large"
            )))
        }
    };
    let opts = TrainOptions {
        data,
        out,
        preprocess: Preprocess {
            size,
            crop: None,
            resample: Resample::Area,
            norm: NormKind::PerImagePeak,
        },
        network,
        sde: SdeChoice::Ve {
            sigma_min,
            sigma_max,
        },
        config: TrainConfig {
            batch_size: batch,
            learning_rate: lr,
            max_steps: steps,
            max_minutes,
            seed,
            checkpoint_every,
            val_fraction,
            split_seed,
            ..Default::default()
        },
        resume,
        max_memory: None,
    };
    let s = run(&opts, &candle_core::Device::Cpu, &PythonSignals).map_err(py_err)?;
    let d = PyDict::new(py);
    d.set_item("steps", s.steps)?;
    d.set_item("final_loss", s.final_loss)?;
    d.set_item("final_val_loss", s.final_val_loss)?;
    d.set_item("n_train", s.n_train)?;
    d.set_item("n_val", s.n_val)?;
    d.set_item("wall_time_s", s.wall_time_s)?;
    d.set_item("out", s.out_dir)?;
    d.set_item("stopped_early", s.stopped_early)?;
    Ok(d)
}

fn posterior(
    samples: usize,
    steps: usize,
    method: &str,
    seed: u64,
    alpha: f32,
) -> PyResult<PosteriorOptions> {
    Ok(PosteriorOptions {
        method: self::method(method)?,
        n_samples: samples,
        steps,
        batch: samples.clamp(1, 64),
        seed,
        alpha,
        corrector: None,
    })
}

/// The source behind a strong lens (SIE + shear, an autolens `tracer.json`), as `interf-image
/// lens`: from an image (`data`, `noise`, `psf`) or, with `uv`, from visibilities. Returns the
/// source posterior (samples, mean, std with `source_header`), the lensed mean, the data and the
/// residual (with `image_header`), and χ².
#[pyfunction]
#[pyo3(signature = (data, noise, lens, *, psf=None, uv=None, prior=None, samples=16, steps=300,
    method="cla", seed=0, alpha=1.0, source_size=64, image_size=512, supersample=3,
    flux_scale=None))]
#[allow(clippy::too_many_arguments)]
fn lens<'py>(
    py: Python<'py>,
    data: PathBuf,
    noise: PathBuf,
    lens: PathBuf,
    psf: Option<PathBuf>,
    uv: Option<PathBuf>,
    prior: Option<PathBuf>,
    samples: usize,
    steps: usize,
    method: &str,
    seed: u64,
    alpha: f32,
    source_size: usize,
    image_size: usize,
    supersample: usize,
    flux_scale: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    use interf_image::operator::lens::data::RowOrder;
    use interf_image::pipeline::lens::{FitMask, LensOptions};
    let opts = LensOptions {
        data,
        noise,
        psf,
        lens,
        uv,
        source_size,
        source_scale: None,
        source_centre: None,
        pixel_scale: None,
        rows: RowOrder::Auto,
        max_memory: None,
        image_size,
        supersample,
        mask: FitMask::Auto,
        flux_scale,
        prior,
        device: candle_core::Device::Cpu,
        posterior: posterior(samples, steps, method, seed, alpha)?,
    };
    let r = interf_image::pipeline::lens::lens(&opts, &PythonSignals).map_err(py_err)?;
    let (sy, sx) = (r.source.ny, r.source.nx);
    let (iy, ix) = (r.image_grid.ny, r.image_grid.nx);
    let d = PyDict::new(py);
    d.set_item(
        "samples",
        cube(py, &r.samples.concat(), r.samples.len(), sy, sx)?,
    )?;
    d.set_item("mean", image2(py, &r.mean, sy, sx)?)?;
    d.set_item("std", image2(py, &r.std, sy, sx)?)?;
    if let Some(t) = &r.truth {
        d.set_item("truth", image2(py, t, sy, sx)?)?;
    }
    d.set_item("truth_correlation", r.truth_correlation)?;
    d.set_item("source_header", header_dict(py, &r.source_header, sy, sx)?)?;
    d.set_item("data", image2(py, &r.data_image, iy, ix)?)?;
    d.set_item("model", image2(py, &r.model_image, iy, ix)?)?;
    d.set_item("residual", image2(py, &r.residual, iy, ix)?)?;
    d.set_item("residual_label", &r.residual_label)?;
    d.set_item("image_header", header_dict(py, &r.image_header, iy, ix)?)?;
    d.set_item(
        "chi2_samples",
        r.reduced_chi2_samples.clone().into_pyarray(py),
    )?;
    d.set_item("chi2_mean", r.reduced_chi2_mean)?;
    d.set_item("flux_scale", r.flux_scale)?;
    d.set_item("mode", &r.mode)?;
    Ok(d)
}

/// PSF deconvolution of an optical (HST) image, as `interf-image denoise`: the posterior of the
/// sky on a cut-out (samples, mean, std with `header`), the data, the prediction and
/// residual/σ (with `data_header`), χ² and fluxes.
#[pyfunction]
#[pyo3(signature = (image, psf, *, sigma=None, prior=None, samples=16, steps=300, method="cla",
    seed=0, alpha=1.0, bin=1, upsample=1, margin=4, flux_scale=None))]
#[allow(clippy::too_many_arguments)]
fn denoise<'py>(
    py: Python<'py>,
    image: PathBuf,
    psf: PathBuf,
    sigma: Option<f64>,
    prior: Option<PathBuf>,
    samples: usize,
    steps: usize,
    method: &str,
    seed: u64,
    alpha: f32,
    bin: usize,
    upsample: usize,
    margin: usize,
    flux_scale: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    use interf_image::operator::hst::prep::PsfSampling;
    use interf_image::pipeline::denoise::DenoiseOptions;
    let opts = DenoiseOptions {
        image,
        psf,
        sigma,
        bin,
        upsample,
        psf_sampling: PsfSampling::Observed,
        margin,
        centre: None,
        shift: [0.0, 0.0],
        flux_scale,
        prior,
        noise_model: None,
        device: candle_core::Device::Cpu,
        posterior: posterior(samples, steps, method, seed, alpha)?,
    };
    let r = interf_image::pipeline::denoise::denoise(&opts, &PythonSignals).map_err(py_err)?;
    let s = r.side;
    let [dy, dx] = r.cutout.shape;
    let d = PyDict::new(py);
    d.set_item("samples", cube(py, &r.samples, r.n_samples, s, s)?)?;
    d.set_item("mean", image2(py, &r.mean, s, s)?)?;
    d.set_item("std", image2(py, &r.std, s, s)?)?;
    d.set_item("header", header_dict(py, &r.model_header, s, s)?)?;
    d.set_item("data", image2(py, &r.data, dy, dx)?)?;
    d.set_item("prediction", image2(py, &r.prediction, dy, dx)?)?;
    d.set_item("residual_sigma", image2(py, &r.residual_sigma, dy, dx)?)?;
    d.set_item("data_header", header_dict(py, &r.data_header, dy, dx)?)?;
    d.set_item("sigma", r.sigma)?;
    d.set_item(
        "chi2_samples",
        r.reduced_chi2_samples.clone().into_pyarray(py),
    )?;
    d.set_item("data_flux", r.data_flux)?;
    d.set_item("model_flux", r.model_flux)?;
    d.set_item("pixel_arcsec", r.pixel_asec)?;
    Ok(d)
}

/// Dirty image and PSF, as `interf-image dirty` (and `wsclean -niter 0`) makes them: `size`
/// pixels square of `scale_arcsec` (default: a quarter of the theoretical beam), `weighting`
/// natural, uniform or briggs (with `robust`), WSClean's padding and rank filter. Returns
/// `dirty`, `psf` (Jy/beam) and `header`.
#[pyfunction]
#[pyo3(signature = (vis, size, *, scale_arcsec=None, weighting="natural", robust=0.0, padding=1.2,
    rank_filter=3.0, epsilon=1e-5, field=None, spw=None, channels=None, column="DATA"))]
#[allow(clippy::too_many_arguments)]
fn dirty<'py>(
    py: Python<'py>,
    vis: PathBuf,
    size: usize,
    scale_arcsec: Option<f64>,
    weighting: &str,
    robust: f64,
    padding: f64,
    rank_filter: f64,
    epsilon: f64,
    field: Option<String>,
    spw: Option<Vec<usize>>,
    channels: Option<(usize, usize)>,
    column: &str,
) -> PyResult<Bound<'py, PyDict>> {
    use interf_image::imaging::weighting::RankFilter;
    use interf_image::imaging::Weighting;
    use interf_image::pipeline::dirty::DirtyOptions;
    let weighting = match weighting.to_ascii_lowercase().as_str() {
        "natural" => Weighting::Natural,
        "uniform" => Weighting::Uniform,
        "briggs" => Weighting::briggs(robust).map_err(other_err)?,
        other => {
            return Err(InterfImageError::new_err(format!(
                "weighting: '{other}' is not one of natural, uniform, briggs"
            )))
        }
    };
    let opts = DirtyOptions {
        vis,
        selection: selection(field, spw, channels, column)?,
        nx: size,
        ny: size,
        scale: scale_arcsec.map(radians_from_arcsec),
        weighting,
        padding,
        rank_filter: (rank_filter >= 1.0).then_some(RankFilter {
            level: rank_filter,
            size: 16,
        }),
        nufft: NufftOptions {
            epsilon,
            ..Default::default()
        },
        max_memory: None,
    };
    opts.check().map_err(py_err)?;
    let r = interf_image::pipeline::dirty::dirty(&opts, &PythonSignals).map_err(py_err)?;
    let d = PyDict::new(py);
    d.set_item("dirty", image2(py, &r.dirty, size, size)?)?;
    d.set_item("psf", image2(py, &r.psf, size, size)?)?;
    d.set_item("header", header_dict(py, &r.dirty_header, size, size)?)?;
    d.set_item("pixel_arcsec", r.scale.to_degrees() * 3600.0)?;
    d.set_item("n_usable", r.n_usable)?;
    Ok(d)
}

/// Serialising a result struct to JSON for Python without naming its type.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("InterfImageError", m.py().get_type::<InterfImageError>())?;
    m.add_function(wrap_pyfunction!(read_vis, m)?)?;
    m.add_function(wrap_pyfunction!(dirty, m)?)?;
    m.add_function(wrap_pyfunction!(image, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(train_prior, m)?)?;
    m.add_function(wrap_pyfunction!(lens, m)?)?;
    m.add_function(wrap_pyfunction!(denoise, m)?)?;
    m.add_class::<Nufft>()?;
    m.add_class::<Prior>()?;
    Ok(())
}
