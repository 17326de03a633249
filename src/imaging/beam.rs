//! Restoring beam: a 2-D Gaussian fitted to the PSF's main lobe, as WSClean fits it, and the
//! Gaussian itself for restoring CLEAN components.
//!
//! WSClean (schaapcommon's `GaussianFitter`) fits a unit-peak Gaussian centred on the PSF's
//! central pixel to every pixel of a centred box, sidelobes included, by unweighted least
//! squares. The box is `10 ×` the theoretical beam (`1/max uv`) on a side, at least 10 pixels,
//! even, and is enlarged (up to five fits) while the fitted major axis is too wide for it.
//! We minimise the same cost over the same box with our own Levenberg–Marquardt, so the
//! fitted beam is WSClean's to within the solvers' tolerance.
//!
//! One detail of WSClean 3.1 matters: its fitting loop computes `x = (xi − x_mid) · scale`
//! with an unsigned `xi`, so every pixel left of or below the centre gets a huge coordinate
//! and a model value of 0, whatever the parameters: only the quadrant `ix ≥ nx/2, iy ≥ ny/2`
//! (west and north of the peak) shapes the fit. [`BeamFitRegion::WscleanQuadrant`] does the
//! same and reproduces WSClean's BMAJ/BMIN/BPA of the 3C 273 reference to 1e-6;
//! [`BeamFitRegion::FullBox`] fits the whole box, which is what the algorithm means to do.
//!
//! Angles: pixel `[iy][ix]` with `iy` to the north and `ix` to the west (RA grows to the left),
//! so the position angle, measured from north through east, points along `(−sin θ, cos θ)` in
//! `(ix, iy)`.

use crate::io::Beam;

/// FWHM of a Gaussian over its σ.
pub const FWHM_PER_SIGMA: f64 = 2.354_820_045_030_949_3; // 2 √(2 ln 2)

/// An elliptical Gaussian in pixels: full widths at half maximum and the position angle
/// (radians, north through east, in [0, π)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBeam {
    pub major: f64,
    pub minor: f64,
    pub pa: f64,
}

impl PixelBeam {
    /// The FITS beam (degrees) for square pixels of `scale` radians.
    pub fn to_beam(&self, scale: f64) -> Beam {
        Beam {
            major_deg: (self.major * scale).to_degrees(),
            minor_deg: (self.minor * scale).to_degrees(),
            pa_deg: self.pa.to_degrees(),
        }
    }

    /// The pixel beam of a FITS beam (degrees) on square pixels of `scale` radians.
    pub fn from_beam(beam: &Beam, scale: f64) -> Self {
        Self {
            major: beam.major_deg.to_radians() / scale,
            minor: beam.minor_deg.to_radians() / scale,
            pa: beam.pa_deg.to_radians(),
        }
    }

    /// Value (peak 1) at an offset of `dx` pixels along `ix` and `dy` along `iy`.
    pub fn value(&self, dx: f64, dy: f64) -> f64 {
        let (s, c) = self.pa.sin_cos();
        let along_major = -dx * s + dy * c;
        let along_minor = dx * c + dy * s;
        let smaj = self.major / FWHM_PER_SIGMA;
        let smin = self.minor / FWHM_PER_SIGMA;
        (-0.5 * ((along_major / smaj).powi(2) + (along_minor / smin).powi(2))).exp()
    }
}

/// Which pixels of the fitting box the beam is fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BeamFitRegion {
    /// As WSClean 3.1 does in effect: the box's quadrant west and north of the peak.
    #[default]
    WscleanQuadrant,
    /// The whole box.
    FullBox,
}

/// [`fit_beam_with`] as WSClean fits it.
pub fn fit_beam(psf: &[f32], nx: usize, ny: usize, estimate: f64) -> Option<PixelBeam> {
    fit_beam_with(psf, nx, ny, estimate, BeamFitRegion::WscleanQuadrant)
}

/// Fits the restoring beam to a peak-normalised PSF (`ny × nx`, row-major, peak at
/// `(ny/2, nx/2)`). `estimate` is the theoretical beam in pixels (the fit's starting width and
/// box scale). `None` when the fit does not give a finite, positive beam.
pub fn fit_beam_with(
    psf: &[f32],
    nx: usize,
    ny: usize,
    estimate: f64,
    region: BeamFitRegion,
) -> Option<PixelBeam> {
    const BOX_SCALE: f64 = 10.0;
    let even_box = |width: f64| {
        let n = (BOX_SCALE.ceil() as usize).max((width * BOX_SCALE).ceil() as usize);
        n + n % 2
    };
    let mut estimate = estimate.max(1.0);
    let mut preferred = even_box(estimate);
    if preferred >= nx && preferred >= ny {
        return fit_in_box(psf, nx, ny, nx, ny, estimate, region);
    }
    let mut beam = None;
    for _ in 0..5 {
        let (bw, bh) = (preferred.min(nx), preferred.min(ny));
        let b = fit_in_box(psf, nx, ny, bw, bh, estimate, region)?;
        beam = Some(b);
        let fits =
            |side: usize, full: usize| b.major * BOX_SCALE * 0.8 < side as f64 || side >= full;
        if fits(bw, nx) && fits(bh, ny) {
            break;
        }
        preferred = even_box(b.major);
        estimate = estimate.max(b.major);
    }
    beam
}

