//! The sky header we write (WSClean's set of keywords) and the SIN-projection WCS it describes.

use super::fits_read::FitsImage;
use super::FitsError;

/// What a radio image's FITS header says about the sky, in WSClean's terms.
///
/// `extra` carries any further keywords (weighting, ε, seeds, ...). A key of `HISTORY` or
/// `COMMENT` with a [`HeaderValue::Str`] becomes a commentary card, the way WSClean records its
/// command line.
#[derive(Debug, Clone, PartialEq)]
pub struct SkyHeader {
    /// Phase centre, J2000 (CRVAL1, CRVAL2), degrees.
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// Positive pixel sizes in degrees; written as CDELT1 = -cell_x (RA grows to the left) and
    /// CDELT2 = +cell_y.
    pub cell_x_deg: f64,
    pub cell_y_deg: f64,
    /// FREQ axis: CRVAL3 and CDELT3.
    pub freq_hz: f64,
    pub bandwidth_hz: f64,
    /// "JY/BEAM", "JY/PIXEL", ...
    pub bunit: String,
    pub beam: Option<Beam>,
    /// ISO 8601, e.g. "1989-06-27T01:03:19.9".
    pub date_obs: Option<String>,
    pub telescope: Option<String>,
    pub object: Option<String>,
    pub observer: Option<String>,
    pub extra: Vec<(String, HeaderValue)>,
}

/// Restoring beam (BMAJ, BMIN, BPA), degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beam {
    pub major_deg: f64,
    pub minor_deg: f64,
    pub pa_deg: f64,
}

/// A typed FITS keyword value.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Str(String),
    F64(f64),
    I64(i64),
    Bool(bool),
}

impl Default for SkyHeader {
    /// A header with no position: fill in at least the phase centre, cell size and frequency.
    fn default() -> Self {
        SkyHeader {
            ra_deg: 0.0,
            dec_deg: 0.0,
            cell_x_deg: 0.0,
            cell_y_deg: 0.0,
            freq_hz: 0.0,
            bandwidth_hz: 0.0,
            bunit: "JY/BEAM".to_string(),
            beam: None,
            date_obs: None,
            telescope: None,
            object: None,
            observer: None,
            extra: Vec::new(),
        }
    }
}

/// Keywords that `write_image`/`write_cube` produce themselves; `extra` may not repeat them and
/// `SkyHeader::from_fits` does not copy them back into `extra`.
pub(crate) const MANAGED_KEYS: &[&str] = &[
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4", "EXTEND", "BSCALE",
    "BZERO", "BUNIT", "BMAJ", "BMIN", "BPA", "EQUINOX", "BTYPE", "TELESCOP", "OBSERVER", "OBJECT",
    "ORIGIN", "CTYPE1", "CRPIX1", "CRVAL1", "CDELT1", "CUNIT1", "CTYPE2", "CRPIX2", "CRVAL2",
    "CDELT2", "CUNIT2", "CTYPE3", "CRPIX3", "CRVAL3", "CDELT3", "CUNIT3", "CTYPE4", "CRPIX4",
    "CRVAL4", "CDELT4", "CUNIT4", "SPECSYS", "DATE-OBS", "MJD-OBS", "RADESYS", "DATE", "OBSFREQ",
    "OBSBW", "IIVERSIO", "END", "XTENSION", "PCOUNT", "GCOUNT", "LONGSTRN",
];

