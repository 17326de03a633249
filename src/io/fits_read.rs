//! Reading FITS images (any BITPIX, BSCALE/BZERO applied by cfitsio) with their headers.

use std::ffi::CStr;
use std::io::Read;
use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};

use fitsio::hdu::HduInfo;
use fitsio::FitsFile;

use super::wcs::{HeaderValue, SkyHeader, SkyWcs};
use super::FitsError;

/// One image HDU, converted to f64.
#[derive(Debug, Clone, PartialEq)]
pub struct FitsImage {
    /// The file it came from, for error messages further down the line.
    pub path: PathBuf,
    /// 0-based HDU index within the file.
    pub hdu: usize,
    /// Pixels in C (numpy) order: the last axis is FITS axis 1.
    pub data: Vec<f64>,
    /// numpy order, e.g. `[1, 1, ny, nx]` for a WSClean image.
    pub shape: Vec<usize>,
    /// Header cards in file order, string values without their quotes. HISTORY and COMMENT
    /// cards keep their text as the value; CONTINUE cards are joined to the string they extend.
    pub header: Vec<(String, String)>,
    /// Whether each card of `header` held a quoted string, so that `get_value` can tell the
    /// string '1' from the integer 1.
    quoted: Vec<bool>,
}

impl FitsImage {
    /// The first 2-D plane as (ny, nx, pixels[iy * nx + ix]).
    pub fn plane(&self) -> (usize, usize, Vec<f64>) {
        let d = self.shape.len();
        let nx = self.shape.last().copied().unwrap_or(0);
        let ny = if d >= 2 { self.shape[d - 2] } else { 1 };
        (ny, nx, self.data[..ny * nx].to_vec())
    }

    /// The value text of the first card named `key` (case-insensitive).
    /// The one 2-D plane of the image: refuses a 1-D array (a spectrum is not an image) and a
    /// cube with more than one plane (which plane was meant cannot be guessed); degenerate axes
    /// of length 1 (WSClean's FREQ and STOKES) are fine. `what` names the input in the error.
    pub fn single_plane(&self, what: &str) -> Result<(usize, usize, Vec<f64>), FitsError> {
        let shape = &self.shape;
        let bad = |problem: String| FitsError::NotAPlane {
            what: what.to_string(),
            path: self.path.clone(),
            problem,
        };
        if shape.len() < 2 {
            return Err(bad(format!(
                "a {}-D array of shape {shape:?}, not a 2-D image",
                shape.len()
            )));
        }
        let planes: usize = shape[..shape.len() - 2].iter().product();
        if planes > 1 {
            return Err(bad(format!(
                "a cube of {planes} planes (shape {shape:?}); give a single 2-D image \
                 (extract the plane you mean)"
            )));
        }
        let (ny, nx, data) = self.plane();
        if ny == 0 || nx == 0 {
            return Err(bad(format!("the image is empty ({ny}×{nx} pixels)")));
        }
        Ok((ny, nx, data))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.header[i].1.as_str())
    }

    /// A numeric keyword (integers too; FORTRAN 'D' exponents accepted).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        let i = self.position(key)?;
        if self.quoted[i] {
            return None;
        }
        parse_f64(&self.header[i].1)
    }

    pub fn get_i64(&self, key: &str) -> Option<i64> {
        let i = self.position(key)?;
        if self.quoted[i] {
            return None;
        }
        self.header[i].1.trim().parse().ok()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        let i = self.position(key)?;
        match (self.quoted[i], self.header[i].1.trim()) {
            (false, "T") => Some(true),
            (false, "F") => Some(false),
            _ => None,
        }
    }

    /// A string keyword, trailing blanks removed (FITS pads strings to 8 characters).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        let i = self.position(key)?;
        self.quoted[i].then(|| self.header[i].1.as_str())
    }

    /// A keyword with its FITS type: string, logical, integer or real.
    pub fn get_value(&self, key: &str) -> Option<HeaderValue> {
        let i = self.position(key)?;
        let text = self.header[i].1.trim();
        Some(if self.quoted[i] {
            HeaderValue::Str(self.header[i].1.clone())
        } else if let Some(b) = self.get_bool(key) {
            HeaderValue::Bool(b)
        } else if let Ok(v) = text.parse::<i64>() {
            HeaderValue::I64(v)
        } else {
            HeaderValue::F64(parse_f64(text)?)
        })
    }

    /// The sky description (phase centre, cell, frequency, beam, ...) of a radio image.
    pub fn sky_header(&self) -> Result<SkyHeader, FitsError> {
        SkyHeader::from_fits(self)
    }

    /// The celestial WCS, for pixel ↔ (RA, Dec).
    pub fn wcs(&self) -> Result<SkyWcs, FitsError> {
        SkyWcs::from_fits(self)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.header
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))
    }
}

