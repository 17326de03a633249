//! CLEAN as WSClean runs it: Högbom minor cycles on the residual image inside Cotton–Schwab
//! major cycles, in which the model is predicted through the NUFFT, subtracted from the
//! visibilities, and the residual visibilities are imaged again with the dirty image's weights.
//!
//! Stopping follows WSClean: each major cycle measures σ of the residual from its median
//! absolute value (`1.4826 · median|r|`, WSClean's `-auto-threshold` noise); the minor cycles
//! stop at `max(threshold, auto·σ, (1 − mgain) · peak)` or when `niter` components are spent;
//! the run ends when the residual's peak is below `max(threshold, auto·σ)`.

use ms_io::VisChunk;
use num_complex::Complex;

use super::beam::{add_restored, fit_beam, PixelBeam};
use super::dirty::{make_dirty_and_psf, ImagingOptions, UvStats};
use super::ImagingError;
use crate::io::Beam;
use crate::operator::nufft::{ms2dirty_chunks, Nufft, VisSource};

const SPEED_OF_LIGHT: f64 = 299_792_458.0;
/// σ of a Gaussian over its median absolute value.
const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

#[derive(Debug, Clone, PartialEq)]
pub struct CleanOptions {
    /// Most minor-cycle iterations (components), WSClean's `-niter`.
    pub niter: usize,
    /// Loop gain: the fraction of the peak taken per component (`-gain`).
    pub gain: f64,
    /// Major-cycle gain: the minor cycles of one major cycle take the peak down by this
    /// fraction before the residual is recomputed from the visibilities (`-mgain`).
    pub mgain: f64,
    /// Stop at this absolute residual peak, Jy/beam (`-threshold`).
    pub threshold: f64,
    /// Stop at this many σ of the residual (σ from the median absolute value,
    /// `-auto-threshold`); `None` for none.
    pub auto_threshold: Option<f64>,
    /// Most major cycles (`-nmiter`).
    pub max_major_cycles: usize,
    /// Take the peak by absolute value, allowing negative components (WSClean's default).
    pub allow_negative: bool,
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self {
            niter: 10_000,
            gain: 0.1,
            mgain: 0.8,
            threshold: 0.0,
            auto_threshold: Some(3.0),
            max_major_cycles: 20,
            allow_negative: true,
        }
    }
}

impl CleanOptions {
    fn validate(&self) -> Result<(), ImagingError> {
        let bad = |what: &'static str, why: String| Err(ImagingError::BadCleanOption { what, why });
        if !(self.gain > 0.0 && self.gain <= 1.0) {
            return bad("gain", format!("must be in (0, 1], got {}", self.gain));
        }
        if !(self.mgain > 0.0 && self.mgain <= 1.0) {
            return bad("mgain", format!("must be in (0, 1], got {}", self.mgain));
        }
        if !(self.threshold >= 0.0 && self.threshold.is_finite()) {
            return bad(
                "threshold",
                format!("must be a finite number ≥ 0 Jy, got {}", self.threshold),
            );
        }
        if let Some(a) = self.auto_threshold {
            if !(a > 0.0 && a.is_finite()) {
                return bad("auto-threshold", format!("must be positive, got {a}"));
            }
        }
        if self.max_major_cycles == 0 {
            return bad("nmiter", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Why CLEAN stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The residual peak reached the threshold (absolute or auto).
    Threshold,
    /// `niter` components were spent.
    IterationLimit,
    /// The major-cycle limit was reached.
    MajorCycleLimit,
    /// A major cycle left a residual peak far above the one it started from (or not finite):
    /// CLEAN was diverging, and the model and residual are those from before that cycle.
    Diverged,
}

/// A major cycle whose residual peak ends above this multiple of its starting peak is taken
/// as divergence: a sane cycle lowers the peak (to about (1 − mgain) of it), and a run that
/// diverges grows it by orders of magnitude per cycle (to 10²⁷ Jy on a VLBA MS).
pub const DIVERGENCE_FACTOR: f64 = 1.5;

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Threshold => "threshold reached",
            StopReason::IterationLimit => "iteration limit reached",
            StopReason::MajorCycleLimit => "major-cycle limit reached",
            StopReason::Diverged => "stopped: diverging (the residual peak grew)",
        })
    }
}

