//! Summary statistics that compare a prior's samples with its training images: the pixel-value
//! distribution, the total-flux distribution and the azimuthally averaged power spectrum. A
//! prior that reproduces all three has at least learned the marginal brightness, the flux
//! budget and the spatial scales of its data; none of them needs a reference model.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rustfft::{num_complex::Complex, FftPlanner};
use serde::Serialize;

use super::data::Split;

/// Which images of a data file the samples are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// Every image of the file.
    All,
    /// The part of the prior's recorded split it was trained on.
    Train,
    /// The prior's held-out validation images: the honest test of a prior.
    Val,
}

/// Indices of the reference images among the `n_images` of the data file: the whole file,
/// or one part of the `split` the prior recorded; shuffled by `seed` and cut to `n`. Errors
/// (plain messages) when a part is asked of a prior without a split, or of a file of
/// another length than the split was drawn over.
pub fn reference_indices(
    n_images: usize,
    split: Option<&Split>,
    which: Reference,
    n: usize,
    seed: u64,
) -> Result<Vec<usize>, String> {
    let part = match which {
        Reference::All => "",
        Reference::Train => "train",
        Reference::Val => "val",
    };
    let mut idx: Vec<usize> = match (which, split) {
        (Reference::All, _) => (0..n_images).collect(),
        (_, None) => {
            return Err(format!(
                "--split {part}: the prior records no validation split in its config.json \
                 (trained on every image of its data, or before splits were recorded); train \
                 it with --val-fraction > 0, or use --split all"
            ))
        }
        (_, Some(s)) if s.n_images != n_images => {
            return Err(format!(
                "--split {part}: the prior's split was drawn over {} images, but the data holds \
                 {n_images}: give the data file the prior was trained on",
                s.n_images
            ))
        }
        (Reference::Val, Some(s)) if s.val_indices.is_empty() => {
            return Err(
                "--split val: the prior was trained with --val-fraction 0 and holds out no \
                 image; use --split all"
                    .into(),
            )
        }
        (Reference::Val, Some(s)) => s.val_indices.clone(),
        (Reference::Train, Some(s)) => s.train_indices(),
    };
    if let Some(&bad) = idx.iter().find(|&&i| i >= n_images) {
        return Err(format!(
            "--split {part}: the recorded split names image {bad} of a {n_images}-image file"
        ));
    }
    // The same draw as before splits existed, so `--split all` reproduces older numbers.
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x7a11));
    idx.truncate(n);
    Ok(idx)
}

/// Density histogram (integrates to 1 over `edges`) of every pixel of every image; values
/// outside `[edges[0], edges[last]]` are counted in the end bins so that nothing disappears.
pub fn pixel_histogram(images: &[&[f32]], edges: &[f64]) -> Vec<f64> {
    let nb = edges.len().saturating_sub(1);
    let mut counts = vec![0f64; nb];
    if nb == 0 {
        return counts;
    }
    let mut total = 0f64;
    for img in images {
        for &v in img.iter() {
            let v = v as f64;
            if !v.is_finite() {
                continue;
            }
            let i = edges[1..].partition_point(|&e| e <= v).min(nb - 1);
            counts[i] += 1.0;
            total += 1.0;
        }
    }
    if total > 0.0 {
        for (c, w) in counts.iter_mut().zip(edges.windows(2)) {
            *c /= total * (w[1] - w[0]);
        }
    }
    counts
}

/// Sum of the pixel values (the total flux in the image's units).
pub fn total_flux(img: &[f32]) -> f64 {
    img.iter().map(|&v| v as f64).sum()
}