fn parse_f64(text: &str) -> Option<f64> {
    text.trim().replace(['D', 'd'], "E").parse().ok()
}

/// Read the first HDU that holds an image: HDU 0 for radio images, the first extension for files
/// (HST products, many catalogues) whose primary HDU is empty, as `astropy.io.fits.getdata` does.
pub fn read_image(path: &Path) -> Result<FitsImage, FitsError> {
    let mut f = open(path)?;
    let count = f
        .num_hdus()
        .map_err(|e| FitsError::cfitsio(path, "counting HDUs", e))?;
    for index in 0..count {
        let hdu = f
            .hdu(index)
            .map_err(|e| FitsError::cfitsio(path, format!("moving to HDU {index}"), e))?;
        if let HduInfo::ImageInfo { shape, .. } = &hdu.info {
            if !shape.is_empty() && shape.iter().all(|&n| n > 0) {
                return read_at(&mut f, path, index);
            }
        }
    }
    Err(FitsError::NoImage {
        path: path.to_path_buf(),
        what: format!("any of its {count} HDU(s)"),
    })
}

/// Read HDU `index` (0 = primary), which must be an image with data.
pub fn read_hdu(path: &Path, index: usize) -> Result<FitsImage, FitsError> {
    let mut f = open(path)?;
    let count = f
        .num_hdus()
        .map_err(|e| FitsError::cfitsio(path, "counting HDUs", e))?;
    if index >= count {
        return Err(FitsError::NoSuchHdu {
            path: path.to_path_buf(),
            index,
            count,
        });
    }
    read_at(&mut f, path, index)
}

/// Open read-only, after checking what cfitsio would report obscurely: a missing file, a
/// directory, or bytes that are not FITS.
fn open(path: &Path) -> Result<FitsFile, FitsError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FitsError::NotFound {
            path: path.to_path_buf(),
        },
        _ => FitsError::io(path, "cannot open", e),
    })?;
    if meta.is_dir() {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    let mut head = [0u8; 9];
    let n = std::fs::File::open(path)
        .and_then(|mut file| read_up_to(&mut file, &mut head))
        .map_err(|e| FitsError::io(path, "cannot read", e))?;
    let gzip = n >= 2 && head[..2] == [0x1f, 0x8b];
    if !gzip && &head[..n] != b"SIMPLE  =" {
        let reason = if n == 0 {
            "the file is empty".to_string()
        } else {
            "it does not start with the FITS card 'SIMPLE  ='".to_string()
        };
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason,
        });
    }
    // cfitsio reads '[', '(' and a leading '!' as its extended file-name syntax.
    let name = path
        .to_str()
        .ok_or_else(|| FitsError::bad(path, "the path is not valid UTF-8"))?;
    if name.contains(['[', '(']) || name.starts_with('!') {
        return Err(FitsError::bad(
            path,
            "cfitsio cannot open a path containing '[' or '(' or starting with '!'; rename it",
        ));
    }
    FitsFile::open(path).map_err(|e| FitsError::cfitsio(path, "cannot open as FITS", e))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_at(f: &mut FitsFile, path: &Path, index: usize) -> Result<FitsImage, FitsError> {
    let hdu = f
        .hdu(index)
        .map_err(|e| FitsError::cfitsio(path, format!("moving to HDU {index}"), e))?;
    let shape = match &hdu.info {
        HduInfo::ImageInfo { shape, .. } if !shape.is_empty() && shape.iter().all(|&n| n > 0) => {
            shape.clone()
        }
        HduInfo::ImageInfo { .. } => {
            return Err(FitsError::NoImage {
                path: path.to_path_buf(),
                what: format!("HDU {index} (it has no data: NAXIS = 0)"),
            })
        }
        _ => {
            return Err(FitsError::NoImage {
                path: path.to_path_buf(),
                what: format!("HDU {index} (it is a table)"),
            })
        }
    };
    // `hdu()` made this HDU current, which is what the raw header reads below rely on.
    let (header, quoted) = read_cards(f, path, index)?;
    let data: Vec<f64> = hdu
        .read_image(f)
        .map_err(|e| FitsError::cfitsio(path, format!("reading the pixels of HDU {index}"), e))?;
    Ok(FitsImage {
        path: path.to_path_buf(),
        hdu: index,
        data,
        shape,
        header,
        quoted,
    })
}