/// Where a run stands, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct CleanProgress {
    pub iterations: usize,
    /// Major cycles finished.
    pub major_cycles: usize,
    /// |peak| of the current residual, Jy/beam.
    pub peak: f64,
    /// The level this run stops at (max of threshold and auto-threshold), Jy/beam.
    pub stop_level: f64,
}

pub struct CleanResult {
    /// Components, Jy/pixel, row-major `[iy][ix]`.
    pub model: Vec<f32>,
    /// Residual image from the residual visibilities, Jy/beam.
    pub residual: Vec<f32>,
    /// `model ⊛ beam + residual`, Jy/beam.
    pub restored: Vec<f32>,
    /// Peak-normalised PSF.
    pub psf: Vec<f32>,
    /// The dirty image (the residual of an empty model), Jy/beam.
    pub dirty: Vec<f32>,
    /// Restoring beam fitted to the PSF (degrees).
    pub beam: Beam,
    /// The same beam in pixels.
    pub pixel_beam: PixelBeam,
    pub iterations: usize,
    /// Model predictions subtracted from the visibilities (major cycles).
    pub major_cycles: usize,
    pub stop: StopReason,
    /// |peak| of the final residual, Jy/beam.
    pub peak_residual: f64,
    /// σ of the final residual (1.4826 · median|r|), Jy/beam.
    pub residual_sigma: f64,
    /// Restored image peak (largest value), Jy/beam.
    pub restored_peak: f64,
    pub stats: UvStats,
}

/// [`clean_with_progress`] without a progress display.
pub fn clean(
    chunks: &[VisChunk],
    opts: &ImagingOptions,
    copts: &CleanOptions,
) -> Result<CleanResult, ImagingError> {
    clean_with_progress(chunks, opts, copts, |_| true)
}

/// CLEANs the visibilities of `chunks` imaged as `opts` says (the dirty image and PSF of
/// [`make_dirty_and_psf`], with its weights). `progress` is called after every minor cycle
/// and major cycle; returning `false` stops the run with [`ImagingError::Interrupted`].
pub fn clean_with_progress(
    chunks: &[VisChunk],
    opts: &ImagingOptions,
    copts: &CleanOptions,
    mut progress: impl FnMut(&CleanProgress) -> bool,
) -> Result<CleanResult, ImagingError> {
    copts.validate()?;
    let geom = opts.geometry;
    let (nx, ny) = (geom.nx, geom.ny);
    let products = make_dirty_and_psf(chunks, opts)?;
    let weights = &products.weights;
    let scale = geom.dx.min(geom.dy);
    // WSClean starts the fit at the theoretical beam (1/max uv), at least one pixel.
    let estimate = (products.stats.theoretical_beam.max(scale)) / scale;
    let pixel_beam = fit_beam(&products.psf, nx, ny, estimate).ok_or(ImagingError::BeamFit)?;
    let beam = pixel_beam.to_beam(scale);

    let mut model = vec![0.0f32; geom.len()];
    let mut residual = products.dirty.clone();
    let mut iterations = 0;
    let mut major_cycles = 0;
    let mut predictor: Option<Predictor> = None;
    let stop = loop {
        let sigma = mad_sigma(&residual);
        let stop_level = copts
            .threshold
            .max(copts.auto_threshold.map_or(0.0, |a| a * sigma));
        let (_, peak) = find_peak(&residual, copts.allow_negative);
        let state = CleanProgress {
            iterations,
            major_cycles,
            peak,
            stop_level,
        };
        if !progress(&state) {
            return Err(ImagingError::Interrupted);
        }
        if peak <= stop_level {
            break StopReason::Threshold;
        }
        if iterations >= copts.niter {
            break StopReason::IterationLimit;
        }
        if major_cycles >= copts.max_major_cycles {
            break StopReason::MajorCycleLimit;
        }
        let cycle_level = stop_level.max((1.0 - copts.mgain) * peak);
        let mut scratch = residual.clone();
        let model_before = model.clone();
        let done = hogbom(
            &mut scratch,
            &products.psf,
            nx,
            ny,
            &mut model,
            &HogbomParams {
                gain: copts.gain,
                level: cycle_level,
                max_iter: copts.niter - iterations,
                allow_negative: copts.allow_negative,
            },
        );
        iterations += done;
        if done == 0 {
            // The peak is above the stop level but one component would not lower it (a gain
            // rounding to nothing): nothing more to gain from another cycle.
            break StopReason::Threshold;
        }
        let p = match predictor.as_mut() {
            Some(p) => p,
            None => predictor.insert(Predictor::new(chunks, weights, opts)?),
        };
        let new_residual = p.residual_image(&model)?;
        let new_peak = find_peak(&new_residual, copts.allow_negative).1;
        if !(new_peak.is_finite() && new_peak <= DIVERGENCE_FACTOR * peak)
            || new_residual.iter().any(|v| !v.is_finite())
        {
            // Back to the last sane state: the model of before this cycle, whose residual is
            // the one this cycle started from.
            model = model_before;
            iterations -= done;
            break StopReason::Diverged;
        }
        residual = new_residual;
        major_cycles += 1;
        // As WSClean: once the minor cycles reach the final level (not just this cycle's
        // mgain level), the major cycle just done gives the final residual and the run ends,
        // even if that residual's peak lies a little above the level again.
        if find_peak(&scratch, copts.allow_negative).1 <= stop_level {
            break StopReason::Threshold;
        }
        if iterations >= copts.niter {
            break StopReason::IterationLimit;
        }
    };

    let mut restored = residual.clone();
    add_restored(&model, nx, ny, &pixel_beam, &mut restored);
    let (_, peak_residual) = find_peak(&residual, true);
    let restored_peak = restored.iter().cloned().fold(f32::MIN, f32::max) as f64;
    Ok(CleanResult {
        residual_sigma: mad_sigma(&residual),
        model,
        residual,
        restored,
        psf: products.psf,
        dirty: products.dirty,
        beam,
        pixel_beam,
        iterations,
        major_cycles,
        stop,
        peak_residual,
        restored_peak,
        stats: products.stats,
    })
}