/// Least-squares fit of `exp(−x²/2sx² + β x y/(sx sy) − y²/2sy²)` (coordinates in units of the
/// mean box side, centred on the box's middle pixel) to the central `bw × bh` pixels.
fn fit_in_box(
    psf: &[f32],
    nx: usize,
    ny: usize,
    bw: usize,
    bh: usize,
    estimate: f64,
    region: BeamFitRegion,
) -> Option<PixelBeam> {
    let (x0, y0) = ((nx - bw) / 2, (ny - bh) / 2);
    let scale = ((bw + bh) / 2) as f64;
    let mut pts = Vec::with_capacity(bw * bh);
    let quadrant = region == BeamFitRegion::WscleanQuadrant;
    for yi in 0..bh {
        let y = (yi as f64 - (bh / 2) as f64) / scale;
        for xi in 0..bw {
            // WSClean's model is 0 outside the quadrant: those pixels add a constant to the
            // cost and nothing to the fit.
            if quadrant && (xi < bw / 2 || yi < bh / 2) {
                continue;
            }
            let x = (xi as f64 - (bw / 2) as f64) / scale;
            pts.push((x, y, psf[(y0 + yi) * nx + x0 + xi] as f64));
        }
    }
    let s0 = estimate / (scale * FWHM_PER_SIGMA);
    let [sx, sy, beta] = levenberg_marquardt(&pts, [s0, s0, 0.0])?;
    let (major, minor, pa) = to_fwhm_and_pa(sx, sy, beta)?;
    Some(PixelBeam {
        major: major * scale,
        minor: minor * scale,
        pa,
    })
}

fn model(p: &[f64; 3], x: f64, y: f64) -> (f64, [f64; 3]) {
    let [sx, sy, beta] = *p;
    let e = (-x * x / (2.0 * sx * sx) + beta * x * y / (sx * sy) - y * y / (2.0 * sy * sy)).exp();
    let dsx = (x * x / (sx * sx * sx) - beta * x * y / (sx * sx * sy)) * e;
    let dsy = (y * y / (sy * sy * sy) - beta * x * y / (sx * sy * sy)) * e;
    let dbeta = x * y / (sx * sy) * e;
    (e, [dsx, dsy, dbeta])
}

fn cost(pts: &[(f64, f64, f64)], p: &[f64; 3]) -> f64 {
    pts.iter()
        .map(|&(x, y, d)| (model(p, x, y).0 - d).powi(2))
        .sum()
}

/// Plain Levenberg–Marquardt with Marquardt's diagonal scaling; stops when a step changes every
/// parameter by less than 1e-7 absolute + 1e-7 relative (GSL's `test_delta` as WSClean uses it).
fn levenberg_marquardt(pts: &[(f64, f64, f64)], mut p: [f64; 3]) -> Option<[f64; 3]> {
    let mut lambda = 1e-3;
    let mut c = cost(pts, &p);
    for _ in 0..500 {
        let mut jtj = [[0.0f64; 3]; 3];
        let mut jtr = [0.0f64; 3];
        for &(x, y, d) in pts {
            let (m, g) = model(&p, x, y);
            let r = m - d;
            for i in 0..3 {
                jtr[i] += g[i] * r;
                for j in 0..3 {
                    jtj[i][j] += g[i] * g[j];
                }
            }
        }
        let mut stepped = false;
        for _ in 0..60 {
            let mut a = jtj;
            for (i, row) in a.iter_mut().enumerate() {
                row[i] += lambda * jtj[i][i].max(1e-300);
            }
            let delta = solve3(a, [-jtr[0], -jtr[1], -jtr[2]])?;
            let q = [p[0] + delta[0], p[1] + delta[1], p[2] + delta[2]];
            let valid = q[0] > 0.0 && q[1] > 0.0 && q[2].abs() < 1.0;
            let cq = if valid { cost(pts, &q) } else { f64::INFINITY };
            if cq <= c {
                let small = (0..3).all(|i| delta[i].abs() < 1e-7 + 1e-7 * q[i].abs());
                p = q;
                c = cq;
                lambda = (lambda * 0.3).max(1e-12);
                stepped = true;
                if small {
                    return Some(p);
                }
                break;
            }
            lambda *= 10.0;
        }
        if !stepped {
            // No downhill step at any damping: p is a minimum to working precision.
            return Some(p);
        }
    }
    Some(p)
}

fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    if !(d.is_finite() && d != 0.0) {
        return None;
    }
    let mut x = [0.0; 3];
    for (k, xk) in x.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *xk = det(&m) / d;
    }
    Some(x)
}

/// FWHMs and position angle of the fitted Gaussian from its covariance
/// `[[sx², β sx sy], [β sx sy, sy²]] / (1 − β²)` (x along `ix`, y along `iy`).
fn to_fwhm_and_pa(sx: f64, sy: f64, beta: f64) -> Option<(f64, f64, f64)> {
    let f = 1.0 - beta * beta;
    let (cxx, cxy, cyy) = (sx * sx / f, beta * sx * sy / f, sy * sy / f);
    let mean = 0.5 * (cxx + cyy);
    let diff = (0.25 * (cxx - cyy).powi(2) + cxy * cxy).sqrt();
    let (e1, e2) = (mean + diff, mean - diff);
    if !(e1.is_finite() && e2 > 0.0) {
        return None;
    }
    // Major-axis direction in (ix, iy); north is +iy and east is −ix.
    let theta = 0.5 * (2.0 * cxy).atan2(cxx - cyy);
    let (vx, vy) = (theta.cos(), theta.sin());
    let mut pa = (-vx).atan2(vy);
    // The same ellipse for pa and pa ± π: keep it in [0, π) (WSClean's header for 3C 273
    // says 142.6°, not −37.4°).
    pa = pa.rem_euclid(std::f64::consts::PI);
    Some((e1.sqrt() * FWHM_PER_SIGMA, e2.sqrt() * FWHM_PER_SIGMA, pa))
}

