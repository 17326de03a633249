//! Strong lensing as a linear operator on a pixelated source: `d = M P L s`, with `L` the
//! ray-traced bilinear interpolation of the source grid (SIE + external shear, supersampled),
//! `P` an optional PSF convolution and `M` the selection of observed pixels (a mask).
//!
//! The operator's image is the SOURCE grid (`image_shape` = source shape); its data are the
//! observed image-plane pixels, row-major. The deflections are computed once, at construction,
//! into the sparse matrix `L` (and its transpose, for a conflict-free parallel adjoint).

pub mod autolens;
pub mod data;
pub mod fit;
pub mod profiles;
mod psf;
pub mod sie;
mod trace;

use rayon::prelude::*;

pub use psf::Psf;
pub use sie::{axis_ratio_and_angle, ExternalShear, MassModel, Sie};
pub use trace::{Csr, ImageGrid, SourceGrid};

use super::{ForwardOperator, OperatorError};

/// How the lens operator is built besides its mass model and grids.
#[derive(Clone, Debug, Default)]
pub struct LensOptions {
    /// Rays per image pixel side (`s²` rays per pixel); 0 or 1 means one ray at the centre.
    pub supersample: usize,
    pub psf: Option<Psf>,
    /// Image pixels that are data (`ny·nx`, row-major); `None`: all.
    pub mask: Option<Vec<bool>>,
}

pub struct Lens {
    image: ImageGrid,
    source: SourceGrid,
    fwd: Csr,
    adj: Csr,
    psf: Option<Psf>,
    /// Image pixel of each datum.
    observed: Vec<u32>,
    diag: Vec<f32>,
}

impl Lens {
    pub fn new(
        mass: &MassModel,
        image: ImageGrid,
        source: SourceGrid,
        opts: LensOptions,
    ) -> Result<Self, OperatorError> {
        mass.validate().map_err(OperatorError::Invalid)?;
        if image.is_empty() || source.is_empty() {
            return Err(OperatorError::Invalid(
                "lens image and source grids must be non-empty".into(),
            ));
        }
        for (what, s) in [
            ("image pixel scale", image.pixel_scale),
            ("source pixel scale", source.scale),
        ] {
            if !(s.is_finite() && s > 0.0) {
                return Err(OperatorError::Invalid(format!(
                    "{what} must be positive, got {s} arcsec"
                )));
            }
        }
        let observed: Vec<u32> = match &opts.mask {
            None => (0..image.len() as u32).collect(),
            Some(m) => {
                if m.len() != image.len() {
                    return Err(OperatorError::LengthMismatch {
                        what: "lens mask",
                        expected: image.len(),
                        got: m.len(),
                    });
                }
                (0..image.len() as u32).filter(|&p| m[p as usize]).collect()
            }
        };
        if observed.is_empty() {
            return Err(OperatorError::Invalid(
                "the lens mask selects no pixel".into(),
            ));
        }
        let fwd = trace::trace_matrix(mass, &image, &source, opts.supersample);
        let adj = fwd.transpose(source.len());
        let mut lens = Self {
            image,
            source,
            fwd,
            adj,
            psf: opts.psf,
            observed,
            diag: Vec::new(),
        };
        lens.diag = lens.exact_diag();
        Ok(lens)
    }

    pub fn image_grid(&self) -> &ImageGrid {
        &self.image
    }

    pub fn source_grid(&self) -> &SourceGrid {
        &self.source
    }

    /// Image pixel (row-major index) of each datum.
    pub fn observed(&self) -> &[u32] {
        &self.observed
    }

    /// The lensed, PSF-convolved image on the full image grid.
    pub fn render(&self, source: &[f32]) -> Vec<f32> {
        let mut lensed = vec![0f32; self.image.len()];
        self.fwd.matvec(source, &mut lensed);
        match &self.psf {
            None => lensed,
            Some(p) => {
                let mut out = vec![0f32; lensed.len()];
                p.convolve(&lensed, self.image.ny, self.image.nx, &mut out);
                out
            }
        }
    }

