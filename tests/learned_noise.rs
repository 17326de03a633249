//! The learned (score-based) noise likelihood on correlated noise (white noise convolved with a
//! small kernel, like drizzled HST noise): a tiny noise score network trained here, checked
//! first against the analytic score of that Gaussian noise, then used in the posterior sampler.
//! Its posteriors must be calibrated — coverage of the truth and χ² with the true covariance —
//! where a white Gaussian likelihood with the right pixel σ is not; the exact correlated
//! Gaussian likelihood is the reference.

use candle_core::{Device, Result as CResult, Tensor};
use interf_image::likelihood::{
    GaussianLikelihood, LearnedNoiseLikelihood, LikelihoodError, LikelihoodScore,
};
use interf_image::operator::ForwardOperator;
use interf_image::prior::sde::{Sde, SdeConfig, VeSde};
use interf_image::prior::ScoreModel;
use interf_image::sample::posterior::{sample_posterior, Method, PosteriorOptions, PriorScore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const N: usize = 16;
/// Separable kernel [A, 1, A]: neighbour correlation 2A/(1+2A²) = 0.44 along each axis.
const A: f64 = 0.25;
const SIGMA_N: f64 = 0.5;

/// One correlated noise image of `side²`: white noise on (side+2)² convolved ("valid") with
/// the kernel, so the noise is stationary up to the edges; scaled to pixel std SIGMA_N.
fn noise_image(side: usize, rng: &mut StdRng) -> Vec<f32> {
    let m = side + 2;
    let w: Vec<f64> = (0..m * m).map(|_| rng.sample(StandardNormal)).collect();
    let k = [A, 1.0, A];
    let norm = SIGMA_N / (1.0 + 2.0 * A * A);
    let mut out = vec![0.0f32; side * side];
    for i in 0..side {
        for j in 0..side {
            let mut s = 0.0;
            for (di, ki) in k.iter().enumerate() {
                for (dj, kj) in k.iter().enumerate() {
                    s += ki * kj * w[(i + di) * m + j + dj];
                }
            }
            out[i * side + j] = (s * norm) as f32;
        }
    }
    out
}

fn correlated_noise(rng: &mut StdRng) -> Vec<f32> {
    noise_image(N, rng)
}

/// The noise covariance, dense (N² × N²).
fn covariance() -> Vec<f64> {
    let c1 = |d: usize| match d {
        0 => 1.0 + 2.0 * A * A,
        1 => 2.0 * A,
        2 => A * A,
        _ => 0.0,
    };
    let norm = SIGMA_N / (1.0 + 2.0 * A * A);
    let n2 = N * N;
    let mut c = vec![0.0; n2 * n2];
    for p in 0..n2 {
        for q in 0..n2 {
            let (dy, dx) = ((p / N).abs_diff(q / N), (p % N).abs_diff(q % N));
            c[p * n2 + q] = norm * norm * c1(dy) * c1(dx);
        }
    }
    c
}

fn cholesky(p: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j {
                (p[i * n + i] - s).sqrt()
            } else {
                (p[i * n + j] - s) / l[j * n + j]
            };
        }
    }
    l
}

fn solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    x
}

/// `(C + v I)⁻¹ b` for each of the vectors in `bs`.
fn solve_shifted(c: &[f64], v: f64, bs: &[f32]) -> Vec<f32> {
    let n2 = N * N;
    let mut m = c.to_vec();
    (0..n2).for_each(|i| m[i * n2 + i] += v);
    let l = cholesky(&m, n2);
    bs.chunks(n2)
        .flat_map(|b| {
            let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            solve(&l, n2, &b).into_iter().map(|v| v as f32)
        })
        .collect()
}

struct Identity;

impl ForwardOperator for Identity {
    fn image_shape(&self) -> [usize; 2] {
        [N, N]
    }
    fn data_len(&self) -> usize {
        N * N
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
    }
    fn adjoint(&self, r: &[f32], x: &mut [f32]) {
        x.copy_from_slice(r);
    }
    fn diag_aat(&self) -> Vec<f32> {
        vec![1.0; N * N]
    }
}