/// σ of an image from its median absolute value, as WSClean's auto-threshold measures it.
pub fn mad_sigma(image: &[f32]) -> f64 {
    if image.is_empty() {
        return 0.0;
    }
    let mut a: Vec<f32> = image.iter().map(|v| v.abs()).collect();
    let mid = a.len() / 2;
    let (_, m, _) = a.select_nth_unstable_by(mid, |x, y| x.total_cmp(y));
    *m as f64 * MAD_TO_SIGMA
}

/// Index and |value| (or value, without negatives) of the residual's peak.
fn find_peak(image: &[f32], allow_negative: bool) -> (usize, f64) {
    let mut best = (0usize, f32::MIN);
    for (i, &v) in image.iter().enumerate() {
        let v = if allow_negative { v.abs() } else { v };
        if v > best.1 {
            best = (i, v);
        }
    }
    (best.0, best.1 as f64)
}

/// Minor-cycle settings for [`hogbom`].
#[derive(Debug, Clone, Copy)]
pub struct HogbomParams {
    pub gain: f64,
    /// Stop when the peak is at or below this, Jy/beam.
    pub level: f64,
    pub max_iter: usize,
    pub allow_negative: bool,
}

/// Högbom CLEAN in the image: repeatedly takes `gain ×` the residual's peak into `model` and
/// subtracts the PSF (peak 1 at `(ny/2, nx/2)`, same shape as the image) shifted to the peak.
/// Returns the number of components taken.
pub fn hogbom(
    residual: &mut [f32],
    psf: &[f32],
    nx: usize,
    ny: usize,
    model: &mut [f32],
    p: &HogbomParams,
) -> usize {
    let (cx, cy) = (nx / 2, ny / 2);
    let mut n = 0;
    while n < p.max_iter {
        let (i, abs_peak) = find_peak(residual, p.allow_negative);
        if abs_peak <= p.level {
            break;
        }
        let flux = p.gain as f32 * residual[i];
        if flux == 0.0 {
            break;
        }
        model[i] += flux;
        let (py, px) = (i / nx, i % nx);
        // Image pixel (y, x) takes PSF pixel (y − py + cy, x − px + cx) when that exists.
        let y_lo = py.saturating_sub(cy);
        let y_hi = (py + ny - cy).min(ny);
        let x_lo = px.saturating_sub(cx);
        let x_hi = (px + nx - cx).min(nx);
        for y in y_lo..y_hi {
            let prow = (y + cy - py) * nx;
            let rrow = y * nx;
            let (r, s) = (
                &mut residual[rrow + x_lo..rrow + x_hi],
                &psf[prow + x_lo + cx - px..prow + x_hi + cx - px],
            );
            for (a, b) in r.iter_mut().zip(s) {
                *a -= flux * b;
            }
        }
        n += 1;
    }
    n
}

