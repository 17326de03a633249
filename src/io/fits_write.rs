//! Writing images and cubes with WSClean's header, atomically.
//!
//! Written through cfitsio's C calls rather than fitsio's wrappers: fitsio's custom primary HDU
//! adds `EXTNAME = '_PRIMARY'`, it cannot write logical or HISTORY cards, and its `Drop`
//! discards the status of the final close, which is where a full disk shows up.

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long};
use std::path::{Path, PathBuf};
use std::ptr;

use fitsio::sys;

use super::wcs::{HeaderValue, SkyHeader, MANAGED_KEYS};
use super::FitsError;

/// What the third axis of a cube counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CubeAxis {
    /// Posterior samples (or any stack of images of the same sky): CTYPE3 = 'SAMPLE', world
    /// coordinate = 0-based plane index. The frequency moves to the OBSFREQ/OBSBW keywords.
    Sample,
    /// Contiguous sub-bands: plane k at `freq_hz + k * bandwidth_hz` (CTYPE3 = 'FREQ', CDELT3 =
    /// `bandwidth_hz`), as WSClean's `-channels-out` cubes.
    Frequency,
}

/// Write one image as WSClean does: NAXIS = 4 (RA, DEC, FREQ = 1, STOKES = 1 for I), BITPIX -32.
///
/// `image` is row-major `[iy][ix]`: `ix` along FITS axis 1 (RA, increasing to the right in
/// pixel index, i.e. towards the west), `iy` along axis 2 (Dec, upward). The phase centre is
/// 0-based pixel (nx/2, ny/2). An existing file at `path` is replaced; nothing else is touched.
pub fn write_image(
    path: &Path,
    image: &[f32],
    ny: usize,
    nx: usize,
    header: &SkyHeader,
) -> Result<(), FitsError> {
    write_planes(path, image, 1, ny, nx, header, CubeAxis::Frequency)
}

/// Write `n` planes of ny × nx (`planes` contiguous, plane-major: `[k][iy][ix]`) as one FITS
/// cube: NAXIS = 4 with NAXIS3 = n along `third_axis` and NAXIS4 = 1 (STOKES I).
///
/// The stack goes on axis 3 rather than a fifth axis because DS9 and CARTA page through axis 3
/// and CARTA takes axis 4 for Stokes; astropy reads either.
pub fn write_cube(
    path: &Path,
    planes: &[f32],
    n: usize,
    ny: usize,
    nx: usize,
    header: &SkyHeader,
    third_axis: CubeAxis,
) -> Result<(), FitsError> {
    write_planes(path, planes, n, ny, nx, header, third_axis)
}

fn write_planes(
    path: &Path,
    data: &[f32],
    n: usize,
    ny: usize,
    nx: usize,
    header: &SkyHeader,
    axis3: CubeAxis,
) -> Result<(), FitsError> {
    if n == 0 || ny == 0 || nx == 0 {
        return Err(FitsError::bad(
            path,
            format!("cannot write an empty image ({n} × {ny} × {nx})"),
        ));
    }
    if data.len() != n * ny * nx {
        return Err(FitsError::bad(
            path,
            format!(
                "{} pixels given for {n} plane(s) of {ny} × {nx} = {}",
                data.len(),
                n * ny * nx
            ),
        ));
    }
    check_header(path, header)?;
    write_atomically(path, |tmp| {
        let mut out = RawFits::create(tmp, path, &[nx, ny, n, 1])?;
        write_header(&mut out, header, ny, nx, axis3)?;
        out.write_pixels(data)?;
        out.close()
    })
}