/// x ~ N(M0, S0² I): under the VE SDE p_t = N(M0, (S0² + σ_t²) I).
const M0: f64 = 0.0;
const S0: f64 = 1.0;

struct GaussianPrior {
    sde: SdeConfig,
}

impl PriorScore for GaussianPrior {
    fn score(&self, x: &Tensor, t: f64) -> CResult<Tensor> {
        let v = S0 * S0 + self.sde.sigma(t).powi(2);
        x.affine(-1.0 / v, M0 / v)
    }
    fn sde(&self) -> &SdeConfig {
        &self.sde
    }
    fn image_size(&self) -> usize {
        N
    }
    fn t_eps(&self) -> f64 {
        1e-5
    }
    fn device(&self) -> &Device {
        &Device::Cpu
    }
}

/// The exact likelihood of the correlated Gaussian noise, convolved like the others:
/// `(μ² C + σ_t² I)⁻¹ (μ y − x_t)` (identity operator).
struct ExactCorrelated {
    c: Vec<f64>,
    y: Vec<f32>,
}

impl LikelihoodScore for ExactCorrelated {
    fn image_shape(&self) -> [usize; 2] {
        [N, N]
    }
    fn score_t(
        &self,
        x: &[f32],
        mu: f32,
        sigma: f32,
        g: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        self.score_t_batch(x, mu, sigma, g)
    }
    fn score_t_batch(
        &self,
        xs: &[f32],
        mu: f32,
        sigma: f32,
        gs: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        let (mu, s) = (mu as f64, sigma as f64);
        let c: Vec<f64> = self.c.iter().map(|v| v * mu * mu).collect();
        let r: Vec<f32> = xs
            .chunks(N * N)
            .flat_map(|x| x.iter().zip(&self.y).map(|(xi, yi)| mu as f32 * yi - xi))
            .collect();
        gs.copy_from_slice(&solve_shifted(&c, s * s, &r));
        Ok(())
    }
    fn score_x0_batch(&self, xs: &[f32], gs: &mut [f32]) -> Result<(), LikelihoodError> {
        self.score_t_batch(xs, 1.0, 0.0, gs)
    }
    fn data_noise_scale(&self) -> f64 {
        SIGMA_N
    }
    fn reduced_chi2(&self, _x: &[f32]) -> f64 {
        unimplemented!("not used")
    }
}

/// The committed noise model: `interf-image noise train` on white noise convolved with the
/// kernel (see [`regenerate_noise_model`] for the exact command), checked against the analytic
/// score below before it is used.
const MODEL_DIR: &str = "tests/data/learned_noise_corr16";

fn load_model() -> ScoreModel {
    ScoreModel::load(std::path::Path::new(MODEL_DIR), &Device::Cpu).unwrap()
}

/// A linear functional of the image as a sparse row `(pixel, coefficient)`.
type SparseRow = Vec<(usize, f64)>;

