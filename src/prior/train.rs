//! Denoising score matching: loss E‖σ_t s_θ(t, μ_t x₀ + σ_t z) + z‖², t ~ U[ε, 1], with AdamW,
//! warm-up, gradient clipping, an EMA of the weights and dihedral augmentation.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::checkpoint::{save_checkpoint, CheckpointConfig, TrainingInfo, FORMAT_VERSION};
use super::data::{dihedral, Dataset, ImageStack};
use super::model::{new_unet, num_params, UNet, UNetConfig, FOURIER_NAME};
use super::sde::{Sde, SdeConfig};
use super::{PriorError, Result};

/// Optimisation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f64,
    pub ema_decay: f64,
    /// Stop after this many optimisation steps (in total, counting resumed ones).
    pub max_steps: usize,
    /// Stop after this much wall time (minutes) in this run, if set.
    pub max_minutes: Option<f64>,
    pub t_eps: f64,
    pub seed: u64,
    pub augment: bool,
    pub log_every: usize,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 16,
            learning_rate: 2e-4,
            weight_decay: 0.0,
            warmup_steps: 200,
            grad_clip: 1.0,
            ema_decay: 0.999,
            max_steps: 20_000,
            max_minutes: None,
            t_eps: 1e-5,
            seed: 0,
            augment: true,
            log_every: 10,
            checkpoint_every: 250,
        }
    }
}

/// Standard normal tensor from a seeded RNG.
pub fn randn<R: Rng + ?Sized>(shape: &[usize], rng: &mut R, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// DSM loss (mean over pixels and batch) of `net` on clean images `x0` (B, 1, H, W), with
/// t and z drawn from `rng`.
pub fn dsm_loss<R: Rng + ?Sized>(
    net: &UNet,
    sde: &dyn Sde,
    x0: &Tensor,
    t_eps: f64,
    rng: &mut R,
) -> Result<Tensor> {
    let b = x0.dim(0)?;
    let dev = x0.device();
    let ts: Vec<f64> = (0..b).map(|_| rng.random_range(t_eps..1.0)).collect();
    let z = randn(x0.dims(), rng, dev)?;
    let mu: Vec<f32> = ts.iter().map(|&t| sde.mu(t) as f32).collect();
    let sg: Vec<f32> = ts.iter().map(|&t| sde.sigma(t) as f32).collect();
    let mu = Tensor::from_vec(mu, (b, 1, 1, 1), dev)?;
    let sg = Tensor::from_vec(sg, (b, 1, 1, 1), dev)?;
    let xt = (x0.broadcast_mul(&mu)? + z.broadcast_mul(&sg)?)?;
    let t = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), b, dev)?;
    let out = net.forward(&xt, &t)?;
    Ok((out + z)?.sqr()?.mean_all()?)
}

/// A random batch (B, 1, H, W) of `data`, optionally under random flips/rotations.
pub fn random_batch<R: Rng + ?Sized>(
    data: &ImageStack,
    batch: usize,
    augment: bool,
    rng: &mut R,
    device: &Device,
) -> Result<Tensor> {
    let (h, w) = (data.h, data.w);
    let mut v = Vec::with_capacity(batch * h * w);
    for _ in 0..batch {
        let i = rng.random_range(0..data.n);
        let img = data.image(i);
        if augment && h == w {
            let k: u8 = rng.random_range(0..8);
            v.extend_from_slice(&dihedral(img, h, k));
        } else {
            v.extend_from_slice(img);
        }
    }
    Ok(Tensor::from_vec(v, (batch, 1, h, w), device)?)
}

/// The training state: network, optimiser, EMA.
pub struct Trainer {
    pub net: UNet,
    pub net_config: UNetConfig,
    pub sde: SdeConfig,
    pub config: TrainConfig,
    varmap: VarMap,
    /// Trained variables sorted by name, with their EMA copies.
    vars: Vec<(String, Var)>,
    ema: Vec<Tensor>,
    opt: AdamW,
    pub step: usize,
    pub rng: StdRng,
    device: Device,
}

