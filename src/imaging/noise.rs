//! Visibility noise from the data themselves. Archive weights are often only relative (the
//! 3C 273 file has WEIGHT = 2 everywhere), so the likelihood needs an absolute σ: the scatter of
//! successive differences on each baseline and channel measures it, because the sky signal
//! changes little between neighbouring integrations while the noise is independent.
//!
//! For samples `k, k+1` of one baseline and channel, `d = (V_{k+1} − V_k)/√(1/w_k + 1/w_{k+1})`
//! has real and imaginary parts of variance `f` if the true per-component variance of a sample
//! is `f / w`. `f` is estimated robustly (1.4826 × the median absolute deviation).

use std::collections::HashMap;

use ms_io::VisChunk;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseEstimate {
    /// Multiply `1/w` by this to get the per-component variance of a sample.
    pub weight_factor: f64,
    /// Differences the estimate rests on.
    pub n_pairs: usize,
}

impl NoiseEstimate {
    /// σ (per real component) of a sample of weight `w`.
    pub fn sigma(&self, w: f32) -> f32 {
        (self.weight_factor / w as f64).sqrt() as f32
    }
}

fn mad_sigma(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let med = values[mid];
    let mut dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    dev.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    1.4826 * dev[mid]
}

/// (spectral window, antenna 1, antenna 2).
type Baseline = (usize, i32, i32);
/// (time, chunk index, row in chunk).
type RowRef = (f64, usize, usize);

/// Returns `None` when fewer than 10 usable pairs exist (e.g. a single integration).
pub fn estimate_noise(chunks: &[VisChunk]) -> Option<NoiseEstimate> {
    // (chunk, row) per (spw, baseline), in time order within each chunk.
    let mut series: HashMap<Baseline, Vec<RowRef>> = HashMap::new();
    for (ci, c) in chunks.iter().enumerate() {
        for r in 0..c.n_rows() {
            let (a1, a2) = (c.antenna1[r], c.antenna2[r]);
            if a1 == a2 {
                continue;
            }
            series
                .entry((c.spw, a1, a2))
                .or_default()
                .push((c.time[r], ci, r));
        }
    }
    let mut d = Vec::new();
    for rows in series.values_mut() {
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in rows.windows(2) {
            let (ca, ra) = (pair[0].1, pair[0].2);
            let (cb, rb) = (pair[1].1, pair[1].2);
            let (a, b) = (&chunks[ca], &chunks[cb]);
            if a.n_chan() != b.n_chan() {
                continue;
            }
            for ch in 0..a.n_chan() {
                let (ka, kb) = (ra * a.n_chan() + ch, rb * b.n_chan() + ch);
                let (wa, wb) = (a.weight[ka], b.weight[kb]);
                if wa > 0.0 && wb > 0.0 {
                    let s = (1.0 / wa as f64 + 1.0 / wb as f64).sqrt();
                    let diff = b.vis[kb] - a.vis[ka];
                    d.push(diff.re as f64 / s);
                    d.push(diff.im as f64 / s);
                }
            }
        }
    }
    if d.len() < 20 {
        return None;
    }
    let n_pairs = d.len() / 2;
    let s = mad_sigma(&mut d);
    Some(NoiseEstimate {
        weight_factor: s * s,
        n_pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_complex::Complex;
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    #[test]
    fn recovers_the_true_scale_of_relative_weights() {
        // 20 baselines × 200 integrations of a slowly varying signal; weights claim σ = 1 but
        // the true σ is 0.3 for half the baselines' weight-2 samples: f = 0.09.
        let mut rng = StdRng::seed_from_u64(1);
        let n = Normal::new(0.0, 1.0).unwrap();
        let mut c = VisChunk {
            freq: vec![1e9],
            ..Default::default()
        };
        for b in 0..20 {
            let w = if b % 2 == 0 { 1.0f32 } else { 2.0 };
            let sigma = (0.09 / w as f64).sqrt();
            for t in 0..200 {
                let signal = Complex::new(5.0 + 0.001 * t as f32, -2.0);
                let noise = Complex::new(
                    (sigma * n.sample(&mut rng)) as f32,
                    (sigma * n.sample(&mut rng)) as f32,
                );
                c.uvw.push([0.0; 3]);
                c.antenna1.push(0);
                c.antenna2.push(b + 1);
                c.time.push(t as f64 * 10.0);
                c.vis.push(signal + noise);
                c.weight.push(w);
            }
        }
        let est = estimate_noise(&[c]).unwrap();
        assert_eq!(est.n_pairs, 20 * 199);
        assert!(
            (est.weight_factor / 0.09 - 1.0).abs() < 0.05,
            "estimated factor {} vs 0.09",
            est.weight_factor
        );
        assert!((est.sigma(2.0) - 0.2121).abs() < 0.01);
    }

    #[test]
    fn single_integration_gives_none() {
        let c = VisChunk {
            uvw: vec![[0.0; 3]; 3],
            antenna1: vec![0, 0, 1],
            antenna2: vec![1, 2, 2],
            time: vec![0.0; 3],
            freq: vec![1e9],
            vis: vec![Complex::new(1.0, 0.0); 3],
            weight: vec![1.0; 3],
            spw: 0,
        };
        assert!(estimate_noise(&[c]).is_none());
    }
}