/// Linear functionals of the image whose posterior coverage is checked, as sparse rows:
/// pixels; horizontal neighbour differences (high-pass: the correlated noise is weak there);
/// 4×4 block means (low-pass: the noise is strong there).
fn functionals() -> [(&'static str, Vec<SparseRow>); 3] {
    let pixels = (0..N * N).map(|p| vec![(p, 1.0)]).collect();
    let diffs = (0..N)
        .flat_map(|i| (0..N - 1).map(move |j| vec![(i * N + j + 1, 1.0), (i * N + j, -1.0)]))
        .collect();
    let b = 4;
    let blocks = (0..N / b)
        .flat_map(|bi| {
            (0..N / b).map(move |bj| {
                (0..b * b)
                    .map(|k| ((bi * b + k / b) * N + bj * b + k % b, 1.0 / (b * b) as f64))
                    .collect()
            })
        })
        .collect();
    [
        ("pixels", pixels),
        ("differences", diffs),
        ("4×4 means", blocks),
    ]
}

fn apply(f: &[(usize, f64)], x: &[f32]) -> f64 {
    f.iter().map(|&(i, c)| c * x[i] as f64).sum()
}

/// Over the functionals: how many have the truth inside the central 68.3 % interval of the
/// samples, and Σ z² with z = (truth − sample mean)/sample std (a calibrated posterior has
/// mean z² ≈ 1; too narrow a posterior, more).
fn coverage(samples: &[Vec<f32>], truth: &[f32], fs: &[Vec<(usize, f64)>]) -> (usize, f64) {
    let (mut hit, mut z2) = (0, 0.0);
    for f in fs {
        let mut v: Vec<f64> = samples.iter().map(|s| apply(f, s)).collect();
        let t = apply(f, truth);
        let k = v.len() as f64;
        let m = v.iter().sum::<f64>() / k;
        let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (k - 1.0);
        z2 += (t - m).powi(2) / var;
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[(p * (v.len() - 1) as f64).round() as usize];
        if (q(0.1587)..=q(0.8413)).contains(&t) {
            hit += 1;
        }
    }
    (hit, z2)
}

/// The same for the closed-form Gaussian posterior (mean, dense covariance): |f·(t − m)| ≤ σ_f.
fn coverage_exact(mean: &[f64], cov: &[f64], truth: &[f32], fs: &[Vec<(usize, f64)>]) -> usize {
    let n2 = N * N;
    fs.iter()
        .filter(|f| {
            let d: f64 = f
                .iter()
                .map(|&(i, c)| c * (truth[i] as f64 - mean[i]))
                .sum();
            let v: f64 = f
                .iter()
                .flat_map(|&(i, a)| f.iter().map(move |&(j, b)| a * b * cov[i * n2 + j]))
                .sum();
            d.abs() <= v.sqrt()
        })
        .count()
}

/// Inverse of a symmetric positive-definite matrix from its Cholesky factor.
fn inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        for (i, v) in solve(l, n, &e).into_iter().enumerate() {
            inv[i * n + j] = v;
        }
    }
    inv
}