/// Predicts model visibilities and images the residual visibilities with the dirty image's
/// weights, gridder bound and normalisation, so that an empty model gives the dirty image.
struct Predictor<'a> {
    chunks: &'a [VisChunk],
    weights: &'a [Vec<f32>],
    opts: &'a ImagingOptions,
    /// Per chunk: the NUFFT over its samples of non-zero weight, and their indices.
    forward: Vec<Option<(Nufft, Vec<usize>)>>,
    max_w: f64,
    /// 1 / (the unnormalised PSF's centre), as the dirty image is scaled.
    norm: Option<f64>,
}

impl<'a> Predictor<'a> {
    fn new(
        chunks: &'a [VisChunk],
        weights: &'a [Vec<f32>],
        opts: &'a ImagingOptions,
    ) -> Result<Self, ImagingError> {
        let mut forward = Vec::with_capacity(chunks.len());
        for (c, w) in chunks.iter().zip(weights) {
            let mask: Vec<bool> = w.iter().map(|&x| x != 0.0).collect();
            let used: Vec<usize> = (0..w.len()).filter(|&k| mask[k]).collect();
            forward.push(if used.is_empty() {
                None
            } else {
                let op = Nufft::new(opts.geometry, &c.uvw, &c.freq, Some(&mask), &opts.nufft)?;
                Some((op, used))
            });
        }
        Ok(Self {
            chunks,
            weights,
            opts,
            forward,
            max_w: gridded_max_w(chunks, weights),
            norm: None,
        })
    }

    fn residual_image(&mut self, model: &[f32]) -> Result<Vec<f32>, ImagingError> {
        let image: Vec<f64> = model.iter().map(|&v| v as f64).collect();
        let mut resid_vis: Vec<Vec<Complex<f32>>> = Vec::with_capacity(self.chunks.len());
        for (c, f) in self.chunks.iter().zip(&self.forward) {
            let mut r = vec![Complex::new(0.0f32, 0.0); c.vis.len()];
            if let Some((op, used)) = f {
                let pred = op.forward_f64(&image)?;
                for (&k, m) in used.iter().zip(&pred) {
                    let v = c.vis[k];
                    r[k] = Complex::new((v.re as f64 - m.re) as f32, (v.im as f64 - m.im) as f32);
                }
            }
            resid_vis.push(r);
        }
        let sources: Vec<VisSource> = self
            .chunks
            .iter()
            .zip(self.weights)
            .zip(&resid_vis)
            .map(|((c, w), v)| VisSource {
                uvw: &c.uvw,
                freq: &c.freq,
                vis: v,
                weight: w,
            })
            .collect();
        let geom = &self.opts.geometry;
        let want_psf = self.norm.is_none();
        let (img, psf) = ms2dirty_chunks(geom, &self.opts.nufft, self.max_w, &sources, want_psf)?;
        if let Some(psf) = psf {
            self.norm = Some(1.0 / psf[(geom.ny / 2) * geom.nx + geom.nx / 2]);
        }
        let norm = self.norm.expect("set on the first call");
        Ok(img.iter().map(|v| (v * norm) as f32).collect())
    }
}