/// Azimuthally averaged power spectrum of a square `n × n` image: bin `k` holds the mean of
/// `|F(kx, ky)|² / n²` over the frequencies with `round(√(kx² + ky²)) = k`, `k = 0 … n/2`.
/// Frequencies beyond `n/2` (the corners) are dropped: they are not sampled in every direction.
pub fn radial_power_spectrum(img: &[f32], n: usize) -> Vec<f64> {
    assert_eq!(
        img.len(),
        n * n,
        "radial_power_spectrum: image is not n × n"
    );
    let mut planner = FftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n);
    let mut buf: Vec<Complex<f64>> = img.iter().map(|&v| Complex::new(v as f64, 0.0)).collect();
    for row in buf.chunks_mut(n) {
        fft.process(row);
    }
    let mut col = vec![Complex::new(0.0, 0.0); n];
    for x in 0..n {
        for y in 0..n {
            col[y] = buf[y * n + x];
        }
        fft.process(&mut col);
        for y in 0..n {
            buf[y * n + x] = col[y];
        }
    }
    let kmax = n / 2;
    let mut sum = vec![0f64; kmax + 1];
    let mut cnt = vec![0usize; kmax + 1];
    let freq = |i: usize| {
        if i <= n / 2 {
            i as f64
        } else {
            i as f64 - n as f64
        }
    };
    for y in 0..n {
        for x in 0..n {
            let k = (freq(x).hypot(freq(y))).round() as usize;
            if k <= kmax {
                sum[k] += buf[y * n + x].norm_sqr() / (n * n) as f64;
                cnt[k] += 1;
            }
        }
    }
    sum.iter()
        .zip(&cnt)
        .map(|(s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect()
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest distance between the empirical CDFs.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let mut a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let mut b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let v = a[i].min(b[j]);
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// The statistics of one image stack.
#[derive(Debug, Clone, Serialize)]
pub struct StackStats {
    pub n: usize,
    /// Pixel-value density over [`Comparison::edges`].
    pub histogram: Vec<f64>,
    pub flux: Vec<f64>,
    pub flux_mean: f64,
    pub flux_std: f64,
    /// Mean radial power spectrum, `k = 0 … n/2` cycles per image.
    pub power: Vec<f64>,
}

/// Samples against training images, with the numbers that say how close they are.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub edges: Vec<f64>,
    pub training: StackStats,
    pub samples: StackStats,
    /// KS distance between the two pixel-value distributions.
    pub ks_pixels: f64,
    /// KS distance between the two total-flux distributions.
    pub ks_flux: f64,
    /// `log10(P_samples / P_training)` per radial frequency bin.
    pub power_log_ratio: Vec<f64>,
    /// Largest `|log10 ratio|` over `k ≥ 1`.
    pub power_max_abs_log_ratio: f64,
}

fn stack_stats(images: &[&[f32]], n: usize, edges: &[f64]) -> StackStats {
    let flux: Vec<f64> = images.iter().map(|im| total_flux(im)).collect();
    let m = flux.len().max(1) as f64;
    let flux_mean = flux.iter().sum::<f64>() / m;
    let flux_std = (flux.iter().map(|f| (f - flux_mean).powi(2)).sum::<f64>() / m).sqrt();
    let mut power = vec![0f64; n / 2 + 1];
    for im in images {
        for (p, q) in power.iter_mut().zip(radial_power_spectrum(im, n)) {
            *p += q / m;
        }
    }
    StackStats {
        n: images.len(),
        histogram: pixel_histogram(images, edges),
        flux,
        flux_mean,
        flux_std,
        power,
    }
}

/// Compares two stacks of `n × n` images in the same units; `bins` histogram bins span the
/// common range of both.
pub fn compare(training: &[&[f32]], samples: &[&[f32]], n: usize, bins: usize) -> Comparison {
    let (lo, hi) = training
        .iter()
        .chain(samples)
        .flat_map(|im| im.iter())
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), &v| {
            (a.min(v as f64), b.max(v as f64))
        });
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let bins = bins.max(1);
    let edges: Vec<f64> = (0..=bins)
        .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
        .collect();
    let tr = stack_stats(training, n, &edges);
    let sa = stack_stats(samples, n, &edges);
    let pixels = |s: &[&[f32]]| -> Vec<f64> {
        s.iter()
            .flat_map(|im| im.iter().map(|&v| v as f64))
            .collect()
    };
    let ks_pixels = ks_statistic(&pixels(training), &pixels(samples));
    let ks_flux = ks_statistic(&tr.flux, &sa.flux);
    let power_log_ratio: Vec<f64> = sa
        .power
        .iter()
        .zip(&tr.power)
        .map(|(s, t)| (s / t).log10())
        .collect();
    let power_max_abs_log_ratio = power_log_ratio
        .iter()
        .skip(1)
        .filter(|v| v.is_finite())
        .fold(0f64, |a, v| a.max(v.abs()));
    Comparison {
        edges,
        training: tr,
        samples: sa,
        ks_pixels,
        ks_flux,
        power_log_ratio,
        power_max_abs_log_ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_a_cosine_sits_in_its_bin_and_obeys_parseval() {
        let n = 32;
        let (kx, ky) = (3.0, 4.0); // |k| = 5
        let img: Vec<f32> = (0..n * n)
            .map(|i| {
                let (y, x) = ((i / n) as f64, (i % n) as f64);
                (2.0 * std::f64::consts::PI * (kx * x + ky * y) / n as f64).cos() as f32
            })
            .collect();
        let p = radial_power_spectrum(&img, n);
        let peak = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(peak, 5);
        // Parseval: Σ|F|²/n² = Σx² = n²/2 for a unit cosine; it lies in the two bins (±k) of
        // radius 5, which also average over the other frequencies of that radius.
        let mut bins_at_5 = 0.0;
        for y in 0..n {
            for x in 0..n {
                let f = |i: usize| {
                    if i <= n / 2 {
                        i as f64
                    } else {
                        i as f64 - n as f64
                    }
                };
                if (f(x).hypot(f(y))).round() as usize == 5 {
                    bins_at_5 += 1.0;
                }
            }
        }
        let energy = p[5] * bins_at_5;
        let want = (n * n) as f64 / 2.0;
        assert!((energy - want).abs() < 1e-6 * want, "{energy} vs {want}");
        assert!(p.iter().enumerate().all(|(k, v)| k == 5 || *v < 1e-9));
    }

    #[test]
    fn histogram_is_a_density_and_counts_outliers() {
        let a: Vec<f32> = vec![0.05, 0.15, 0.15, 0.95, 7.0, -3.0];
        let edges: Vec<f64> = (0..=10).map(|i| i as f64 / 10.0).collect();
        let h = pixel_histogram(&[&a], &edges);
        let integral: f64 = h.iter().map(|d| d * 0.1).sum();
        assert!((integral - 1.0).abs() < 1e-12);
        // -3 clamps into bin 0 with 0.05, 7 and 0.95 share the last bin.
        assert!((h[0] * 0.1 * 6.0 - 2.0).abs() < 1e-9);
        assert!((h[1] * 0.1 * 6.0 - 2.0).abs() < 1e-9);
        assert!((h[9] * 0.1 * 6.0 - 2.0).abs() < 1e-9);
    }

    #[test]
    fn ks_statistic_of_known_cases() {
        let a: Vec<f64> = (0..100).map(|i| i as f64).collect();
        assert_eq!(ks_statistic(&a, &a), 0.0);
        let b: Vec<f64> = (0..100).map(|i| i as f64 + 1000.0).collect();
        assert_eq!(ks_statistic(&a, &b), 1.0);
        let c: Vec<f64> = (50..150).map(|i| i as f64).collect();
        assert!((ks_statistic(&a, &c) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn reference_indices_follow_the_split() {
        let split = crate::prior::data::validation_split(50, 0.2, 3).unwrap();
        let all = reference_indices(50, None, Reference::All, 100, 0).unwrap();
        assert_eq!(all.len(), 50);
        let mut v = reference_indices(50, Some(&split), Reference::Val, 100, 0).unwrap();
        v.sort_unstable();
        assert_eq!(v, split.val_indices);
        let t = reference_indices(50, Some(&split), Reference::Train, 5, 0).unwrap();
        assert_eq!(t.len(), 5);
        assert!(t.iter().all(|i| !split.val_indices.contains(i)));
        let e = reference_indices(50, None, Reference::Val, 10, 0).unwrap_err();
        assert!(e.contains("no validation split"), "{e}");
        let e = reference_indices(49, Some(&split), Reference::Val, 10, 0).unwrap_err();
        assert!(e.contains("50") && e.contains("49"), "{e}");
        let none = crate::prior::data::validation_split(50, 0.0, 0).unwrap();
        let e = reference_indices(50, Some(&none), Reference::Val, 10, 0).unwrap_err();
        assert!(e.contains("--val-fraction 0"), "{e}");
    }

    #[test]
    fn identical_stacks_compare_as_identical() {
        let n = 16;
        let imgs: Vec<Vec<f32>> = (0..4)
            .map(|s| (0..n * n).map(|i| ((i * (s + 3)) % 17) as f32).collect())
            .collect();
        let refs: Vec<&[f32]> = imgs.iter().map(|v| v.as_slice()).collect();
        let c = compare(&refs, &refs, n, 20);
        assert_eq!(c.ks_pixels, 0.0);
        assert_eq!(c.ks_flux, 0.0);
        assert!(c.power_max_abs_log_ratio < 1e-12);
        // A stack scaled by 2 has 4× the power at every k: log10 ratio 0.602.
        let twice: Vec<Vec<f32>> = imgs
            .iter()
            .map(|v| v.iter().map(|x| 2.0 * x).collect())
            .collect();
        let trefs: Vec<&[f32]> = twice.iter().map(|v| v.as_slice()).collect();
        let c = compare(&refs, &trefs, n, 20);
        assert!((c.power_max_abs_log_ratio - 4f64.log10()).abs() < 1e-9);
        assert!((c.samples.flux_mean - 2.0 * c.training.flux_mean).abs() < 1e-6);
    }
}