#[test]
fn learned_noise_likelihood_calibrates_correlated_noise() {
    let model = load_model();
    let c = covariance();
    let n2 = N * N;

    // 1. The learned noise score against the analytic one, −(C + ρ² rms² I)⁻¹ n, where the
    //    sampler evaluates it: at fresh noise plus white noise of std ρ·rms.
    let probe = LearnedNoiseLikelihood::new(Identity, vec![0.0; n2], [N, N], model).unwrap();
    let rms = probe.noise_rms();
    eprintln!("noise rms from the training set {rms:.4} (true {SIGMA_N})");
    assert!((rms / SIGMA_N - 1.0).abs() < 0.02);
    let mut rng = StdRng::seed_from_u64(77);
    let mut score_err = Vec::new();
    for rho in [0.02, 0.05, 0.1, 0.3, 1.0, 3.0] {
        let mut fresh: Vec<f32> = (0..32).flat_map(|_| correlated_noise(&mut rng)).collect();
        for v in fresh.iter_mut() {
            *v += (rho * rms * rng.sample::<f64, _>(StandardNormal)) as f32;
        }
        let mut got = vec![0.0f32; fresh.len()];
        probe.noise_score(&fresh, rho, &mut got).unwrap();
        // `want` holds +(C + ρ² rms²)⁻¹ n, the negated analytic score.
        let want = solve_shifted(&c, (rho * rms).powi(2), &fresh);
        let (mut e2, mut w2) = (0.0, 0.0);
        for (g, w) in got.iter().zip(&want) {
            e2 += ((g + w) as f64).powi(2);
            w2 += (*w as f64).powi(2);
        }
        let rel = (e2 / w2).sqrt();
        eprintln!("ρ = {rho}: relative error of the learned noise score {rel:.3}");
        score_err.push((rho, rel));
    }

    // 2. Posteriors for several truths drawn from the prior, and the closed-form posterior:
    //    precision I/S0² + C⁻¹, mean Σ_p (M0/S0² + C⁻¹ y).
    let prior = GaussianPrior {
        sde: SdeConfig::Ve(VeSde::new(1e-2, 10.0)),
    };
    let cl = cholesky(&c, n2);
    let cinv = inverse(&cl, n2);
    let mut prec = cinv.clone();
    (0..n2).for_each(|i| prec[i * n2 + i] += 1.0 / (S0 * S0));
    let post_cov = inverse(&cholesky(&prec, n2), n2);
    let opts = PosteriorOptions {
        method: Method::Cla,
        n_samples: 32,
        steps: 200,
        batch: 32,
        seed: 3,
        ..Default::default()
    };
    let fams = functionals();
    let names = ["learned", "white Gaussian", "exact correlated"];
    // Per likelihood: Σ χ²/N, then (hits, Σ z², trials) per functional family.
    let mut res = [(); 3].map(|_| (0.0f64, [(0usize, 0.0f64, 0usize); 3]));
    let mut exact_post = [(0usize, 0usize); 3];
    let n_truth = 4;
    for k in 0..n_truth {
        let truth: Vec<f32> = (0..n2)
            .map(|_| (M0 + S0 * rng.sample::<f64, _>(StandardNormal)) as f32)
            .collect();
        let noise = correlated_noise(&mut rng);
        let y: Vec<f32> = truth.iter().zip(&noise).map(|(a, b)| a + b).collect();
        let learned =
            LearnedNoiseLikelihood::new(Identity, y.clone(), [N, N], load_model()).unwrap();
        let white =
            GaussianLikelihood::new(Identity, y.clone(), &vec![SIGMA_N as f32; n2]).unwrap();
        let exact = ExactCorrelated {
            c: c.clone(),
            y: y.clone(),
        };
        let o = PosteriorOptions {
            seed: opts.seed + k as u64,
            ..opts.clone()
        };
        let t0 = std::time::Instant::now();
        let a = sample_posterior(&prior, &learned, &o, &interf_image::observe::Quiet).unwrap();
        let t1 = std::time::Instant::now();
        let b = sample_posterior(&prior, &white, &o, &interf_image::observe::Quiet).unwrap();
        let t2 = std::time::Instant::now();
        let e = sample_posterior(&prior, &exact, &o, &interf_image::observe::Quiet).unwrap();
        eprintln!(
            "truth {k}: sampling {:.1} s learned, {:.1} s white, {:.1} s exact",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            t2.elapsed().as_secs_f64()
        );
        for (r, s) in res.iter_mut().zip([&a, &b, &e]) {
            // χ² of y − x with the true covariance: a draw from the exact posterior makes
            // y − x distributed as the noise, so its mean is 1 per datum.
            for x in s {
                let d: Vec<f64> = y.iter().zip(x).map(|(a, b)| (a - b) as f64).collect();
                let z = solve(&cl, n2, &d);
                r.0 += d.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>() / n2 as f64;
            }
            for (slot, (_, f)) in r.1.iter_mut().zip(&fams) {
                let (h, z2) = coverage(s, &truth, f);
                slot.0 += h;
                slot.1 += z2;
                slot.2 += f.len();
            }
        }
        let rhs: Vec<f64> = (0..n2)
            .map(|i| M0 / (S0 * S0) + (0..n2).map(|j| cinv[i * n2 + j] * y[j] as f64).sum::<f64>())
            .collect();
        let mean: Vec<f64> = (0..n2)
            .map(|i| (0..n2).map(|j| post_cov[i * n2 + j] * rhs[j]).sum())
            .collect();
        for (slot, (_, f)) in exact_post.iter_mut().zip(&fams) {
            slot.0 += coverage_exact(&mean, &post_cov, &truth, f);
            slot.1 += f.len();
        }
    }
    let frac = |(h, t): (usize, usize)| h as f64 / t as f64;
    let chi2: Vec<f64> = res
        .iter()
        .map(|r| r.0 / (n_truth * opts.n_samples) as f64)
        .collect();
    let cover: Vec<[f64; 3]> = res
        .iter()
        .map(|r| r.1.map(|(h, _, t)| frac((h, t))))
        .collect();
    let zrms: Vec<[f64; 3]> = res
        .iter()
        .map(|r| r.1.map(|(_, z2, t)| (z2 / t as f64).sqrt()))
        .collect();
    for (((name, x2), cv), z) in names.iter().zip(&chi2).zip(&cover).zip(&zrms) {
        eprintln!(
            "{name:>16}: χ²/N (true C) {x2:.3}; 68.3% coverage / rms z: {} {:.3} / {:.2}, {} {:.3} / {:.2}, {} {:.3} / {:.2}",
            fams[0].0, cv[0], z[0], fams[1].0, cv[1], z[1], fams[2].0, cv[2], z[2]
        );
    }
    let ep = exact_post.map(frac);
    eprintln!(
        "closed-form posterior coverage: {} {:.3}, {} {:.3}, {} {:.3}",
        fams[0].0, ep[0], fams[1].0, ep[1], fams[2].0, ep[2]
    );

    // The noise model is the analytic score to ~10 % where the sampler uses it.
    for &(rho, rel) in &score_err {
        let tol = if rho < 0.05 { 0.5 } else { 0.2 };
        assert!(
            rel < tol,
            "learned noise score off by {rel:.2} at ρ = {rho}"
        );
    }
    // χ² with the true covariance: learned ≈ exact (≈ 1), white far off.
    let (l, w, e) = (chi2[0], chi2[1], chi2[2]);
    assert!((l - e).abs() < 0.15, "χ²/N learned {l:.3} vs exact {e:.3}");
    assert!(w > e + 1.0, "χ²/N white {w:.3} vs exact {e:.3}");
    // Calibration per family: the learned likelihood's rms z is the exact likelihood's (the
    // sampler's own small bias included) within 15 %; the white one is off on the low-pass
    // block means, where the noise is three times stronger than white noise of that σ.
    for k in 0..3 {
        let r = zrms[0][k] / zrms[2][k];
        assert!(
            (r - 1.0).abs() < 0.15,
            "{}: rms z learned/exact {r:.2}",
            fams[k].0
        );
        assert!(
            (cover[0][k] - cover[2][k]).abs() < 0.08,
            "{}: coverage",
            fams[k].0
        );
    }
    assert!(
        zrms[1][2] > 1.3 * zrms[2][2],
        "white likelihood: block-mean rms z {:.2} vs exact {:.2}",
        zrms[1][2],
        zrms[2][2]
    );
    let _ = score_err;
}

