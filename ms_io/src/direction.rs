//! Sky directions and the FK4 (B1950) to FK5 (J2000) conversion.
//!
//! The conversion is SLALIB's `FK45Z` (Standish 1982; Aoki et al. 1983, A&A 128, 263;
//! Explanatory Supplement §3.59): remove the E-terms of aberration from the FK4 position, rotate
//! with the position columns of the 6×6 FK4→FK5 matrix, then apply the fictitious FK4 proper
//! motion from J2000 back to the epoch of the position. The source is taken to have zero proper
//! motion in FK5, right for extragalactic radio sources.
//!
//! ICRS is treated as identical to FK5 J2000: the two frames differ by at most about 20 mas,
//! far below the precision that matters for an image phase centre.

use crate::types::{Direction, Frame};

/// E-terms of aberration at B1950 (radians) and their rate (per tropical century, in the
/// units of the FK4→FK5 matrix below).
const E_TERMS: [f64; 3] = [-1.62557e-6, -0.31919e-6, -0.13843e-6];
const E_TERMS_RATE: [f64; 3] = [1.245e-3, -1.580e-3, -0.659e-3];

/// Rows of the FK4→FK5 matrix acting on a position (its first three columns): rows 0..3 give the
/// J2000 position, rows 3..6 the fictitious proper motion (arcsec per Julian century per radian).
const FK4_TO_FK5: [[f64; 3]; 6] = [
    [0.9999256782, -0.0111820611, -0.0048579477],
    [0.0111820610, 0.9999374784, -0.0000271765],
    [0.0048579479, -0.0000272474, 0.9999881997],
    [-0.000551, -0.238565, 0.435739],
    [0.238514, -0.002667, -0.008541],
    [-0.435623, 0.012254, 0.002117],
];

/// Arcseconds per radian × 100: converts years into the matrix's per-century, arcsec units.
const PMF: f64 = 100.0 * 60.0 * 60.0 * 360.0 / std::f64::consts::TAU;

/// MJD of B1950.0.
const MJD_B1950: f64 = 33_281.923_459_05;

fn mjd_to_besselian(mjd: f64) -> f64 {
    1900.0 + (mjd - 15019.81352) / 365.242198781
}

fn mjd_to_julian(mjd: f64) -> f64 {
    2000.0 + (mjd - 51544.5) / 365.25
}

impl Direction {
    /// The same direction in FK5 J2000, for a B1950 position at epoch B1950.0 (the usual meaning
    /// of a B1950 catalogue position). J2000 and ICRS are returned unchanged, relabelled J2000.
    ///
    /// casacore (and so WSClean) converts at the epoch of the observation instead; that differs
    /// by the fictitious FK4 proper motion, at most about 0.5″ per century: use
    /// [`Direction::to_j2000_at`] to reproduce casacore exactly.
    pub fn to_j2000(&self) -> Direction {
        self.to_j2000_at(MJD_B1950)
    }

    /// As [`Direction::to_j2000`], with the B1950 position taken at the epoch `mjd` (days, e.g. the
    /// observation's `TIME` / 86400), as casacore's `MDirection` conversion does.
    pub fn to_j2000_at(&self, mjd: f64) -> Direction {
        match self.frame {
            Frame::J2000 | Frame::Icrs => Direction {
                frame: Frame::J2000,
                ..*self
            },
            Frame::B1950 => {
                let (ra, dec) = fk4_to_fk5(self.ra, self.dec, mjd);
                Direction {
                    ra,
                    dec,
                    frame: Frame::J2000,
                }
            }
        }
    }

    /// Parses a casacore direction reference (`MEASINFO` `Ref`); `None` if unsupported.
    pub fn frame_from_ref(r: &str) -> Option<Frame> {
        match r.trim().to_ascii_uppercase().as_str() {
            "J2000" => Some(Frame::J2000),
            "ICRS" => Some(Frame::Icrs),
            "B1950" | "B1950_VLA" => Some(Frame::B1950),
            _ => None,
        }
    }
}

