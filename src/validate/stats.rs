//! Per-truth summaries of posterior samples (so that a calibration run never holds all samples)
//! and their pooling over truths: per-pixel ranks and interval coverage, χ², errors.

use rand::Rng;
use serde::Serialize;

use super::tarp::fractional_rank;

/// Credibility levels of the central intervals whose per-pixel coverage is counted.
pub const LEVELS: [f64; 2] = [0.68, 0.95];
/// Bins of the per-pixel rank histogram (flat when calibrated).
pub const RANK_BINS: usize = 10;
/// Pixels with a truth above this fraction of the truth's peak count as "source" pixels.
pub const SOURCE_FRACTION: f32 = 0.1;

/// Counts of truths inside central intervals, for all pixels and for source pixels.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Coverage {
    pub pixels: usize,
    /// Per level of [`LEVELS`].
    pub inside: [usize; 2],
    pub source_pixels: usize,
    pub source_inside: [usize; 2],
    /// Histogram of the truth's fractional rank among the samples, pixel by pixel.
    pub rank_hist: [usize; RANK_BINS],
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        self.pixels += o.pixels;
        self.source_pixels += o.source_pixels;
        for k in 0..2 {
            self.inside[k] += o.inside[k];
            self.source_inside[k] += o.source_inside[k];
        }
        for (a, b) in self.rank_hist.iter_mut().zip(&o.rank_hist) {
            *a += b;
        }
    }
    /// Fraction of pixels whose truth lies in the central interval of `LEVELS[k]`.
    pub fn fraction(&self, k: usize) -> f64 {
        self.inside[k] as f64 / self.pixels.max(1) as f64
    }
    pub fn source_fraction(&self, k: usize) -> f64 {
        self.source_inside[k] as f64 / self.source_pixels.max(1) as f64
    }
}

/// Per-pixel coverage of one truth by its samples (`S` images back to back). The truth's
/// fractional rank u (see [`fractional_rank`]) is uniform on [0, 1) under calibration, so the
/// truth lies in the central interval of credibility c (|u − ½| ≤ c/2) with probability
/// exactly c, even for few samples.
pub fn pixel_coverage<R: Rng + ?Sized>(samples: &[f32], truth: &[f32], rng: &mut R) -> Coverage {
    let d = truth.len();
    let s = samples.len() / d;
    let peak = truth.iter().cloned().fold(f32::MIN, f32::max);
    let mut c = Coverage {
        pixels: d,
        ..Default::default()
    };
    for (k, &t) in truth.iter().enumerate() {
        let (mut below, mut equal) = (0, 0);
        for j in 0..s {
            let v = samples[j * d + k];
            if v < t {
                below += 1;
            } else if v == t {
                equal += 1;
            }
        }
        let u = fractional_rank(below, equal, s, rng);
        let source = peak > 0.0 && t >= SOURCE_FRACTION * peak;
        if source {
            c.source_pixels += 1;
        }
        for (l, &level) in LEVELS.iter().enumerate() {
            if (u - 0.5).abs() <= level / 2.0 {
                c.inside[l] += 1;
                if source {
                    c.source_inside[l] += 1;
                }
            }
        }
        c.rank_hist[((u * RANK_BINS as f64) as usize).min(RANK_BINS - 1)] += 1;
    }
    c
}

/// Pixel-wise mean and standard deviation (n − 1) of `S` images back to back.
pub fn mean_std(samples: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let s = samples.len() / d;
    let mut mean = vec![0.0f64; d];
    for img in samples.chunks(d) {
        for (m, &v) in mean.iter_mut().zip(img) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= s as f64);
    let mut var = vec![0.0f64; d];
    for img in samples.chunks(d) {
        for ((q, &v), m) in var.iter_mut().zip(img).zip(&mean) {
            *q += (v as f64 - m).powi(2);
        }
    }
    let den = (s as f64 - 1.0).max(1.0);
    (
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&q| (q / den).sqrt() as f32).collect(),
    )
}

/// Root-mean-square difference of two images.
pub fn rmse(a: &[f32], b: &[f32]) -> f64 {
    (a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64)
        .sqrt()
}

/// Quantiles (linear interpolation) of a sample, for summaries.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (i, fr) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < s.len() {
        s[i] * (1.0 - fr) + s[i + 1] * fr
    } else {
        s[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::StandardNormal;

    /// Samples and truth i.i.d. from one distribution per pixel: coverage at each level is the
    /// level itself (to binomial error) and the rank histogram is flat.
    #[test]
    fn exchangeable_truth_gives_nominal_coverage() {
        let mut rng = StdRng::seed_from_u64(1);
        let (d, s) = (4096, 8);
        let mut total = Coverage::default();
        for _ in 0..5 {
            let draw = |rng: &mut StdRng| -> Vec<f32> {
                (0..d)
                    .map(|k| (k as f32 * 0.01).sin() + rng.sample::<f32, _>(StandardNormal))
                    .collect()
            };
            let truth = draw(&mut rng);
            let samples: Vec<f32> = (0..s).flat_map(|_| draw(&mut rng)).collect();
            total.add(&pixel_coverage(&samples, &truth, &mut rng));
        }
        let n = total.pixels as f64;
        for (k, &l) in LEVELS.iter().enumerate() {
            let sd = (l * (1.0 - l) / n).sqrt();
            assert!(
                (total.fraction(k) - l).abs() < 4.0 * sd,
                "level {l}: {}",
                total.fraction(k)
            );
        }
        let expect = n / RANK_BINS as f64;
        for &h in &total.rank_hist {
            assert!(
                (h as f64 - expect).abs() < 4.0 * expect.sqrt(),
                "{h} vs {expect}"
            );
        }
    }

    /// Samples half as wide as the truth's distribution: their central 68 % interval is
    /// ±0.994/2 = ±0.497 (for many samples), which holds the truth with probability
    /// erf(0.497/√2) ≈ 0.381.
    #[test]
    fn too_narrow_samples_undercover() {
        let mut rng = StdRng::seed_from_u64(2);
        let (d, s) = (2000, 400);
        let truth: Vec<f32> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        let samples: Vec<f32> = (0..s * d)
            .map(|_| 0.5 * rng.sample::<f32, _>(StandardNormal))
            .collect();
        let c = pixel_coverage(&samples, &truth, &mut rng);
        let f = c.fraction(0);
        assert!((f - 0.381).abs() < 0.04, "{f}");
        assert!(c.fraction(1) < 0.8);
    }

    #[test]
    fn source_pixels_follow_the_truth_peak() {
        let mut rng = StdRng::seed_from_u64(3);
        let truth = [0.0f32, 0.05, 0.1, 1.0];
        let samples = [0.0f32, 0.05, 0.1, 1.0, 0.0, 0.05, 0.1, 1.0];
        let c = pixel_coverage(&samples, &truth, &mut rng);
        assert_eq!(c.pixels, 4);
        assert_eq!(c.source_pixels, 2);
    }

    #[test]
    fn mean_std_rmse_quantile_by_hand() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 6.0], 2);
        assert_eq!(m, vec![2.0, 4.0]);
        assert!((s[0] - 2f32.sqrt()).abs() < 1e-6 && (s[1] - 8f32.sqrt()).abs() < 1e-6);
        assert!((rmse(&[0.0, 0.0], &[3.0, 4.0]) - 12.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.25), 1.25);
    }
}