/// Writes the committed noise model: 250 correlated-noise images of 64² (seeded, the
/// generator above) through `interf-image noise train`. Run with
/// `cargo test --release --test learned_noise -- --ignored regenerate_noise_model`.
#[test]
#[ignore]
fn regenerate_noise_model() {
    let (count, side) = (250, 64);
    let mut rng = StdRng::seed_from_u64(2026);
    let mut data = Vec::with_capacity(count * side * side);
    for _ in 0..count {
        data.extend(noise_image(side, &mut rng));
    }
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("corr_noise_64.npy");
    interf_image::prior::data::write_npy_f32(
        &npy,
        &interf_image::prior::data::ImageStack::new(count, side, side, data),
    )
    .unwrap();
    let out = std::path::Path::new(MODEL_DIR);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(["noise", "train", "--noise-cutouts"])
        .arg(&npy)
        .args([
            "--size",
            "16",
            "--preset",
            "tiny",
            "--steps",
            "2500",
            "--batch",
            "32",
            "--lr",
            "2e-3",
            "--warmup",
            "100",
            "--ema",
            "0.999",
            "--augment",
            "--seed",
            "1",
            "--checkpoint-every",
            "500",
            "--quiet",
            "--out",
        ])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    // Only the checkpoint is kept in the repository.
    for f in ["train_state.safetensors", "train_state.json", "loss.png"] {
        let _ = std::fs::remove_file(out.join(f));
    }
}