fn check_header(path: &Path, h: &SkyHeader) -> Result<(), FitsError> {
    let finite = [
        ("ra_deg", h.ra_deg),
        ("dec_deg", h.dec_deg),
        ("cell_x_deg", h.cell_x_deg),
        ("cell_y_deg", h.cell_y_deg),
        ("freq_hz", h.freq_hz),
        ("bandwidth_hz", h.bandwidth_hz),
    ];
    for (name, v) in finite {
        if !v.is_finite() {
            return Err(FitsError::bad(path, format!("header {name} is {v}")));
        }
    }
    if h.cell_x_deg <= 0.0 || h.cell_y_deg <= 0.0 {
        return Err(FitsError::bad(
            path,
            format!(
                "pixel sizes must be positive (cell_x_deg = {}, cell_y_deg = {}); the sign of \
                 CDELT1 is set by the writer",
                h.cell_x_deg, h.cell_y_deg
            ),
        ));
    }
    if h.dec_deg.abs() > 90.0 {
        return Err(FitsError::bad(
            path,
            format!("declination {} is outside [-90, 90]", h.dec_deg),
        ));
    }
    for (key, value) in &h.extra {
        let upper = key.to_ascii_uppercase();
        let valid_name = !key.is_empty()
            && key.len() <= 8
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(FitsError::bad(
                path,
                format!("extra keyword '{key}' is not a FITS name (1-8 of A-Z 0-9 - _)"),
            ));
        }
        if MANAGED_KEYS.contains(&upper.as_str()) {
            return Err(FitsError::bad(
                path,
                format!("extra keyword {upper} is written by the writer itself; set the SkyHeader field instead"),
            ));
        }
        let commentary = upper == "HISTORY" || upper == "COMMENT";
        match value {
            HeaderValue::Str(s) if !s.bytes().all(|b| (32..127).contains(&b)) => {
                return Err(FitsError::bad(
                    path,
                    format!("keyword {upper}: FITS strings must be printable ASCII: {s:?}"),
                ))
            }
            HeaderValue::Str(_) => {}
            _ if commentary => {
                return Err(FitsError::bad(
                    path,
                    format!("{upper} cards hold text: use HeaderValue::Str"),
                ))
            }
            HeaderValue::F64(v) if !v.is_finite() => {
                return Err(FitsError::bad(
                    path,
                    format!("keyword {upper} is {v}: FITS has no NaN or infinity in headers"),
                ))
            }
            _ => {}
        }
    }
    for (name, s) in [
        ("bunit", Some(&h.bunit)),
        ("date_obs", h.date_obs.as_ref()),
        ("telescope", h.telescope.as_ref()),
        ("object", h.object.as_ref()),
        ("observer", h.observer.as_ref()),
    ] {
        if let Some(s) = s {
            if !s.bytes().all(|b| (32..127).contains(&b)) || s.len() > 68 {
                return Err(FitsError::bad(
                    path,
                    format!(
                        "header {name} must be printable ASCII of at most 68 characters: {s:?}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn write_header(
    out: &mut RawFits,
    h: &SkyHeader,
    ny: usize,
    nx: usize,
    axis3: CubeAxis,
) -> Result<(), FitsError> {
    out.f64("BSCALE", 1.0, "")?;
    out.f64("BZERO", 0.0, "")?;
    out.str("BUNIT", &h.bunit, bunit_comment(&h.bunit))?;
    if let Some(beam) = h.beam {
        out.f64("BMAJ", beam.major_deg, "restoring beam major axis (deg)")?;
        out.f64("BMIN", beam.minor_deg, "restoring beam minor axis (deg)")?;
        out.f64("BPA", beam.pa_deg, "restoring beam position angle (deg)")?;
    }
    out.f64("EQUINOX", 2000.0, "J2000")?;
    out.str("BTYPE", "Intensity", "")?;
    for (key, v) in [
        ("TELESCOP", &h.telescope),
        ("OBSERVER", &h.observer),
        ("OBJECT", &h.object),
    ] {
        if let Some(v) = v {
            out.str(key, v, "")?;
        }
    }
    out.str(
        "ORIGIN",
        "interf-image",
        "Bayesian imaging with score-based priors",
    )?;

    let wcs = super::SkyWcs::new(h, ny, nx);
    out.str("CTYPE1", "RA---SIN", "Right ascension angle cosine")?;
    out.f64("CRPIX1", wcs.crpix1, "")?;
    // WSClean writes RA in (-180, 180]; [0, 360) is what people read and compare.
    out.f64("CRVAL1", h.ra_deg.rem_euclid(360.0), "")?;
    out.f64("CDELT1", wcs.cdelt1, "")?;
    out.str("CUNIT1", "deg", "")?;
    out.str("CTYPE2", "DEC--SIN", "Declination angle cosine")?;
    out.f64("CRPIX2", wcs.crpix2, "")?;
    out.f64("CRVAL2", h.dec_deg, "")?;
    out.f64("CDELT2", wcs.cdelt2, "")?;
    out.str("CUNIT2", "deg", "")?;
    match axis3 {
        CubeAxis::Frequency => {
            out.str("CTYPE3", "FREQ", "Central frequency")?;
            out.f64("CRPIX3", 1.0, "")?;
            out.f64("CRVAL3", h.freq_hz, "")?;
            out.f64("CDELT3", h.bandwidth_hz, "")?;
            out.str("CUNIT3", "Hz", "")?;
        }
        CubeAxis::Sample => {
            out.str("CTYPE3", "SAMPLE", "posterior sample index")?;
            out.f64("CRPIX3", 1.0, "")?;
            out.f64("CRVAL3", 0.0, "")?;
            out.f64("CDELT3", 1.0, "")?;
            out.str("CUNIT3", "", "")?;
        }
    }
    out.str("CTYPE4", "STOKES", "")?;
    out.f64("CRPIX4", 1.0, "")?;
    out.f64("CRVAL4", 1.0, "Stokes I")?;
    out.f64("CDELT4", 1.0, "")?;
    out.str("CUNIT4", "", "")?;
    out.str("SPECSYS", "TOPOCENT", "")?;
    if let Some(d) = &h.date_obs {
        out.str("DATE-OBS", d, "")?;
        if let Some(mjd) = super::wcs::iso_to_mjd(d) {
            out.f64("MJD-OBS", mjd, "[d] MJD of DATE-OBS")?;
        }
    }
    out.str("RADESYS", "FK5", "")?;
    if axis3 == CubeAxis::Sample {
        out.f64("OBSFREQ", h.freq_hz, "central frequency (Hz)")?;
        out.f64("OBSBW", h.bandwidth_hz, "bandwidth (Hz)")?;
    }
    out.str(
        "IIVERSIO",
        env!("CARGO_PKG_VERSION"),
        "interf-image version",
    )?;
    out.date()?;
    for (key, value) in &h.extra {
        let key = key.to_ascii_uppercase();
        match (key.as_str(), value) {
            ("HISTORY", HeaderValue::Str(s)) => out.history(s)?,
            ("COMMENT", HeaderValue::Str(s)) => out.comment(s)?,
            (_, HeaderValue::Str(s)) => out.str(&key, s, "")?,
            (_, HeaderValue::F64(v)) => out.f64(&key, *v, "")?,
            (_, HeaderValue::I64(v)) => out.i64(&key, *v)?,
            (_, HeaderValue::Bool(v)) => out.bool(&key, *v)?,
        }
    }
    Ok(())
}

fn bunit_comment(bunit: &str) -> &'static str {
    match bunit.to_ascii_uppercase().as_str() {
        "JY/BEAM" => "Units are in Jansky per beam",
        "JY/PIXEL" => "Units are in Jansky per pixel",
        _ => "",
    }
}

/// Write into a fresh temporary file beside `path`, then rename it over `path`: an interrupted
/// run leaves the old file (or none) instead of a truncated FITS that viewers half-read.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), FitsError>,
) -> Result<(), FitsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(FitsError::NoOutputDir {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    if path.is_dir() {
        return Err(FitsError::bad(path, "is a directory, not a file name"));
    }
    if path.file_name().is_none() {
        return Err(FitsError::bad(path, "has no file name"));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".interf-image-")
        .suffix(".fits.part")
        .tempfile_in(dir)
        .map_err(|e| {
            FitsError::io(
                path,
                format!("cannot create a file in {}", dir.display()),
                e,
            )
        })?
        .into_temp_path();
    // cfitsio refuses to create over an existing file; the name stays ours (random, and the
    // TempPath deletes it on every early return below).
    std::fs::remove_file(&tmp).map_err(|e| FitsError::io(path, "preparing a temporary file", e))?;
    fill(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| FitsError::io(path, "syncing the written file", e))?;
    tmp.persist(path)
        .map_err(|e| FitsError::io(path, "moving the finished file into place", e.error))?;
    Ok(())
}

/// A cfitsio file being written; closed (and its status checked) by `close`, or closed and
/// abandoned on drop.
struct RawFits {
    fptr: *mut sys::fitsfile,
    /// The user's path, for messages: the temporary name means nothing to them.
    path: PathBuf,
}

impl RawFits {
    /// `naxes` in FITS order (NAXIS1 first).
    fn create(tmp: &Path, path: &Path, naxes: &[usize]) -> Result<RawFits, FitsError> {
        let name = tmp
            .to_str()
            .ok_or_else(|| FitsError::bad(path, "the directory path is not valid UTF-8"))?;
        if name.contains(['[', '(']) || name.starts_with('!') {
            return Err(FitsError::bad(
                path,
                "cfitsio cannot write under a directory whose path contains '[' or '('",
            ));
        }
        let c_name = CString::new(name).map_err(|_| FitsError::bad(path, "path contains NUL"))?;
        let mut fptr = ptr::null_mut();
        let mut status: c_int = 0;
        // SAFETY: cfitsio writes the new handle into `fptr`; the name is NUL-terminated.
        unsafe { sys::ffinit(&mut fptr, c_name.as_ptr(), &mut status) };
        if status != 0 || fptr.is_null() {
            return Err(FitsError::status(path, "cannot create the file", status));
        }
        let out = RawFits {
            fptr,
            path: path.to_path_buf(),
        };
        let mut dims: Vec<c_long> = naxes.iter().map(|&n| n as c_long).collect();
        // SAFETY: `dims` holds NAXIS entries and outlives the call.
        unsafe {
            sys::ffcrim(
                out.fptr,
                -32,
                dims.len() as c_int,
                dims.as_mut_ptr(),
                &mut status,
            )
        };
        out.check(status, "creating the primary image")?;
        Ok(out)
    }

    fn check(&self, status: c_int, context: impl Into<String>) -> Result<(), FitsError> {
        if status == 0 {
            Ok(())
        } else {
            Err(FitsError::status(&self.path, context, status))
        }
    }

    fn cstr(&self, s: &str) -> Result<CString, FitsError> {
        CString::new(s).map_err(|_| FitsError::bad(&self.path, format!("{s:?} contains NUL")))
    }

    fn f64(&mut self, key: &str, value: f64, comment: &str) -> Result<(), FitsError> {
        let (k, c) = (self.cstr(key)?, self.cstr(comment)?);
        let mut status = 0;
        // 15 significant digits ('%.15G'), as WSClean writes them.
        // SAFETY: open handle; NUL-terminated strings that outlive the call.
        unsafe { sys::ffpkyd(self.fptr, k.as_ptr(), value, -15, c.as_ptr(), &mut status) };
        self.check(status, format!("writing keyword {key}"))
    }

    fn i64(&mut self, key: &str, value: i64) -> Result<(), FitsError> {
        let k = self.cstr(key)?;
        let mut status = 0;
        // SAFETY: as in `f64`.
        unsafe { sys::ffpkyj(self.fptr, k.as_ptr(), value, ptr::null(), &mut status) };
        self.check(status, format!("writing keyword {key}"))
    }

    fn bool(&mut self, key: &str, value: bool) -> Result<(), FitsError> {
        let k = self.cstr(key)?;
        let mut status = 0;
        // SAFETY: as in `f64`.
        unsafe {
            sys::ffpkyl(
                self.fptr,
                k.as_ptr(),
                value as c_int,
                ptr::null(),
                &mut status,
            )
        };
        self.check(status, format!("writing keyword {key}"))
    }

    fn str(&mut self, key: &str, value: &str, comment: &str) -> Result<(), FitsError> {
        let (k, v, c) = (self.cstr(key)?, self.cstr(value)?, self.cstr(comment)?);
        let mut status = 0;
        // A card holds 68 characters of string; longer ones (command lines, paths) go on
        // CONTINUE cards, which astropy, DS9 and CARTA read without the LONGSTRN notice.
        // SAFETY: as in `f64`.
        unsafe {
            if value.len() > 68 {
                sys::ffpkls(self.fptr, k.as_ptr(), v.as_ptr(), c.as_ptr(), &mut status);
            } else {
                sys::ffpkys(self.fptr, k.as_ptr(), v.as_ptr(), c.as_ptr(), &mut status);
            }
        }
        self.check(status, format!("writing keyword {key}"))
    }

    fn history(&mut self, text: &str) -> Result<(), FitsError> {
        let t = self.cstr(text)?;
        let mut status = 0;
        // SAFETY: as in `f64`; cfitsio splits long text over several cards.
        unsafe { sys::ffphis(self.fptr, t.as_ptr() as *const c_char, &mut status) };
        self.check(status, "writing HISTORY")
    }

    fn comment(&mut self, text: &str) -> Result<(), FitsError> {
        let t = self.cstr(text)?;
        let mut status = 0;
        // SAFETY: as in `history`.
        unsafe { sys::ffpcom(self.fptr, t.as_ptr(), &mut status) };
        self.check(status, "writing COMMENT")
    }

    fn date(&mut self) -> Result<(), FitsError> {
        let mut status = 0;
        // SAFETY: open handle.
        unsafe { sys::ffpdat(self.fptr, &mut status) };
        self.check(status, "writing DATE")
    }

    fn write_pixels(&mut self, data: &[f32]) -> Result<(), FitsError> {
        let mut status = 0;
        // SAFETY: cfitsio reads `data.len()` floats. The pointer is mutable only in its
        // signature: on little-endian machines it converts into its own buffer, and on
        // big-endian IEEE ones it writes the bytes as they are (putcole.c, ffpcle).
        unsafe {
            sys::ffppre(
                self.fptr,
                1,
                1,
                data.len() as sys::LONGLONG,
                data.as_ptr() as *mut f32,
                &mut status,
            )
        };
        self.check(status, "writing the pixels")
    }

    fn close(mut self) -> Result<(), FitsError> {
        let mut status = 0;
        // SAFETY: the handle is open; it is nulled so that Drop does not close it again.
        unsafe { sys::ffclos(self.fptr, &mut status) };
        self.fptr = ptr::null_mut();
        self.check(status, "closing (flushing) the file")
    }
}

impl Drop for RawFits {
    fn drop(&mut self) {
        if !self.fptr.is_null() {
            let mut status = 0;
            // SAFETY: still open (close() nulls it); the file is being abandoned.
            unsafe { sys::ffclos(self.fptr, &mut status) };
        }
    }
}