/// Adds `model ⊛ beam` (beam of peak 1) into `out`: each non-zero model pixel (Jy/pixel)
/// becomes a Gaussian of that peak (Jy/beam). Direct sum over the components, truncated where
/// the Gaussian falls below 1e-8 of its peak.
pub fn add_restored(model: &[f32], nx: usize, ny: usize, beam: &PixelBeam, out: &mut [f32]) {
    // exp(−r²/2σ²) < 1e-8 beyond r = 6.07 σ; no offset inside the image exceeds its size, so
    // a beam wider than the image (a pixel scale far below the resolution) needs no more.
    let reach = (6.1 * beam.major / FWHM_PER_SIGMA)
        .ceil()
        .max(1.0)
        .min(nx.max(ny) as f64) as isize;
    let side = (2 * reach + 1) as usize;
    let kernel: Vec<f32> = (0..side * side)
        .map(|k| {
            let dy = (k / side) as f64 - reach as f64;
            let dx = (k % side) as f64 - reach as f64;
            beam.value(dx, dy) as f32
        })
        .collect();
    for (i, &m) in model.iter().enumerate() {
        if m == 0.0 {
            continue;
        }
        let (cy, cx) = ((i / nx) as isize, (i % nx) as isize);
        let y_lo = (cy - reach).max(0);
        let y_hi = (cy + reach).min(ny as isize - 1);
        let x_lo = (cx - reach).max(0);
        let x_hi = (cx + reach).min(nx as isize - 1);
        for y in y_lo..=y_hi {
            let krow = ((y - cy + reach) as usize) * side;
            let orow = y as usize * nx;
            for x in x_lo..=x_hi {
                out[orow + x as usize] += m * kernel[krow + (x - cx + reach) as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Gaussian written out independently of `PixelBeam::value`: σ along the unit vector
    /// `u` (in (ix, iy)) and σ across it.
    fn gaussian(nx: usize, ny: usize, s_along: f64, s_across: f64, u: (f64, f64)) -> Vec<f32> {
        let mut img = vec![0.0f32; nx * ny];
        for iy in 0..ny {
            for ix in 0..nx {
                let dx = ix as f64 - (nx / 2) as f64;
                let dy = iy as f64 - (ny / 2) as f64;
                let a = dx * u.0 + dy * u.1;
                let b = -dx * u.1 + dy * u.0;
                img[iy * nx + ix] = (-0.5
                    * (a * a / (s_along * s_along) + b * b / (s_across * s_across)))
                    .exp() as f32;
            }
        }
        img
    }

    fn pa_diff_deg(a: f64, b: f64) -> f64 {
        let d = (a - b).to_degrees().rem_euclid(180.0);
        d.min(180.0 - d)
    }

    #[test]
    fn fit_recovers_known_gaussians() {
        let (nx, ny) = (128, 96);
        let s2f = FWHM_PER_SIGMA;
        // Elongated north–south: PA 0.
        let img = gaussian(nx, ny, 4.0, 2.0, (0.0, 1.0));
        let b = fit_beam(&img, nx, ny, 4.0).unwrap();
        assert!((b.major / (4.0 * s2f) - 1.0).abs() < 1e-4, "{b:?}");
        assert!((b.minor / (2.0 * s2f) - 1.0).abs() < 1e-4, "{b:?}");
        assert!(pa_diff_deg(b.pa, 0.0) < 0.01, "{b:?}");
        // Major axis towards north-east: up (+iy) and to the left (−ix, east): PA +45°.
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let img = gaussian(nx, ny, 5.0, 3.0, (-r, r));
        let b = fit_beam(&img, nx, ny, 3.0).unwrap();
        assert!((b.major / (5.0 * s2f) - 1.0).abs() < 1e-4, "{b:?}");
        assert!((b.minor / (3.0 * s2f) - 1.0).abs() < 1e-4, "{b:?}");
        assert!(pa_diff_deg(b.pa, 45f64.to_radians()) < 0.01, "{b:?}");
        // East–west: PA ±90°; and an arbitrary angle through PixelBeam's own Gaussian.
        let img = gaussian(nx, ny, 3.5, 2.5, (1.0, 0.0));
        let b = fit_beam(&img, nx, ny, 3.0).unwrap();
        assert!(pa_diff_deg(b.pa, 90f64.to_radians()) < 0.01, "{b:?}");
        let truth = PixelBeam {
            major: 9.0,
            minor: 5.5,
            pa: (-31.0f64).to_radians(),
        };
        let img: Vec<f32> = (0..nx * ny)
            .map(|k| {
                let dx = (k % nx) as f64 - (nx / 2) as f64;
                let dy = (k / nx) as f64 - (ny / 2) as f64;
                truth.value(dx, dy) as f32
            })
            .collect();
        let b = fit_beam(&img, nx, ny, 2.0).unwrap();
        assert!((b.major / truth.major - 1.0).abs() < 1e-4, "{b:?}");
        assert!((b.minor / truth.minor - 1.0).abs() < 1e-4, "{b:?}");
        assert!(pa_diff_deg(b.pa, truth.pa) < 0.01, "{b:?}");
        let full = fit_beam_with(&img, nx, ny, 2.0, BeamFitRegion::FullBox).unwrap();
        assert!((full.major / truth.major - 1.0).abs() < 1e-4, "{full:?}");
        assert!((full.minor / truth.minor - 1.0).abs() < 1e-4, "{full:?}");
        assert!(pa_diff_deg(full.pa, truth.pa) < 0.01, "{full:?}");
    }

    #[test]
    fn beam_in_degrees_round_trips() {
        let asec = (1.0f64 / 3600.0).to_radians();
        let b = PixelBeam {
            major: 6.4,
            minor: 6.1,
            pa: 0.5,
        };
        let fits = b.to_beam(0.5 * asec);
        assert!((fits.major_deg * 3600.0 - 3.2).abs() < 1e-12);
        let back = PixelBeam::from_beam(&fits, 0.5 * asec);
        assert!((back.major - 6.4).abs() < 1e-12 && (back.pa - 0.5).abs() < 1e-12);
    }

    #[test]
    fn restoring_a_point_gives_the_beam_and_its_flux() {
        let (nx, ny) = (64, 64);
        let beam = PixelBeam {
            major: 6.0,
            minor: 4.0,
            pa: 0.3,
        };
        let mut model = vec![0.0f32; nx * ny];
        model[32 * nx + 30] = 2.0;
        let mut out = vec![0.0f32; nx * ny];
        add_restored(&model, nx, ny, &beam, &mut out);
        assert!((out[32 * nx + 30] - 2.0).abs() < 1e-6);
        // Flux: the sum of a unit-peak Gaussian is 2π σmaj σmin pixels.
        let sum: f64 = out.iter().map(|&v| v as f64).sum();
        let area = 2.0 * std::f64::consts::PI * (6.0 / FWHM_PER_SIGMA) * (4.0 / FWHM_PER_SIGMA);
        assert!(
            (sum / (2.0 * area) - 1.0).abs() < 1e-5,
            "{sum} vs {}",
            2.0 * area
        );
    }
}
