//! TARP, "Tests of Accuracy with Random Points" (Lemos et al. 2023, arXiv:2302.03026): a
//! coverage test of posterior samples in any dimension.
//!
//! For each simulation i with truth θᵢ, posterior samples θᵢⱼ and a random reference point rᵢ,
//! `fᵢ` is the fraction of samples closer to rᵢ than the truth is. If the samples come from the
//! true posterior, fᵢ is uniform on [0, 1] (for references drawn independently of the data), so
//! the expected coverage probability `ECP(α) = P(f ≤ α)` lies on the diagonal.
//!
//! Two choices differ from the reference implementation (the `tarp` Python package), both so
//! that the test stays exact with the few samples a calibration run affords:
//! - fᵢ is the randomised fractional rank `(#closer + U) / (S + 1)`, U ~ U(0, 1) (ties, which
//!   only discrete data make, are broken at random): exactly uniform under calibration for any
//!   number of samples S, where `#closer / S` is not;
//! - the band is simultaneous, not pointwise: `ECP ± q` with q the 95th percentile over
//!   bootstrap resamples of the truths of `sup_α |ECP* − ECP|`. A pointwise band over a grid of
//!   α excludes the diagonal somewhere most of the time even for a calibrated posterior.
//!
//! The largest deviation `sup_α |ECP(α) − α|` is the Kolmogorov–Smirnov distance of the fᵢ
//! from the uniform law; its p-value is reported too.
//!
//! Reading the curve. The squared distance of a point to the reference is, about the samples'
//! centre c, `|x − c|² + 2⟨x − c, c − r⟩ + |c − r|²`: for images (thousands of pixels) the
//! first term dominates the comparison. Samples too narrow (over-confident, or off to one side)
//! leave the truth farther from c than any sample, so fᵢ piles up near 1 and the curve falls
//! **below** the diagonal; samples too wide (under-confident) put the truth nearer c than most
//! samples, fᵢ crowds near 0 and the curve rises **above** it. In a few dimensions the cross
//! term matters too and mis-sized posteriors give S-shaped curves (f piling at both ends when
//! over-confident, at ½ when under-confident): the verdict weighs the mean of f and its spread,
//! each against its standard error under uniformity, and takes the larger departure.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The randomised fractional rank of the truth's distance to `reference` among the samples'
/// distances (Euclidean), in [0, 1). `samples` are `S` images back to back.
pub fn tarp_rank<R: Rng + ?Sized>(
    samples: &[f32],
    truth: &[f32],
    reference: &[f32],
    rng: &mut R,
) -> f64 {
    let d = truth.len();
    assert!(d > 0 && samples.len().is_multiple_of(d) && reference.len() == d);
    let dist = |x: &[f32]| -> f64 {
        x.iter()
            .zip(reference)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
    };
    let dt = dist(truth);
    let (mut below, mut equal) = (0usize, 0usize);
    for s in samples.chunks(d) {
        let ds = dist(s);
        if ds < dt {
            below += 1;
        } else if ds == dt {
            equal += 1;
        }
    }
    fractional_rank(below, equal, samples.len() / d, rng)
}

/// `(r + U)/(S + 1)` with r = `below` plus a uniform share of the ties: uniform on [0, 1) when
/// the truth is exchangeable with the S samples.
pub fn fractional_rank<R: Rng + ?Sized>(below: usize, equal: usize, n: usize, rng: &mut R) -> f64 {
    let r = below
        + if equal > 0 {
            rng.random_range(0..=equal)
        } else {
            0
        };
    (r as f64 + rng.random::<f64>()) / (n + 1) as f64
}