impl Trainer {
    pub fn new(
        net_config: &UNetConfig,
        sde: SdeConfig,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        let (net, varmap) = new_unet(net_config, config.seed, device)?;
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_str() != FOURIER_NAME)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let ema = vars
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let opt = AdamW::new(
            vars.iter().map(|(_, v)| v.clone()).collect(),
            ParamsAdamW {
                lr: config.learning_rate,
                weight_decay: config.weight_decay,
                ..Default::default()
            },
        )?;
        let rng = StdRng::seed_from_u64(config.seed.wrapping_add(0x5eed));
        Ok(Self {
            net,
            net_config: net_config.clone(),
            sde,
            config,
            varmap,
            vars,
            ema,
            opt,
            step: 0,
            rng,
            device: device.clone(),
        })
    }

    pub fn num_params(&self) -> usize {
        num_params(&self.varmap)
    }

    fn lr_at(&self, step: usize) -> f64 {
        let w = self.config.warmup_steps.max(1);
        self.config.learning_rate * ((step + 1) as f64 / w as f64).min(1.0)
    }

    /// One optimisation step on the clean batch `x0`; returns the loss before the update.
    pub fn train_step(&mut self, x0: &Tensor) -> Result<f64> {
        let loss = dsm_loss(&self.net, &self.sde, x0, self.config.t_eps, &mut self.rng)?;
        let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_v.is_finite() {
            return Err(PriorError::Candle(candle_core::Error::msg(format!(
                "training diverged: loss {loss_v} at step {}",
                self.step
            ))));
        }
        let mut grads = loss.backward()?;
        if self.config.grad_clip > 0.0 {
            let mut sq = 0.0f64;
            for (_, v) in &self.vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    sq += g
                        .sqr()?
                        .sum_all()?
                        .to_dtype(DType::F64)?
                        .to_scalar::<f64>()?;
                }
            }
            let norm = sq.sqrt();
            if norm > self.config.grad_clip {
                let f = self.config.grad_clip / (norm + 1e-12);
                for (_, v) in &self.vars {
                    if let Some(g) = grads.remove(v.as_tensor()) {
                        grads.insert(v.as_tensor(), g.affine(f, 0.0)?);
                    }
                }
            }
        }
        self.opt.set_learning_rate(self.lr_at(self.step));
        self.opt.step(&grads)?;
        // EMA warm-up: a short run would otherwise be dominated by the random initialisation.
        let d = self
            .config
            .ema_decay
            .min((1.0 + self.step as f64) / (10.0 + self.step as f64));
        for ((_, v), e) in self.vars.iter().zip(self.ema.iter_mut()) {
            *e = ((&*e * d)? + (v.as_tensor() * (1.0 - d))?)?.detach();
        }
        self.step += 1;
        Ok(loss_v)
    }

    fn fourier(&self) -> Tensor {
        self.varmap.data().lock().unwrap()[FOURIER_NAME]
            .as_tensor()
            .clone()
    }

    /// EMA weights (what checkpoints hold), including the fixed Fourier frequencies.
    pub fn ema_weights(&self) -> HashMap<String, Tensor> {
        let mut m: HashMap<String, Tensor> = self
            .vars
            .iter()
            .zip(&self.ema)
            .map(|((k, _), e)| (k.clone(), e.clone()))
            .collect();
        m.insert(FOURIER_NAME.to_string(), self.fourier());
        m
    }

    /// Raw (optimised) weights.
    pub fn raw_weights(&self) -> HashMap<String, Tensor> {
        let mut m: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        m.insert(FOURIER_NAME.to_string(), self.fourier());
        m
    }

    /// Writes `train_state.safetensors` (raw + EMA weights) and `train_state.json` (step).
    pub fn save_state(&self, dir: &Path) -> Result<()> {
        let mut m = HashMap::new();
        for (k, v) in self.raw_weights() {
            m.insert(format!("raw.{k}"), v.to_device(&Device::Cpu)?);
        }
        for (k, v) in self.ema_weights() {
            m.insert(format!("ema.{k}"), v.to_device(&Device::Cpu)?);
        }
        let p = dir.join("train_state.safetensors");
        let tmp = dir.join(".train_state.safetensors.tmp");
        candle_core::safetensors::save(&m, &tmp).map_err(|e| PriorError::Weights {
            path: tmp.clone(),
            msg: e.to_string(),
        })?;
        std::fs::rename(&tmp, &p).map_err(|source| PriorError::Io { path: p, source })?;
        let j = serde_json::json!({ "step": self.step });
        let jp = dir.join("train_state.json");
        std::fs::write(&jp, j.to_string()).map_err(|source| PriorError::Io { path: jp, source })
    }

    /// Restores weights, EMA and step from [`Trainer::save_state`] output. The AdamW moments
    /// are not stored (candle keeps them private), so they restart with a fresh warm-up.
    pub fn load_state(&mut self, dir: &Path) -> Result<()> {
        let p = dir.join("train_state.safetensors");
        let bytes = std::fs::read(&p).map_err(|source| PriorError::Io {
            path: p.clone(),
            source,
        })?;
        let m = candle_core::safetensors::load_buffer(&bytes, &self.device).map_err(|e| {
            PriorError::Weights {
                path: p.clone(),
                msg: e.to_string(),
            }
        })?;
        let get = |k: &str, like: &Tensor| -> Result<Tensor> {
            let t = m.get(k).ok_or_else(|| PriorError::Mismatch {
                path: p.clone(),
                msg: format!("missing '{k}' (was it written by another network config?)"),
            })?;
            if t.dims() != like.dims() {
                return Err(PriorError::Mismatch {
                    path: p.clone(),
                    msg: format!("'{k}' has shape {:?}, expected {:?}", t.dims(), like.dims()),
                });
            }
            Ok(t.clone())
        };
        for ((k, v), e) in self.vars.iter().zip(self.ema.iter_mut()) {
            v.set(&get(&format!("raw.{k}"), v.as_tensor())?)?;
            *e = get(&format!("ema.{k}"), e)?;
        }
        let f = self.fourier();
        let fw = get(&format!("raw.{FOURIER_NAME}"), &f)?;
        self.varmap.data().lock().unwrap()[FOURIER_NAME].set(&fw)?;
        let jp = dir.join("train_state.json");
        let js = std::fs::read_to_string(&jp).map_err(|source| PriorError::Io {
            path: jp.clone(),
            source,
        })?;
        let v: serde_json::Value = serde_json::from_str(&js).map_err(|e| PriorError::Config {
            path: jp.clone(),
            msg: e.to_string(),
        })?;
        self.step = v["step"].as_u64().unwrap_or(0) as usize;
        // Fresh moments need a fresh warm-up; shift the schedule so it restarts here.
        self.config.warmup_steps += self.step;
        self.rng = StdRng::seed_from_u64(
            self.config
                .seed
                .wrapping_add(0x5eed)
                .wrapping_add(self.step as u64),
        );
        Ok(())
    }
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
    pub wall_time_s: f64,
    pub out_dir: PathBuf,
}