type Cards = (Vec<(String, String)>, Vec<bool>);

/// fitsio reads keywords only by name; a full listing needs cfitsio's record calls.
fn read_cards(f: &mut FitsFile, path: &Path, index: usize) -> Result<Cards, FitsError> {
    let context = || format!("reading the header of HDU {index}");
    let mut status: c_int = 0;
    let mut nkeys: c_int = 0;
    let mut more: c_int = 0;
    // SAFETY: the pointer is the open file's; cfitsio only reads through it here.
    unsafe {
        fitsio::sys::ffghsp(f.as_raw(), &mut nkeys, &mut more, &mut status);
    }
    if status != 0 {
        return Err(FitsError::status(path, context(), status));
    }
    let mut header: Vec<(String, String)> = Vec::with_capacity(nkeys as usize);
    let mut quoted = Vec::with_capacity(nkeys as usize);
    for i in 1..=nkeys {
        // FLEN_CARD (81) bounds every field cfitsio writes into these buffers.
        let mut name = [0 as c_char; 81];
        let mut value = [0 as c_char; 81];
        let mut comment = [0 as c_char; 81];
        // SAFETY: buffers are 81 bytes, the largest cfitsio fills; it NUL-terminates them.
        unsafe {
            fitsio::sys::ffgkyn(
                f.as_raw(),
                i,
                name.as_mut_ptr(),
                value.as_mut_ptr(),
                comment.as_mut_ptr(),
                &mut status,
            );
        }
        if status != 0 {
            return Err(FitsError::status(path, context(), status));
        }
        let text = |buf: &[c_char; 81]| {
            // SAFETY: NUL-terminated within the buffer (see above).
            unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        let (key, raw, comm) = (text(&name), text(&value), text(&comment));
        if key.is_empty() && raw.is_empty() && comm.trim().is_empty() {
            continue; // blank filler cards
        }
        let raw = raw.trim();
        if key == "CONTINUE" {
            // No '= ' in column 9, so cfitsio hands the quoted text over as the comment.
            if let (Some((_, last)), Some(true), Some(more)) = (
                header.last_mut(),
                quoted.last(),
                leading_quoted(comm.trim_start()),
            ) {
                if let Some(stem) = last.strip_suffix('&') {
                    *last = format!("{stem}{more}");
                    continue;
                }
            }
        }
        if raw.is_empty() && matches!(key.as_str(), "HISTORY" | "COMMENT" | "") {
            header.push((key, comm.trim_end().to_string()));
            quoted.push(true);
        } else if let Some(text) = leading_quoted(raw) {
            header.push((key, text));
            quoted.push(true);
        } else {
            header.push((key, raw.to_string()));
            quoted.push(false);
        }
    }
    Ok((header, quoted))
}

/// `'O''Hara  ' / comment` → `O'Hara`: FITS doubles quotes inside strings and pads them with
/// blanks. None when `s` does not start with a quote.
fn leading_quoted(s: &str) -> Option<String> {
    let mut chars = s.strip_prefix('\'')?.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
            } else {
                break;
            }
        }
        out.push(c);
    }
    Some(out.trim_end().to_string())
}