    /// Source pixels that some ray reaches (the rest are unconstrained by the data).
    pub fn source_coverage(&self) -> Vec<bool> {
        (0..self.source.len())
            .map(|j| self.adj.ptr[j + 1] > self.adj.ptr[j])
            .collect()
    }

    /// `diag(A Aᵀ)`: the squared norm of each datum's row `Σ_{taps} k · L_row`, accumulated
    /// exactly in a dense source-length buffer per thread.
    fn exact_diag(&self) -> Vec<f32> {
        let (ny, nx) = (self.image.ny as i64, self.image.nx as i64);
        self.observed
            .par_iter()
            .map_init(
                || (vec![0f64; self.source.len()], Vec::<u32>::new()),
                |(buf, touched), &p| {
                    let (y, x) = ((p as i64) / nx, (p as i64) % nx);
                    let mut add = |q: i64, k: f64| {
                        let (i, v) = self.fwd.row(q as usize);
                        for (&j, &w) in i.iter().zip(v) {
                            if buf[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            buf[j as usize] += k * w as f64;
                        }
                    };
                    match &self.psf {
                        None => add(p as i64, 1.0),
                        Some(psf) => {
                            let (cy, cx) = ((psf.ny / 2) as i64, (psf.nx / 2) as i64);
                            for a in 0..psf.ny as i64 {
                                for b in 0..psf.nx as i64 {
                                    let (sy, sx) = (y - (a - cy), x - (b - cx));
                                    let k = psf.kernel[(a * psf.nx as i64 + b) as usize];
                                    if sy >= 0 && sy < ny && sx >= 0 && sx < nx && k != 0.0 {
                                        add(sy * nx + sx, k as f64);
                                    }
                                }
                            }
                        }
                    }
                    let mut s = 0.0;
                    for &j in touched.iter() {
                        s += buf[j as usize] * buf[j as usize];
                        buf[j as usize] = 0.0;
                    }
                    touched.clear();
                    s as f32
                },
            )
            .collect()
    }
}

impl ForwardOperator for Lens {
    fn image_shape(&self) -> [usize; 2] {
        [self.source.ny, self.source.nx]
    }

    fn data_len(&self) -> usize {
        self.observed.len()
    }

    fn forward(&self, image: &[f32], data: &mut [f32]) {
        assert_eq!(image.len(), self.source.len(), "source length");
        assert_eq!(data.len(), self.data_len(), "data length");
        let full = self.render(image);
        data.par_iter_mut()
            .zip(self.observed.par_iter())
            .for_each(|(d, &p)| *d = full[p as usize]);
    }

    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        assert_eq!(data.len(), self.data_len(), "data length");
        assert_eq!(image.len(), self.source.len(), "source length");
        let mut full = vec![0f32; self.image.len()];
        for (&d, &p) in data.iter().zip(&self.observed) {
            full[p as usize] = d;
        }
        let back = match &self.psf {
            None => full,
            Some(psf) => {
                let mut out = vec![0f32; full.len()];
                psf.correlate(&full, self.image.ny, self.image.nx, &mut out);
                out
            }
        };
        self.adj.matvec(&back, image);
    }