fn write_checkpoint(
    trainer: &Trainer,
    dataset: &Dataset,
    out: &Path,
    final_loss: f64,
    wall: f64,
) -> Result<()> {
    let pp = &dataset.preprocess;
    let cfg = CheckpointConfig {
        format_version: FORMAT_VERSION,
        network: trainer.net_config.clone(),
        sde: trainer.sde,
        image_size: trainer.net_config.image_size,
        t_eps: trainer.config.t_eps,
        normalisation: dataset.normalisation,
        training: TrainingInfo {
            data: dataset.source.display().to_string(),
            n_images: dataset.images.n,
            preprocess: format!(
                "central crop {}, {:?} resize to {}², {:?} normalisation",
                pp.crop
                    .map(|c| format!("{c}²"))
                    .unwrap_or_else(|| "to square".into()),
                pp.resample,
                pp.size,
                pp.norm
            ),
            steps: trainer.step,
            batch_size: trainer.config.batch_size,
            learning_rate: trainer.config.learning_rate,
            ema_decay: trainer.config.ema_decay,
            seed: trainer.config.seed,
            final_loss,
            wall_time_s: wall,
            num_params: trainer.num_params(),
        },
    };
    save_checkpoint(out, &cfg, &trainer.ema_weights())?;
    trainer.save_state(out)
}