/// The Modified Julian Date of an ISO 8601 date-time (`YYYY-MM-DD[THH:MM:SS.s]`, UTC), as
/// FITS's MJD-OBS gives DATE-OBS: with it astropy and CASA need not derive it (astropy's WCS
/// warns when it has to). `None` for anything else.
pub fn iso_to_mjd(iso: &str) -> Option<f64> {
    let (date, time) = iso.split_once('T').unwrap_or((iso, "00:00:00"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let h: f64 = t.next()?.parse().ok()?;
    let mi: f64 = t.next().unwrap_or("0").parse().ok()?;
    let s: f64 = t.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || !(0.0..25.0).contains(&h) {
        return None;
    }
    // Days from 1970-01-01 (the civil-to-days algorithm), and 1970-01-01 is MJD 40587.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(40587.0 + days as f64 + (h * 3600.0 + mi * 60.0 + s) / 86400.0)
}

impl SkyHeader {
    /// Rebuild the sky header of an image written by us, WSClean or CASA (RA/DEC axes found by
    /// CTYPE, so axis order does not matter). RA comes back in [0, 360): WSClean writes
    /// CRVAL1 in (-180, 180].
    pub fn from_fits(image: &FitsImage) -> Result<SkyHeader, FitsError> {
        let naxis = image.shape.len();
        let axis_of = |prefix: &str| {
            (1..=naxis).find(|i| {
                image
                    .get_str(&format!("CTYPE{i}"))
                    .is_some_and(|c| c.trim().to_ascii_uppercase().starts_with(prefix))
            })
        };
        let need = |key: String| {
            image
                .get_f64(&key)
                .ok_or_else(|| FitsError::bad(&image.path, format!("keyword {key} is missing")))
        };
        let ra_axis = axis_of("RA")
            .ok_or_else(|| FitsError::bad(&image.path, "no RA axis (CTYPEn = 'RA---...')"))?;
        let dec_axis = axis_of("DEC")
            .ok_or_else(|| FitsError::bad(&image.path, "no DEC axis (CTYPEn = 'DEC--...')"))?;
        let (freq_hz, bandwidth_hz) = match axis_of("FREQ") {
            Some(i) => (
                need(format!("CRVAL{i}"))?,
                image.get_f64(&format!("CDELT{i}")).unwrap_or(0.0),
            ),
            None => (
                image.get_f64("OBSFREQ").unwrap_or(0.0),
                image.get_f64("OBSBW").unwrap_or(0.0),
            ),
        };
        let beam = match (image.get_f64("BMAJ"), image.get_f64("BMIN")) {
            // WSClean writes BMAJ = BMIN = 0 on dirty images: that means "no beam".
            (Some(major_deg), Some(minor_deg)) if major_deg > 0.0 => Some(Beam {
                major_deg,
                minor_deg,
                pa_deg: image.get_f64("BPA").unwrap_or(0.0),
            }),
            _ => None,
        };
        let opt_str = |key: &str| image.get_str(key).map(str::to_string);
        let mut extra = Vec::new();
        for (k, raw) in image.header.iter() {
            if MANAGED_KEYS.contains(&k.as_str()) || (k == "COMMENT" && is_fits_boilerplate(raw)) {
                continue;
            }
            let value = if k == "HISTORY" || k == "COMMENT" {
                HeaderValue::Str(raw.clone())
            } else {
                image.get_value(k).unwrap_or(HeaderValue::Str(raw.clone()))
            };
            extra.push((k.clone(), value));
        }
        Ok(SkyHeader {
            ra_deg: need(format!("CRVAL{ra_axis}"))?.rem_euclid(360.0),
            dec_deg: need(format!("CRVAL{dec_axis}"))?,
            cell_x_deg: need(format!("CDELT{ra_axis}"))?.abs(),
            cell_y_deg: need(format!("CDELT{dec_axis}"))?.abs(),
            freq_hz,
            bandwidth_hz,
            bunit: opt_str("BUNIT").unwrap_or_default(),
            beam,
            date_obs: opt_str("DATE-OBS"),
            telescope: opt_str("TELESCOP"),
            object: opt_str("OBJECT"),
            observer: opt_str("OBSERVER"),
            extra,
        })
    }
}

/// cfitsio (and so WSClean) opens every primary header with two COMMENT cards citing the FITS
/// paper; they are not the user's.
fn is_fits_boilerplate(comment: &str) -> bool {
    comment.contains("Flexible Image Transport System") || comment.contains("2001A&A...376..359H")
}

/// Celestial WCS of an image: SIN (orthographic) projection about the phase centre, as WSClean
/// and CASA write it. Pixels here are 0-based, `ix` along FITS axis 1, `iy` along axis 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkyWcs {
    pub ra0_deg: f64,
    pub dec0_deg: f64,
    /// 1-based reference pixel, as in the header.
    pub crpix1: f64,
    pub crpix2: f64,
    /// Signed increments, degrees (CDELT1 < 0 for RA growing to the left).
    pub cdelt1: f64,
    pub cdelt2: f64,
}

impl SkyWcs {
    /// The WCS `write_image` puts in the header for an ny × nx image: the phase centre sits on
    /// 0-based pixel (nx/2, ny/2), where an FFT-based imager puts zero spatial offset.
    pub fn new(header: &SkyHeader, ny: usize, nx: usize) -> SkyWcs {
        SkyWcs {
            ra0_deg: header.ra_deg,
            dec0_deg: header.dec_deg,
            crpix1: (nx / 2 + 1) as f64,
            crpix2: (ny / 2 + 1) as f64,
            cdelt1: -header.cell_x_deg,
            cdelt2: header.cell_y_deg,
        }
    }

    /// The celestial WCS of a file read back (RA and DEC assumed on axes 1 and 2, no PC/CD
    /// rotation, as every radio imager writes).
    pub fn from_fits(image: &FitsImage) -> Result<SkyWcs, FitsError> {
        let need = |key: &str| {
            image
                .get_f64(key)
                .ok_or_else(|| FitsError::bad(&image.path, format!("keyword {key} is missing")))
        };
        for (i, prefix) in [(1, "RA---"), (2, "DEC--")] {
            let ctype = image.get_str(&format!("CTYPE{i}")).unwrap_or("");
            if !ctype.starts_with(prefix) {
                return Err(FitsError::bad(
                    &image.path,
                    format!("CTYPE{i} = '{ctype}', expected '{prefix}...'"),
                ));
            }
        }
        Ok(SkyWcs {
            ra0_deg: need("CRVAL1")?.rem_euclid(360.0),
            dec0_deg: need("CRVAL2")?,
            crpix1: need("CRPIX1")?,
            crpix2: need("CRPIX2")?,
            cdelt1: need("CDELT1")?,
            cdelt2: need("CDELT2")?,
        })
    }

    /// Direction cosines (l, m) of a 0-based pixel: l grows towards east (left on the image).
    pub fn pixel_to_lm(&self, ix: f64, iy: f64) -> (f64, f64) {
        let l = ((ix + 1.0 - self.crpix1) * self.cdelt1).to_radians();
        let m = ((iy + 1.0 - self.crpix2) * self.cdelt2).to_radians();
        (l, m)
    }

    /// (RA, Dec) in degrees of a 0-based pixel; RA in [0, 360). None outside the projection's
    /// hemisphere (l² + m² > 1).
    pub fn pixel_to_world(&self, ix: f64, iy: f64) -> Option<(f64, f64)> {
        let (l, m) = self.pixel_to_lm(ix, iy);
        let r2 = l * l + m * m;
        if r2 > 1.0 {
            return None;
        }
        let n = (1.0 - r2).sqrt();
        let (sd0, cd0) = self.dec0_deg.to_radians().sin_cos();
        let dec = (m * cd0 + n * sd0).clamp(-1.0, 1.0).asin();
        let dra = l.atan2(n * cd0 - m * sd0);
        Some((
            (self.ra0_deg + dra.to_degrees()).rem_euclid(360.0),
            dec.to_degrees(),
        ))
    }

    /// 0-based (ix, iy) of a sky direction; None on the far side of the sky.
    pub fn world_to_pixel(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let (sd, cd) = dec_deg.to_radians().sin_cos();
        let (sd0, cd0) = self.dec0_deg.to_radians().sin_cos();
        let (sda, cda) = (ra_deg - self.ra0_deg).to_radians().sin_cos();
        let n = sd * sd0 + cd * cd0 * cda;
        if n < 0.0 {
            return None;
        }
        let l = cd * sda;
        let m = sd * cd0 - cd * sd0 * cda;
        Some((
            l.to_degrees() / self.cdelt1 + self.crpix1 - 1.0,
            m.to_degrees() / self.cdelt2 + self.crpix2 - 1.0,
        ))
    }
}