fn fk4_to_fk5(ra: f64, dec: f64, mjd: f64) -> (f64, f64) {
    let r0 = [ra.cos() * dec.cos(), ra.sin() * dec.cos(), dec.sin()];
    let years_since_b1950 = mjd_to_besselian(mjd) - 1950.0;
    // Zero proper motion in FK5 means the E-terms seen at the epoch are those of B1950 moved on
    // by their rate.
    let a: [f64; 3] =
        std::array::from_fn(|i| E_TERMS[i] + years_since_b1950 / PMF * E_TERMS_RATE[i]);
    let w: f64 = (0..3).map(|i| r0[i] * a[i]).sum();
    let v1: [f64; 3] = std::array::from_fn(|i| r0[i] - a[i] + w * r0[i]);
    let v2: [f64; 6] = std::array::from_fn(|i| (0..3).map(|j| FK4_TO_FK5[i][j] * v1[j]).sum());
    let t = (mjd_to_julian(mjd) - 2000.0) / PMF;
    let p: [f64; 3] = std::array::from_fn(|i| v2[i] + t * v2[i + 3]);
    let ra = p[1].atan2(p[0]).rem_euclid(std::f64::consts::TAU);
    let dec = p[2].atan2(p[0].hypot(p[1]));
    (ra, dec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deg(x: f64) -> f64 {
        x.to_degrees()
    }

    /// 3C 273's phase centre in vla_3c273_xband.ms (FIELD PHASE_DIR, B1950, read with
    /// python-casacore): 3.25745692 rad, 0.04064334 rad.
    const RA_B1950: f64 = 3.257_456_917_754_036_2;
    const DEC_B1950: f64 = 0.040_643_336_847_145_8;

    /// WSClean 3.1's CRVAL1/CRVAL2 for that MS (reference/3c273_natural-dirty.fits).
    const WSCLEAN_RA: f64 = -172.722069066844 + 360.0;
    const WSCLEAN_DEC: f64 = 2.05239553424764;

    #[test]
    fn b1950_epoch_b1950_matches_wsclean_to_1e4_deg() {
        let d = Direction {
            ra: RA_B1950,
            dec: DEC_B1950,
            frame: Frame::B1950,
        }
        .to_j2000();
        assert_eq!(d.frame, Frame::J2000);
        assert!((deg(d.ra) - WSCLEAN_RA).abs() < 1e-4, "{}", deg(d.ra));
        assert!((deg(d.dec) - WSCLEAN_DEC).abs() < 1e-4, "{}", deg(d.dec));
        assert!((deg(d.ra) - 187.2779).abs() < 1e-4);
        assert!((deg(d.dec) - 2.0524).abs() < 1e-4);
    }

    #[test]
    fn b1950_at_observation_epoch_matches_casacore_to_a_few_mas() {
        // Mid-observation TIME of the MS is MJD 47704.12 (1989).
        let d = Direction {
            ra: RA_B1950,
            dec: DEC_B1950,
            frame: Frame::B1950,
        }
        .to_j2000_at(47704.12);
        assert!((deg(d.ra) - WSCLEAN_RA).abs() < 2e-6, "{}", deg(d.ra));
        assert!((deg(d.dec) - WSCLEAN_DEC).abs() < 2e-6, "{}", deg(d.dec));
    }

    #[test]
    fn j2000_and_icrs_unchanged() {
        for f in [Frame::J2000, Frame::Icrs] {
            let d = Direction {
                ra: 1.0,
                dec: -0.5,
                frame: f,
            }
            .to_j2000();
            assert_eq!((d.ra, d.dec, d.frame), (1.0, -0.5, Frame::J2000));
        }
    }

    #[test]
    fn pole_and_ra_wrap_are_finite() {
        for (ra, dec) in [(0.0, std::f64::consts::FRAC_PI_2), (6.2, -1.5), (0.0, 0.0)] {
            let d = Direction {
                ra,
                dec,
                frame: Frame::B1950,
            }
            .to_j2000();
            assert!(d.ra.is_finite() && d.dec.is_finite());
            assert!((0.0..std::f64::consts::TAU).contains(&d.ra));
        }
    }
}