/// The |w| bound the dirty image was gridded with (see `make_dirty_and_psf`): the row's |w| at
/// its highest frequency for every row with a used sample.
fn gridded_max_w(chunks: &[VisChunk], weights: &[Vec<f32>]) -> f64 {
    chunks
        .iter()
        .zip(weights)
        .flat_map(|(c, w)| {
            let nchan = c.n_chan();
            let fmax = c.freq.iter().cloned().fold(0.0, f64::max);
            c.uvw.iter().enumerate().filter_map(move |(r, uvw)| {
                w[r * nchan..(r + 1) * nchan]
                    .iter()
                    .any(|&x| x != 0.0)
                    .then_some(uvw[2].abs() * fmax / SPEED_OF_LIGHT)
            })
        })
        .fold(0.0f64, f64::max)
        * (1.0 + 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PSF with a main lobe and sidelobes: the image of a random set of uv cells (a real,
    /// symmetric pattern), peak-normalised, `ny × nx`, centred on `(ny/2, nx/2)`.
    fn synthetic_psf(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let cells: Vec<(f64, f64)> = (0..60)
            .map(|_| {
                let r: f64 = rng.random_range(0.02..0.3);
                let t: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                (r * t.cos(), r * t.sin())
            })
            .collect();
        let mut psf = vec![0.0f32; n * n];
        for iy in 0..n {
            for ix in 0..n {
                let (x, y) = (ix as f64 - (n / 2) as f64, iy as f64 - (n / 2) as f64);
                let s: f64 = cells
                    .iter()
                    .map(|(u, v)| (std::f64::consts::TAU * (u * x + v * y)).cos())
                    .sum();
                psf[iy * n + ix] = (s / cells.len() as f64) as f32;
            }
        }
        psf
    }

    #[test]
    fn hogbom_recovers_point_sources() {
        let n = 64;
        let psf = synthetic_psf(n, 7);
        let sources = [(20usize, 30usize, 1.0f32), (40, 22, 0.5), (33, 45, -0.3)];
        let mut dirty = vec![0.0f32; n * n];
        for &(sy, sx, f) in &sources {
            for y in 0..n {
                for x in 0..n {
                    let (py, px) = (y as isize - sy as isize + 32, x as isize - sx as isize + 32);
                    if (0..n as isize).contains(&py) && (0..n as isize).contains(&px) {
                        dirty[y * n + x] += f * psf[py as usize * n + px as usize];
                    }
                }
            }
        }
        let mut model = vec![0.0f32; n * n];
        let mut resid = dirty.clone();
        let it = hogbom(
            &mut resid,
            &psf,
            n,
            n,
            &mut model,
            &HogbomParams {
                gain: 0.1,
                level: 1e-4,
                max_iter: 5000,
                allow_negative: true,
            },
        );
        assert!(it > 0 && it < 5000, "{it} iterations");
        for &(sy, sx, f) in &sources {
            let got = model[sy * n + sx];
            assert!(
                (got - f).abs() < 2e-3,
                "source at ({sy}, {sx}): {got} vs {f}"
            );
        }
        let elsewhere: f32 = model
            .iter()
            .enumerate()
            .filter(|(i, _)| !sources.iter().any(|&(y, x, _)| y * n + x == *i))
            .map(|(_, v)| v.abs())
            .sum();
        assert!(elsewhere < 2e-3, "flux off the sources: {elsewhere}");
        let peak = resid.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(peak <= 1e-4, "residual peak {peak}");

        // Without negatives the negative source stays in the residual.
        let mut model = vec![0.0f32; n * n];
        let mut resid = dirty.clone();
        hogbom(
            &mut resid,
            &psf,
            n,
            n,
            &mut model,
            &HogbomParams {
                gain: 0.1,
                level: 1e-3,
                max_iter: 5000,
                allow_negative: false,
            },
        );
        assert!(model.iter().all(|&v| v >= 0.0));
        let min = resid.iter().cloned().fold(f32::MAX, f32::min);
        assert!(min < -0.2, "negative source gone: min {min}");
    }

    #[test]
    fn mad_sigma_of_gaussian_noise() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let d = Normal::new(0.0, 2.5).unwrap();
        let v: Vec<f32> = (0..200_000).map(|_| d.sample(&mut rng) as f32).collect();
        assert!((mad_sigma(&v) / 2.5 - 1.0).abs() < 0.01);
    }

    #[test]
    fn bad_options_are_refused() {
        for o in [
            CleanOptions {
                gain: 0.0,
                ..Default::default()
            },
            CleanOptions {
                mgain: 1.5,
                ..Default::default()
            },
            CleanOptions {
                threshold: -1.0,
                ..Default::default()
            },
            CleanOptions {
                auto_threshold: Some(f64::NAN),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                o.validate(),
                Err(ImagingError::BadCleanOption { .. })
            ));
        }
        assert!(CleanOptions::default().validate().is_ok());
    }
}
