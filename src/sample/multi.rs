//! Posterior sampling for many data sets at once (calibration runs): the chains of several data
//! sets share one network batch, while each chain is driven by the likelihood of its own data.
//!
//! The network dominates the cost on a CPU and is most efficient on full batches; a calibration
//! run with few samples per data set would leave it half-idle if each data set were sampled on
//! its own. Chains are laid out data set after data set (`chain = set · S + j`) and cut into
//! batches of `batch` chains, so a batch may hold the tail of one data set and the head of the
//! next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::posterior::{
    dps_scores, end_time, stability_floor, FreeFraction, Method, PriorScore, FREE_FRACTION_EVERY,
    INTERRUPTED,
};
use super::sde_samplers::{euler_maruyama, gaussian_like, predictor_corrector};
use crate::likelihood::LikelihoodScore;
use crate::prior::sde::Sde;

#[derive(Debug, Clone)]
pub struct MultiOptions {
    pub method: Method,
    /// Samples drawn for each data set.
    pub samples_per_set: usize,
    /// Reverse-SDE steps.
    pub steps: usize,
    /// Chains per network batch.
    pub batch: usize,
    pub seed: u64,
    /// Weight on the likelihood score (1 = the Bayesian posterior).
    pub alpha: f32,
    /// Langevin corrector `(snr, steps per time)`; `None` for plain Euler–Maruyama.
    pub corrector: Option<(f64, usize)>,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Draws `samples_per_set` posterior samples for each data set (one likelihood each; α is
/// applied here, on top of any weight inside a likelihood). The reverse diffusion stops where
/// the smallest `data_noise_scale` of the likelihoods asks. Each finished
/// sample is handed to `on_sample(set, index_in_set, image)` (normalised units, row-major), in
/// chain order, so that a caller can summarise a data set as soon as its last sample arrives and
/// never hold all samples. Same seed, same samples, whatever the thread count.
pub fn sample_many<L, P, F>(
    model: &P,
    liks: &[L],
    opts: &MultiOptions,
    progress: Option<&ProgressBar>,
    mut on_sample: F,
) -> Result<()>
where
    L: LikelihoodScore,
    P: PriorScore + ?Sized,
    F: FnMut(usize, usize, Vec<f32>) -> Result<()>,
{
    let side = model.image_size();
    let npix = side * side;
    if let Some(l) = liks.iter().find(|l| l.image_shape() != [side, side]) {
        let [ny, nx] = l.image_shape();
        return Err(candle_core::Error::Msg(format!(
            "a likelihood's image is {ny}×{nx} but the prior works on {side}×{side}"
        )));
    }
    let per = opts.samples_per_set;
    let total = liks.len() * per;
    if total == 0 || opts.steps == 0 {
        return Ok(());
    }
    let sde = model.sde();
    let t_eps = model.t_eps();
    let noise_scale = liks
        .iter()
        .map(|l| l.data_noise_scale())
        .fold(f64::INFINITY, f64::min);
    let t_end = end_time(sde, t_eps, noise_scale);
    let alpha = opts.alpha as f64;
    let batch = opts.batch.max(1);
    let mut start = 0usize;
    let mut batch_index = 0u64;
    while start < total {
        let b = batch.min(total - start);
        // Which data set each chain of this batch belongs to.
        let sets: Vec<usize> = (start..start + b).map(|c| c / per).collect();
        // Each batch has its own stream derived from the seed (as `sample_posterior` does).
        let mut rng = StdRng::seed_from_u64(
            opts.seed
                .wrapping_add(batch_index.wrapping_mul(0x9E37_79B9)),
        );
        let zeros = Tensor::zeros((b, 1, side, side), DType::F32, model.device())?;
        let x_init = gaussian_like(&zeros, &mut rng)?.affine(sde.prior_std(), 0.0)?;
        // Per-chain likelihood scores at (μ, σ), each chain with its own data set's.
        let like_batch = |x: &Tensor, mu: f64, sigma: f64| -> Result<Tensor> {
            let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let mut g = vec![0.0f32; xs.len()];
            g.par_chunks_mut(npix)
                .zip(xs.par_chunks(npix))
                .zip(sets.par_iter())
                .try_for_each(|((gc, xc), &s)| liks[s].score_t(xc, mu as f32, sigma as f32, gc))
                .map_err(candle_core::Error::wrap)?;
            Tensor::from_vec(g, x.shape(), x.device())
        };
        // The same at a clean image, each chain widened by its own r (DPS).
        let like_widened = |x: &Tensor, r: &[f32]| -> Result<Tensor> {
            let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let mut g = vec![0.0f32; xs.len()];
            g.par_chunks_mut(npix)
                .zip(xs.par_chunks(npix))
                .zip(sets.par_iter().zip(r.par_iter()))
                .try_for_each(|((gc, xc), (&s, &rb))| liks[s].score_t(xc, 1.0, rb, gc))
                .map_err(candle_core::Error::wrap)?;
            Tensor::from_vec(g, x.shape(), x.device())
        };
        let free = FreeFraction::new(FREE_FRACTION_EVERY, stability_floor(sde, opts.steps, t_end));
        let score = |x: &Tensor, t: f64| -> Result<Tensor> {
            if let Some(c) = &opts.cancel {
                if c.load(Ordering::Relaxed) {
                    return Err(candle_core::Error::Msg(INTERRUPTED.into()));
                }
            }
            let (prior, lik) = match opts.method {
                Method::Cla => (
                    model.score(x, t.max(t_eps))?,
                    like_batch(x, sde.mu(t), sde.sigma(t))?,
                ),
                Method::Dps => dps_scores(model, x, t, t.max(t_eps), &free, |x0, r| {
                    like_widened(x0, r)
                })?,
            };
            prior + lik.affine(alpha, 0.0)?
        };
        let x = match opts.corrector {
            None => euler_maruyama(&score, sde, &x_init, opts.steps, t_end, &mut rng, progress)?,
            Some((snr, n)) => predictor_corrector(
                &score, sde, &x_init, opts.steps, snr, n, t_end, &mut rng, progress,
            )?,
        };
        // As in `sample_posterior`: Tweedie's denoising only when the run stopped inside the
        // prior's trained range.
        let x0 = if t_end < t_eps {
            x
        } else {
            model.denoise(&x, t_eps)?
        };
        let flat: Vec<f32> = x0.flatten_all()?.to_vec1()?;
        for (k, img) in flat.chunks(npix).enumerate() {
            let c = start + k;
            on_sample(c / per, c % per, img.to_vec())?;
        }
        start += b;
        batch_index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::likelihood::GaussianLikelihood;
    use crate::prior::sde::{SdeConfig, VeSde};
    use candle_core::Device;

    /// x ~ N(m0, s0² I) per pixel: p_t = N(m0, (s0² + σ_t²) I) under the VE SDE.
    struct GaussianPrior {
        m0: f64,
        s0: f64,
        sde: SdeConfig,
    }

    impl PriorScore for GaussianPrior {
        fn score(&self, x: &Tensor, t: f64) -> Result<Tensor> {
            let v = self.s0 * self.s0 + self.sde.sigma(t).powi(2);
            x.affine(-1.0 / v, self.m0 / v)
        }
        fn sde(&self) -> &SdeConfig {
            &self.sde
        }
        fn image_size(&self) -> usize {
            4
        }
        fn t_eps(&self) -> f64 {
            1e-5
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
    }

    struct Identity(usize);

    impl crate::operator::ForwardOperator for Identity {
        fn image_shape(&self) -> [usize; 2] {
            [self.0, self.0]
        }
        fn data_len(&self) -> usize {
            self.0 * self.0
        }
        fn forward(&self, image: &[f32], data: &mut [f32]) {
            data.copy_from_slice(image);
        }
        fn adjoint(&self, data: &[f32], image: &mut [f32]) {
            image.copy_from_slice(data);
        }
        fn diag_aat(&self) -> Vec<f32> {
            vec![1.0; self.0 * self.0]
        }
    }

    /// Identity operator, one datum per pixel with noise σ: the posterior of each pixel is
    /// N((m0/s0² + y/σ²)/(1/s0² + 1/σ²), 1/(1/s0² + 1/σ²)). Each data set has its own y; the
    /// chains of a shared batch must each follow their own data set's posterior.
    #[test]
    fn each_chain_follows_its_own_data() {
        let (m0, s0, sy) = (0.0f64, 3.0f64, 0.5f64);
        let prior = GaussianPrior {
            m0,
            s0,
            sde: SdeConfig::Ve(VeSde::new(1e-3, 10.0)),
        };
        let ys = [-2.0f32, 0.0, 3.0];
        let liks: Vec<_> = ys
            .iter()
            .map(|&y| GaussianLikelihood::new(Identity(4), vec![y; 16], &[sy as f32; 16]).unwrap())
            .collect();
        for method in [Method::Cla, Method::Dps] {
            let opts = MultiOptions {
                method,
                samples_per_set: 100,
                steps: 300,
                batch: 70, // batches straddle data sets
                seed: 5,
                alpha: 1.0,
                corrector: None,
                cancel: None,
            };
            let mut acc = vec![Vec::<f64>::new(); ys.len()];
            let mut seen = vec![0usize; ys.len()];
            sample_many(&prior, &liks, &opts, None, |s, j, img| {
                assert_eq!(j, seen[s], "samples arrive in order");
                seen[s] += 1;
                acc[s].extend(img.iter().map(|&v| v as f64));
                Ok(())
            })
            .unwrap();
            let prec = 1.0 / (s0 * s0) + 1.0 / (sy * sy);
            let post_sd = (1.0 / prec).sqrt();
            for (s, &y) in ys.iter().enumerate() {
                let post_mean = (m0 / (s0 * s0) + y as f64 / (sy * sy)) / prec;
                let v = &acc[s];
                let n = v.len() as f64;
                let m = v.iter().sum::<f64>() / n;
                let sd = (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                eprintln!(
                    "{method:?} set {s}: mean {m:.3} vs {post_mean:.3}, sd {sd:.3} vs {post_sd:.3}"
                );
                // The convolved approximation is not exact for a Gaussian prior (it ignores the
                // prior's part of Var[x₀ | x_t]); the point here is that every chain follows its
                // own data set: the data sets' posteriors lie 4 and 6 σ apart.
                assert!((m - post_mean).abs() < 0.5 * post_sd, "set {s}: mean {m}");
                assert!((0.7..1.3).contains(&(sd / post_sd)), "set {s}: sd {sd}");
            }
        }
    }

    /// One data set in one batch is exactly what `sample_posterior` does: same seed, same
    /// samples (CLA and DPS, with and without the corrector).
    #[test]
    fn one_set_matches_sample_posterior() {
        use crate::sample::posterior::{sample_posterior, PosteriorOptions};
        let prior = GaussianPrior {
            m0: 0.2,
            s0: 0.5,
            sde: SdeConfig::Ve(VeSde::new(1e-3, 5.0)),
        };
        let y: Vec<f32> = (0..16).map(|k| (k as f32 * 0.37).sin()).collect();
        let lik = GaussianLikelihood::new(Identity(4), y, &[0.3f32; 16]).unwrap();
        for (method, corrector) in [
            (Method::Cla, None),
            (Method::Dps, None),
            (Method::Cla, Some((0.16, 1))),
        ] {
            let popts = PosteriorOptions {
                method,
                n_samples: 12,
                steps: 40,
                batch: 12,
                seed: 9,
                alpha: 0.8,
                corrector,
                cancel: None,
            };
            let want = sample_posterior(&prior, &lik, &popts, None).unwrap();
            let mopts = MultiOptions {
                method,
                samples_per_set: 12,
                steps: 40,
                batch: 12,
                seed: 9,
                alpha: 0.8,
                corrector,
                cancel: None,
            };
            let mut got = Vec::new();
            sample_many(
                &prior,
                std::slice::from_ref(&lik),
                &mopts,
                None,
                |_, _, img| {
                    got.push(img);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                for (u, v) in a.iter().zip(b) {
                    assert!(
                        (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                        "{method:?}: {u} vs {v}"
                    );
                }
            }
        }
    }
}