    fn diag_aat(&self) -> Vec<f32> {
        self.diag.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::testing::check_operator;

    fn model() -> MassModel {
        MassModel {
            sie: Sie {
                einstein_radius: 1.2,
                axis_ratio: 0.8,
                angle_deg: 30.0,
                centre: [0.05, -0.03],
            },
            shear: ExternalShear {
                gamma_1: 0.04,
                gamma_2: -0.02,
            },
        }
    }

    fn small_lens(psf: bool, mask: bool) -> Lens {
        let image = ImageGrid {
            ny: 31,
            nx: 30,
            pixel_scale: 0.1,
        };
        let source = SourceGrid {
            ny: 12,
            nx: 14,
            scale: 0.08,
            centre: [0.02, 0.01],
        };
        let psf = psf.then(|| {
            let k: Vec<f32> = (0..15)
                .map(|i| {
                    let (a, b) = ((i / 5) as f32 - 2.0, (i % 5) as f32 - 1.0);
                    (-(a * a + 0.7 * b * b) / 2.0).exp()
                })
                .collect();
            Psf::new(3, 5, k).unwrap()
        });
        let mask = mask.then(|| (0..31 * 30).map(|p| (p * 7) % 5 != 0).collect());
        Lens::new(
            &model(),
            image,
            source,
            LensOptions {
                supersample: 2,
                psf,
                mask,
            },
        )
        .unwrap()
    }

    #[test]
    fn lens_passes_operator_suite() {
        for (psf, mask) in [(false, false), (true, false), (true, true)] {
            check_operator(&small_lens(psf, mask), 11);
        }
    }

    #[test]
    fn psf_convolution_matches_direct_sum() {
        let lens = small_lens(true, false);
        let psf = lens.psf.as_ref().unwrap();
        let (ny, nx) = (9usize, 8usize);
        let img: Vec<f32> = (0..ny * nx).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let mut out = vec![0f32; ny * nx];
        psf.convolve(&img, ny, nx, &mut out);
        for y in 0..ny as i64 {
            for x in 0..nx as i64 {
                let mut s = 0.0f32;
                for u in 0..ny as i64 {
                    for v in 0..nx as i64 {
                        // kernel index of offset (y − u, x − v) relative to its centre (1, 2).
                        let (a, b) = (y - u + 1, x - v + 2);
                        if (0..3).contains(&a) && (0..5).contains(&b) {
                            s += psf.kernel[(a * 5 + b) as usize]
                                * img[(u * nx as i64 + v) as usize];
                        }
                    }
                }
                let o = out[(y * nx as i64 + x) as usize];
                assert!((o - s).abs() < 1e-4, "({y},{x}): {o} vs {s}");
            }
        }
    }

    #[test]
    fn compact_source_lensed_into_einstein_ring() {
        // SIS, no shear: a small source at the origin maps to a ring of radius θ_E.
        let mass = MassModel {
            sie: Sie {
                einstein_radius: 1.0,
                axis_ratio: 1.0,
                angle_deg: 0.0,
                centre: [0.0, 0.0],
            },
            shear: ExternalShear::default(),
        };
        let image = ImageGrid {
            ny: 81,
            nx: 81,
            pixel_scale: 0.04,
        };
        let source = SourceGrid {
            ny: 16,
            nx: 16,
            scale: 0.02,
            centre: [0.0, 0.0],
        };
        let lens = Lens::new(
            &mass,
            image,
            source,
            LensOptions {
                supersample: 4,
                ..Default::default()
            },
        )
        .unwrap();
        // A Gaussian blob of σ = 0.03″ at the source centre.
        let src: Vec<f32> = (0..256)
            .map(|j| {
                let (x, y) = source.xy(j / 16, j % 16);
                (-(x * x + y * y) / (2.0 * 0.03f64.powi(2))).exp() as f32
            })
            .collect();
        let img = lens.render(&src);
        // Flux-weighted mean radius and its spread, and the azimuthal coverage.
        let (mut w, mut wr, mut wr2) = (0.0f64, 0.0, 0.0);
        let mut sectors = [0.0f64; 8];
        for iy in 0..81 {
            for ix in 0..81 {
                let v = img[iy * 81 + ix] as f64;
                let (x, y) = image.xy(iy as f64, ix as f64);
                let r = x.hypot(y);
                w += v;
                wr += v * r;
                wr2 += v * r * r;
                let s =
                    ((y.atan2(x) + std::f64::consts::PI) / std::f64::consts::TAU * 8.0) as usize;
                sectors[s.min(7)] += v;
            }
        }
        let mean_r = wr / w;
        let sd = (wr2 / w - mean_r * mean_r).sqrt();
        assert!((mean_r - 1.0).abs() < 0.01, "ring radius {mean_r}");
        assert!(sd < 0.06, "ring width {sd}");
        let (lo, hi) = sectors
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &s| (a.min(s), b.max(s)));
        assert!(lo > 0.9 * hi, "ring not azimuthally uniform: {sectors:?}");
    }
}