/// One reference point per truth, each pixel uniform in the range that pixel spans over the
/// *other* truths (the `tarp` package's "random" references, without its per-pixel rescaling,
/// which blows up nearly constant pixels such as an empty border). Leaving truth i out keeps
/// its reference independent of it: with the full range, a truth at the edge of the range has
/// its reference always on the inner side, which biases f towards 1 (false over-confidence).
pub fn reference_points(truths: &[&[f32]], seed: u64) -> Vec<Vec<f32>> {
    let d = truths.first().map_or(0, |t| t.len());
    let n = truths.len();
    // Per pixel, the two lowest and two highest values with the truth holding the extreme.
    let mut lo = vec![(f32::INFINITY, usize::MAX, f32::INFINITY); d];
    let mut hi = vec![(f32::NEG_INFINITY, usize::MAX, f32::NEG_INFINITY); d];
    for (i, t) in truths.iter().enumerate() {
        for (k, &v) in t.iter().enumerate() {
            let l = &mut lo[k];
            if v < l.0 {
                *l = (v, i, l.0);
            } else if v < l.2 {
                l.2 = v;
            }
            let h = &mut hi[k];
            if v > h.0 {
                *h = (v, i, h.0);
            } else if v > h.2 {
                h.2 = v;
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            (0..d)
                .map(|k| {
                    let (a, b) = if n > 1 {
                        (
                            if lo[k].1 == i { lo[k].2 } else { lo[k].0 },
                            if hi[k].1 == i { hi[k].2 } else { hi[k].0 },
                        )
                    } else {
                        (lo[k].0, hi[k].0)
                    };
                    a + (b - a) * rng.random::<f32>()
                })
                .collect()
        })
        .collect()
}

/// The TARP verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The diagonal lies within the band everywhere.
    Calibrated,
    /// Posterior too narrow (or off target): the truth lies outside the samples' spread.
    OverConfident,
    /// Posterior too wide.
    UnderConfident,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Calibrated => "calibrated (diagonal within the band)",
            Verdict::OverConfident => "over-confident (posterior too narrow)",
            Verdict::UnderConfident => "under-confident (posterior too wide)",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Tarp {
    /// Credibility levels, 0 to 1.
    pub alpha: Vec<f64>,
    /// Expected coverage probability at each α.
    pub ecp: Vec<f64>,
    /// Simultaneous 95 % bootstrap band.
    pub band_lo: Vec<f64>,
    pub band_hi: Vec<f64>,
    /// Half-width of the band.
    pub band_half_width: f64,
    /// `max |ECP − α|` (the KS distance of f from uniform), its α, and `ECP − α` there
    /// (negative, below the diagonal: over-confident for images; positive: under-confident).
    pub max_deviation: f64,
    pub max_deviation_alpha: f64,
    pub max_deviation_signed: f64,
    /// Kolmogorov–Smirnov p-value of the f against U(0, 1).
    pub ks_p_value: f64,
    /// Mean of f (½ when calibrated; above: over-confident in many dimensions) and its
    /// variance over 1/12 (1 when calibrated; above 1 with a mean near ½: over-confident in a
    /// few dimensions; below: under-confident).
    pub f_mean: f64,
    pub f_dispersion: f64,
    pub within_band: bool,
    pub verdict: Verdict,
    pub n_truths: usize,
    pub n_bootstrap: usize,
}

/// Empirical CDF of `f` at each `alpha`.
pub fn ecp_curve(f: &[f64], alpha: &[f64]) -> Vec<f64> {
    let mut s = f.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len().max(1) as f64;
    alpha
        .iter()
        .map(|&a| s.partition_point(|&v| v <= a) as f64 / n)
        .collect()
}

/// `sup_a |F_n(a) − a|` exactly (not only on a grid).
fn ks_distance(f: &[f64]) -> f64 {
    let mut s = f.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f64 / n - v).max(v - i as f64 / n))
        .fold(0.0, f64::max)
}

/// Asymptotic Kolmogorov p-value with Stephens' small-sample correction.
pub fn ks_p_value(d: f64, n: usize) -> f64 {
    let sn = (n as f64).sqrt();
    let lambda = (sn + 0.12 + 0.11 / sn) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let mut p = 0.0;
    for k in 1..=100 {
        let term = 2.0 * (-1f64).powi(k - 1) * (-2.0 * (k as f64 * lambda).powi(2)).exp();
        p += term;
        if term.abs() < 1e-12 {
            break;
        }
    }
    p.clamp(0.0, 1.0)
}