fn plot_loss(csv: &Path, png: &Path) {
    let Ok(text) = std::fs::read_to_string(csv) else {
        return;
    };
    let pts: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    if pts.len() < 2 {
        return;
    }
    // A plot failure must never stop training.
    let _ = crate::report::plot_util::line_plot(
        png,
        "Denoising score-matching loss",
        "step",
        "loss (per pixel)",
        &[crate::report::plot_util::Series {
            name: "DSM loss",
            points: &pts,
            color: plotters::style::BLUE,
        }],
        true,
    );
}

/// Trains (or resumes training of) a score model on `dataset`, writing checkpoints,
/// `loss.csv` and `loss.png` to `out`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    dataset: &Dataset,
    net_config: &UNetConfig,
    sde: SdeConfig,
    config: TrainConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    show_progress: bool,
) -> Result<TrainSummary> {
    std::fs::create_dir_all(out).map_err(|source| PriorError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    if dataset.images.h != net_config.image_size || dataset.images.w != net_config.image_size {
        return Err(PriorError::Data {
            path: dataset.source.clone(),
            msg: format!(
                "images are {}×{}, network expects {}²",
                dataset.images.h, dataset.images.w, net_config.image_size
            ),
        });
    }
    let mut trainer = Trainer::new(net_config, sde, config.clone(), device)?;
    let csv = out.join("loss.csv");
    if resume {
        trainer.load_state(out)?;
    } else {
        std::fs::write(&csv, "step,loss,lr,images_per_s\n").map_err(|source| PriorError::Io {
            path: csv.clone(),
            source,
        })?;
    }
    let mut csv_f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&csv)
        .map_err(|source| PriorError::Io {
            path: csv.clone(),
            source,
        })?;
    let start_step = trainer.step;
    let total = config.max_steps.saturating_sub(start_step);
    let pb = if show_progress {
        let pb = ProgressBar::new(total as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} step  {msg}  eta {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let t0 = Instant::now();
    let mut window = Vec::new();
    let mut last_loss = f64::NAN;
    let mut t_log = Instant::now();
    let mut imgs_since = 0usize;
    let mut rng_data = StdRng::seed_from_u64(config.seed.wrapping_add(start_step as u64));
    while trainer.step < config.max_steps {
        if let Some(m) = config.max_minutes {
            if t0.elapsed().as_secs_f64() > m * 60.0 {
                break;
            }
        }
        let x0 = random_batch(
            &dataset.images,
            config.batch_size,
            config.augment,
            &mut rng_data,
            device,
        )?;
        let l = trainer.train_step(&x0)?;
        window.push(l);
        imgs_since += config.batch_size;
        pb.inc(1);
        if trainer.step % config.log_every.max(1) == 0 {
            last_loss = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            let ips = imgs_since as f64 / t_log.elapsed().as_secs_f64();
            t_log = Instant::now();
            imgs_since = 0;
            let lr = trainer.lr_at(trainer.step - 1);
            let _ = writeln!(csv_f, "{},{last_loss:.6},{lr:.3e},{ips:.2}", trainer.step);
            let _ = csv_f.flush();
            pb.set_message(format!("loss {last_loss:.4}  {ips:.1} img/s"));
        }
        if trainer.step % config.checkpoint_every.max(1) == 0 {
            write_checkpoint(
                &trainer,
                dataset,
                out,
                last_loss,
                t0.elapsed().as_secs_f64(),
            )?;
            plot_loss(&csv, &out.join("loss.png"));
        }
    }
    if !window.is_empty() {
        last_loss = window.iter().sum::<f64>() / window.len() as f64;
    }
    pb.finish();
    let wall = t0.elapsed().as_secs_f64();
    write_checkpoint(&trainer, dataset, out, last_loss, wall)?;
    plot_loss(&csv, &out.join("loss.png"));
    Ok(TrainSummary {
        steps: trainer.step,
        final_loss: last_loss,
        wall_time_s: wall,
        out_dir: out.to_path_buf(),
    })
}