/// The TARP curve, its band and verdict from the per-truth ranks `f`.
pub fn tarp_from_ranks(f: &[f64], n_grid: usize, n_bootstrap: usize, seed: u64) -> Tarp {
    let n = f.len();
    let n_grid = n_grid.max(2);
    let alpha: Vec<f64> = (0..n_grid)
        .map(|i| i as f64 / (n_grid - 1) as f64)
        .collect();
    let ecp = ecp_curve(f, &alpha);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sups: Vec<f64> = (0..n_bootstrap)
        .map(|_| {
            let fb: Vec<f64> = (0..n).map(|_| f[rng.random_range(0..n)]).collect();
            ecp_curve(&fb, &alpha)
                .iter()
                .zip(&ecp)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        })
        .collect();
    sups.sort_by(f64::total_cmp);
    let q = if sups.is_empty() {
        0.0
    } else {
        sups[((0.95 * sups.len() as f64).ceil() as usize).clamp(1, sups.len()) - 1]
    };
    let band_lo: Vec<f64> = ecp.iter().map(|e| (e - q).max(0.0)).collect();
    let band_hi: Vec<f64> = ecp.iter().map(|e| (e + q).min(1.0)).collect();
    let within_band = alpha
        .iter()
        .zip(band_lo.iter().zip(&band_hi))
        .all(|(a, (lo, hi))| lo - 1e-12 <= *a && *a <= hi + 1e-12);
    let (mut dmax, mut at, mut signed) = (0.0, 0.0, 0.0);
    for (a, e) in alpha.iter().zip(&ecp) {
        if (e - a).abs() > dmax {
            (dmax, at, signed) = ((e - a).abs(), *a, e - a);
        }
    }
    let ks = ks_distance(f);
    let nf = n.max(1) as f64;
    let f_mean = f.iter().sum::<f64>() / nf;
    let f_var = f.iter().map(|v| (v - f_mean).powi(2)).sum::<f64>() / (nf - 1.0).max(1.0);
    let f_dispersion = f_var * 12.0;
    let verdict = if within_band {
        Verdict::Calibrated
    } else {
        // Which departure is larger, each in units of its standard error under uniformity:
        // the mean of f (sd √(1/12/n)) or its variance (sd ≈ √(1/180/n)).
        let z_mean = (f_mean - 0.5) / (1.0 / 12.0 / nf).sqrt();
        let z_disp = (f_var - 1.0 / 12.0) / (1.0 / 180.0 / nf).sqrt();
        let over = if z_mean.abs() >= z_disp.abs() {
            z_mean > 0.0
        } else {
            z_disp > 0.0
        };
        if over {
            Verdict::OverConfident
        } else {
            Verdict::UnderConfident
        }
    };
    Tarp {
        alpha,
        ecp,
        band_lo,
        band_hi,
        band_half_width: q,
        max_deviation: ks.max(dmax),
        max_deviation_alpha: at,
        max_deviation_signed: signed,
        ks_p_value: ks_p_value(ks, n),
        f_mean,
        f_dispersion,
        within_band,
        verdict,
        n_truths: n,
        n_bootstrap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::StandardNormal;

    /// Gaussian model in d dimensions: θ ~ N(0, I), y = θ + N(0, s² I); the posterior is
    /// N(y/(1+s²), s²/(1+s²) I). Samples drawn from a posterior of width `scale` × the true one
    /// (and shifted by `shift` × the true width) must give the corresponding verdict.
    fn gaussian_case(scale: f64, shift: f64, seed: u64) -> Tarp {
        let (d, n, s_count) = (8, 300, 50);
        let s2: f64 = 0.5;
        let post_sd = (s2 / (1.0 + s2)).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut truths = Vec::new();
        let mut samples = Vec::new();
        for _ in 0..n {
            let theta: Vec<f32> = (0..d)
                .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
                .collect();
            let y: Vec<f64> = theta
                .iter()
                .map(|&t| t as f64 + s2.sqrt() * rng.sample::<f64, _>(StandardNormal))
                .collect();
            let mut s = Vec::with_capacity(s_count * d);
            for _ in 0..s_count {
                for yk in &y {
                    let z: f64 = rng.sample(StandardNormal);
                    s.push((yk / (1.0 + s2) + post_sd * (shift + scale * z)) as f32);
                }
            }
            truths.push(theta);
            samples.push(s);
        }
        let refs: Vec<&[f32]> = truths.iter().map(|t| t.as_slice()).collect();
        let references = reference_points(&refs, seed + 1);
        let f: Vec<f64> = (0..n)
            .map(|i| tarp_rank(&samples[i], &truths[i], &references[i], &mut rng))
            .collect();
        tarp_from_ranks(&f, 101, 500, seed + 2)
    }

    #[test]
    fn true_posterior_lies_on_the_diagonal() {
        for seed in [1, 2, 3] {
            let t = gaussian_case(1.0, 0.0, seed);
            eprintln!(
                "exact: max dev {:.3} (band ±{:.3}), p {:.2}, dispersion {:.2}",
                t.max_deviation, t.band_half_width, t.ks_p_value, t.f_dispersion
            );
            assert!(t.within_band, "seed {seed}: {t:?}");
            assert_eq!(t.verdict, Verdict::Calibrated);
            assert!(t.max_deviation < 0.1);
        }
    }

    #[test]
    fn too_narrow_samples_are_over_confident() {
        let t = gaussian_case(0.5, 0.0, 4);
        eprintln!(
            "narrow: max dev {:.3} at α {:.2} ({:+.3}), dispersion {:.2}",
            t.max_deviation, t.max_deviation_alpha, t.max_deviation_signed, t.f_dispersion
        );
        assert!(!t.within_band);
        assert_eq!(t.verdict, Verdict::OverConfident);
        assert!(t.f_dispersion > 1.2);
        // Over-confidence in 8 dimensions: the truth is farther from the reference than most
        // samples, f piles towards 1 and the curve runs below the diagonal.
        assert!(t.f_mean > 0.6);
        assert!(t.max_deviation_signed < -0.1);
        assert!(t.ks_p_value < 1e-3);
    }

    #[test]
    fn too_wide_samples_are_under_confident() {
        let t = gaussian_case(2.0, 0.0, 5);
        eprintln!(
            "wide: max dev {:.3} at α {:.2} ({:+.3}), dispersion {:.2}",
            t.max_deviation, t.max_deviation_alpha, t.max_deviation_signed, t.f_dispersion
        );
        assert!(!t.within_band);
        assert_eq!(t.verdict, Verdict::UnderConfident);
        assert!(t.f_mean < 0.4);
        assert!(t.max_deviation_signed > 0.1);
    }

    #[test]
    fn ecp_is_the_empirical_cdf_and_ks_matches() {
        let f = [0.1, 0.2, 0.2, 0.9];
        assert_eq!(
            ecp_curve(&f, &[0.0, 0.15, 0.2, 0.5, 1.0]),
            vec![0.0, 0.25, 0.75, 0.75, 1.0]
        );
        // sup |F − a|: just below 0.9, F = 0.75 → 0.15; at 0.2, F = 0.75 → 0.55.
        assert!((ks_distance(&f) - 0.55).abs() < 1e-12);
        // Known Kolmogorov values: P(√n D > 1.358) ≈ 0.05 for large n.
        let p = ks_p_value(1.358 / (10000f64).sqrt(), 10000);
        assert!((p - 0.05).abs() < 0.003, "{p}");
    }

    #[test]
    fn fractional_rank_is_uniform_for_exchangeable_draws() {
        // Truth and 3 samples i.i.d.: f must be uniform although it has only 4 rank levels.
        let mut rng = StdRng::seed_from_u64(8);
        let f: Vec<f64> = (0..20000)
            .map(|_| {
                let v: Vec<f32> = (0..4).map(|_| rng.random::<f32>()).collect();
                let below = v[1..].iter().filter(|&&s| s < v[0]).count();
                fractional_rank(below, 0, 3, &mut rng)
            })
            .collect();
        assert!(ks_distance(&f) < 0.015);
    }
}
