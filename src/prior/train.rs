//! Denoising score matching: loss E‖σ_t s_θ(t, μ_t x₀ + σ_t z) + z‖², t ~ U[ε, 1], with AdamW,
//! warm-up, gradient clipping, an EMA of the weights, dihedral and shift augmentation, and a
//! held-out validation split whose DSM loss (EMA weights, fixed draws) is logged at every
//! checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::observe::Observer;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    save_checkpoint, CheckpointConfig, TrainingInfo, CONFIG_FILE, FORMAT_VERSION,
};
use super::data::{dihedral, shift_zero, validation_split, Dataset, ImageStack, Split};
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
    /// Fraction of the input images held out for validation (0: none). The library default
    /// is 0 (the learned-noise trainer shares this code); `prior train` defaults to 0.1.
    #[serde(default)]
    pub val_fraction: f64,
    /// Seed of the validation split and of the validation loss's fixed noise draws; kept
    /// apart from `seed` so that a new training seed never reshuffles the split.
    #[serde(default)]
    pub split_seed: u64,
    /// Most validation images the validation loss is evaluated on (its cost per checkpoint).
    #[serde(default = "default_val_max")]
    pub val_max: usize,
    /// Random integer shifts in [−shift_px, shift_px] along each axis, with zero fill, on
    /// top of the dihedral symmetries (only when `augment`). 0 in the library (noise
    /// cutouts must not get zero borders); `prior train` defaults to 2.
    #[serde(default)]
    pub shift_px: usize,
}

fn default_val_max() -> usize {
    256
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
            val_fraction: 0.0,
            split_seed: 0,
            val_max: default_val_max(),
            shift_px: 0,
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
    let ts: Vec<f64> = (0..b).map(|_| rng.random_range(t_eps..1.0)).collect();
    let z = randn(x0.dims(), rng, x0.device())?;
    dsm_loss_at(net, sde, x0, &ts, &z)
}

/// DSM loss (mean over pixels and batch) of `net` on `x0` (B, 1, H, W) at the given times
/// `ts` (one per image) and noise `z` (shaped like `x0`).
pub fn dsm_loss_at(
    net: &UNet,
    sde: &dyn Sde,
    x0: &Tensor,
    ts: &[f64],
    z: &Tensor,
) -> Result<Tensor> {
    let b = x0.dim(0)?;
    let dev = x0.device();
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
    random_batch_shifted(data, batch, augment, 0, rng, device)
}

/// A random batch (B, 1, H, W) of `data`; with `augment`, each image under a random
/// symmetry of the square (square images) and then a random integer shift in
/// [−shift_px, shift_px]² with zero fill ([`shift_zero`]). With `shift_px = 0` it draws
/// exactly what [`random_batch`] always drew, so older seeded runs are reproduced.
pub fn random_batch_shifted<R: Rng + ?Sized>(
    data: &ImageStack,
    batch: usize,
    augment: bool,
    shift_px: usize,
    rng: &mut R,
    device: &Device,
) -> Result<Tensor> {
    let (h, w) = (data.h, data.w);
    let mut v = Vec::with_capacity(batch * h * w);
    let s = shift_px as i64;
    for _ in 0..batch {
        let i = rng.random_range(0..data.n);
        let img = data.image(i);
        let mut out = if augment && h == w {
            let k: u8 = rng.random_range(0..8);
            dihedral(img, h, k)
        } else {
            img.to_vec()
        };
        if augment && s > 0 {
            let dy = rng.random_range(-s..=s) as isize;
            let dx = rng.random_range(-s..=s) as isize;
            out = shift_zero(&out, h, w, dy, dx);
        }
        v.extend_from_slice(&out);
    }
    Ok(Tensor::from_vec(v, (batch, 1, h, w), device)?)
}

/// Validation images with one fixed (t, z) draw each, so that the validation loss of
/// successive checkpoints differs only by the weights, not by fresh noise.
pub struct ValidationSet {
    x0: Tensor,
    z: Tensor,
    ts: Vec<f64>,
    batch: usize,
}

impl ValidationSet {
    /// Fixes the draws of `images` from `seed`. The times are stratified: image j gets
    /// t in the j-th of m equal strata of [t_eps, 1) (strata assigned by a seeded
    /// permutation), so every noise level is represented and the mean over m images has
    /// a far smaller spread than with independent times.
    pub fn new(
        images: &ImageStack,
        t_eps: f64,
        seed: u64,
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        use rand::seq::SliceRandom;
        let m = images.n;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7661_6c5f_6c6f_7373); // "val_loss"
        let mut strata: Vec<usize> = (0..m).collect();
        strata.shuffle(&mut rng);
        let ts: Vec<f64> = strata
            .iter()
            .map(|&k| {
                let u: f64 = rng.random_range(0.0..1.0);
                t_eps + (1.0 - t_eps) * (k as f64 + u) / m as f64
            })
            .collect();
        let shape = [m, 1, images.h, images.w];
        let z = randn(&shape, &mut rng, device)?;
        let x0 = Tensor::from_vec(images.data.clone(), &shape, device)?;
        Ok(Self {
            x0,
            z,
            ts,
            batch: batch.max(1),
        })
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Mean DSM loss (per pixel) of `net` over the validation images and their fixed draws.
    pub fn loss(&self, net: &UNet, sde: &dyn Sde) -> Result<f64> {
        let m = self.len();
        let mut sum = 0.0;
        let mut start = 0;
        while start < m {
            let b = self.batch.min(m - start);
            let x0 = self.x0.narrow(0, start, b)?;
            let z = self.z.narrow(0, start, b)?;
            let l = dsm_loss_at(net, sde, &x0, &self.ts[start..start + b], &z)?;
            sum += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * b as f64;
            start += b;
        }
        Ok(sum / m.max(1) as f64)
    }
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
    /// The step the AdamW moments started from (0, or the step a run resumed at): the
    /// learning-rate warm-up counts from here, because fresh moments need it again.
    warmup_from: usize,
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
            warmup_from: 0,
            rng,
            device: device.clone(),
        })
    }

    pub fn num_params(&self) -> usize {
        num_params(&self.varmap)
    }

    fn lr_at(&self, step: usize) -> f64 {
        let w = self.config.warmup_steps.max(1);
        let since = step.saturating_sub(self.warmup_from) + 1;
        self.config.learning_rate * (since as f64 / w as f64).min(1.0)
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

    /// A network holding the EMA weights (what a checkpoint would load), for evaluation.
    pub fn ema_net(&self) -> Result<UNet> {
        let vb = VarBuilder::from_tensors(self.ema_weights(), DType::F32, &self.device);
        Ok(UNet::new(&self.net_config, vb)?)
    }

    /// Validation DSM loss of the EMA weights on `val`'s fixed draws.
    pub fn validation_loss(&self, val: &ValidationSet) -> Result<f64> {
        val.loss(&self.ema_net()?, &self.sde)
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
        // Fresh moments need a fresh warm-up: it restarts here. (Adding the step to the
        // warm-up length, as before, started the ramp at step/(step + warm-up) ≈ full rate.)
        self.warmup_from = self.step;
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
    /// Validation DSM loss of the final EMA weights (`None` without a validation split).
    pub final_val_loss: Option<f64>,
    /// Images trained on and held out.
    pub n_train: usize,
    pub n_val: usize,
    pub wall_time_s: f64,
    pub out_dir: PathBuf,
    /// The observer asked to stop: the run ended early, at a checkpoint (`--resume` goes on).
    pub stopped_early: bool,
}

/// The validation split `config` asks of `dataset` ([`validation_split`] over the images of
/// the input stack, before any augmentation).
pub fn split_for(dataset: &Dataset, config: &TrainConfig) -> Result<Split> {
    validation_split(dataset.images.n, config.val_fraction, config.split_seed).map_err(|msg| {
        PriorError::Data {
            path: dataset.source.clone(),
            msg,
        }
    })
}

/// The validation split recorded in a checkpoint's `config.json` (`training.split`), or
/// `None` when it records none (a checkpoint trained on every image of its data file, as
/// every checkpoint before splits existed was).
pub fn split_from_config_json(bytes: &[u8], path: &Path) -> Result<Option<Split>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| PriorError::Config {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    match v.get("training").and_then(|t| t.get("split")) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(s) => serde_json::from_value(s.clone())
            .map(Some)
            .map_err(|e| PriorError::Config {
                path: path.to_path_buf(),
                msg: format!("training.split: {e}"),
            }),
    }
}

/// [`split_from_config_json`] of `dir/config.json`.
pub fn read_split(dir: &Path) -> Result<Option<Split>> {
    let p = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&p).map_err(|source| PriorError::Io {
        path: p.clone(),
        source,
    })?;
    split_from_config_json(&bytes, &p)
}

/// A resumed run must hold out exactly the images the first run held out: otherwise
/// images it already trained on would be scored as unseen (or the reverse).
fn check_resume_split(out: &Path, split: &Split) -> Result<()> {
    let cpath = out.join(CONFIG_FILE);
    let err = |msg: String| PriorError::Data {
        path: cpath.clone(),
        msg,
    };
    match read_split(out)? {
        None if split.val_indices.is_empty() => Ok(()),
        None => Err(err(format!(
            "this checkpoint records no validation split: it was trained on every image of its \
             data, so none can be held out now (this run asks for --val-fraction {}); resume \
             with --val-fraction 0, or train afresh",
            split.fraction
        ))),
        Some(r) if r.n_images != split.n_images => Err(err(format!(
            "the checkpoint's validation split was drawn over {} images, but the data holds {}: \
             resume with the same data file",
            r.n_images, split.n_images
        ))),
        Some(r) if r.fraction != split.fraction || r.seed != split.seed => Err(err(format!(
            "the checkpoint was trained with --val-fraction {} --split-seed {}, this run asks \
             for --val-fraction {} --split-seed {}: resume with the same values (the held-out \
             images must stay unseen)",
            r.fraction, r.seed, split.fraction, split.seed
        ))),
        Some(r) if r.val_indices != split.val_indices => Err(err(
            "the validation indices recorded in training.split are not the ones its fraction \
             and seed give (was config.json edited?): refusing to resume"
                .to_string(),
        )),
        Some(_) => Ok(()),
    }
}

/// At most `k` of `v`, evenly spaced through it (all of `v` when it has no more than `k`).
fn spread(v: &[usize], k: usize) -> Vec<usize> {
    if v.len() <= k {
        return v.to_vec();
    }
    (0..k).map(|j| v[j * v.len() / k]).collect()
}

fn write_checkpoint(
    trainer: &Trainer,
    dataset: &Dataset,
    split: &Split,
    out: &Path,
    final_loss: f64,
    val_loss: Option<f64>,
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
    // The split and the validation loss go into config.json's training record as extra keys
    // (the checkpoint loader ignores keys it does not know, so older readers still load it).
    let cpath = out.join(CONFIG_FILE);
    let mut v = serde_json::to_value(&cfg).expect("config serialises");
    v["training"]["split"] = serde_json::to_value(split).expect("split serialises");
    v["training"]["shift_px"] = (trainer.config.shift_px * trainer.config.augment as usize).into();
    if let Some(l) = val_loss {
        v["training"]["val_loss"] = l.into();
    }
    let json = serde_json::to_string_pretty(&v).expect("config serialises") + "\n";
    crate::io::write_atomic(&cpath, json.as_bytes()).map_err(|source| PriorError::Io {
        path: cpath,
        source,
    })?;
    trainer.save_state(out)
}

/// Header of `loss.csv`; `val_loss` is empty on rows without a validation evaluation.
pub const LOSS_CSV_HEADER: &str = "step,loss,lr,images_per_s,val_loss";
const OLD_LOSS_CSV_HEADER: &str = "step,loss,lr,images_per_s";

/// Brings a resumed run's `loss.csv` to the checkpoint it resumes from: rows logged after
/// `step` (by a run stopped between checkpoints) are dropped, since the resumed run logs those
/// steps again; a file written before the `val_loss` column gets the column (empty on its old
/// rows); a missing file is started.
fn resume_loss_csv(csv: &Path, step: usize) -> Result<()> {
    let io = |source| PriorError::Io {
        path: csv.to_path_buf(),
        source,
    };
    let text = match std::fs::read_to_string(csv) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::write(csv, format!("{LOSS_CSV_HEADER}\n")).map_err(io);
        }
        Err(e) => return Err(io(e)),
    };
    let old_header = text.lines().next().map(str::trim) == Some(OLD_LOSS_CSV_HEADER);
    let mut out = format!("{LOSS_CSV_HEADER}\n");
    let mut dropped = false;
    for l in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let row_step = l
            .split(',')
            .next()
            .and_then(|v| v.trim().parse::<usize>().ok());
        if row_step.is_some_and(|r| r > step) {
            dropped = true;
            continue;
        }
        out.push_str(l);
        out.push_str(if old_header { ",\n" } else { "\n" });
    }
    if !old_header && !dropped {
        return Ok(());
    }
    crate::io::write_atomic(csv, out.as_bytes()).map_err(io)
}

/// (step, loss) points of one curve.
pub type LossCurve = Vec<(f64, f64)>;

/// (step, training loss) and (step, validation loss) points of a `loss.csv`, old (four
/// columns) or new.
pub fn read_loss_csv(text: &str) -> (LossCurve, LossCurve) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        let Some(step) = f.first().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if let Some(v) = f.get(1).and_then(|v| v.parse::<f64>().ok()) {
            train.push((step, v));
        }
        if let Some(v) = f.get(4).and_then(|v| v.parse::<f64>().ok()) {
            val.push((step, v));
        }
    }
    (train, val)
}

fn plot_loss(csv: &Path, png: &Path) {
    let Ok(text) = std::fs::read_to_string(csv) else {
        return;
    };
    let (pts, val) = read_loss_csv(&text);
    if pts.len() < 2 {
        return;
    }
    let mut series = vec![crate::report::plot_util::Series {
        name: "DSM loss (training batches)",
        points: &pts,
        color: plotters::style::BLUE,
    }];
    if !val.is_empty() {
        series.push(crate::report::plot_util::Series {
            name: "validation DSM loss (EMA, fixed draws)",
            points: &val,
            color: plotters::style::RGBColor(255, 127, 14),
        });
    }
    // A plot failure must never stop training.
    let _ = crate::report::plot_util::line_plot(
        png,
        "Denoising score-matching loss",
        "step",
        "loss (per pixel)",
        &series,
        true,
    );
}

/// Trains (or resumes training of) a score model on `dataset`, writing checkpoints,
/// `loss.csv` and `loss.png` to `out`. With `config.val_fraction > 0` the images of the
/// validation split ([`split_for`]) are never trained on; the validation DSM loss of the EMA
/// weights is computed at every checkpoint and written to `loss.csv` (`val_loss`).
#[allow(clippy::too_many_arguments)]
pub fn train(
    dataset: &Dataset,
    net_config: &UNetConfig,
    sde: SdeConfig,
    config: TrainConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    obs: &dyn Observer,
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
    let split = split_for(dataset, &config)?;
    if resume {
        check_resume_split(out, &split)?;
    }
    let held_out;
    let images: &ImageStack = if split.val_indices.is_empty() {
        &dataset.images
    } else {
        held_out = dataset.images.subset(&split.train_indices());
        &held_out
    };
    let val = if split.val_indices.is_empty() || config.val_max == 0 {
        None
    } else {
        let idx = spread(&split.val_indices, config.val_max);
        Some(ValidationSet::new(
            &dataset.images.subset(&idx),
            config.t_eps,
            config.split_seed,
            config.batch_size,
            device,
        )?)
    };
    let mut trainer = Trainer::new(net_config, sde, config.clone(), device)?;
    let csv = out.join("loss.csv");
    if resume {
        trainer.load_state(out)?;
        resume_loss_csv(&csv, trainer.step)?;
    } else {
        std::fs::write(&csv, format!("{LOSS_CSV_HEADER}\n")).map_err(|source| PriorError::Io {
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
    obs.stage("training", total as u64);
    let t0 = Instant::now();
    let time_up = || {
        config
            .max_minutes
            .is_some_and(|m| t0.elapsed().as_secs_f64() > m * 60.0)
    };
    let val_loss = |trainer: &Trainer| -> Result<Option<f64>> {
        val.as_ref().map(|v| trainer.validation_loss(v)).transpose()
    };
    let report_val = |step: usize, v: f64| {
        let n = val.as_ref().map_or(0, |v| v.len());
        obs.log(&format!(
            "step {step}: validation DSM loss {v:.5} (EMA weights, {n} held-out images, fixed \
             draws)"
        ));
    };
    let mut window = Vec::new();
    let mut last_loss = f64::NAN;
    let mut last_val: Option<f64> = None;
    let mut t_log = Instant::now();
    let mut imgs_since = 0usize;
    let mut rng_data = StdRng::seed_from_u64(config.seed.wrapping_add(start_step as u64));
    // The time limit is checked after every step, so the step that reaches it writes the
    // last checkpoint with its loss row; this check only stops a run given no time at all.
    let mut stopped = time_up() || obs.stop_requested();
    let mut checkpointed_at = None;
    while !stopped && trainer.step < config.max_steps {
        let x0 = random_batch_shifted(
            images,
            config.batch_size,
            config.augment,
            config.shift_px,
            &mut rng_data,
            device,
        )?;
        let l = trainer.train_step(&x0)?;
        window.push(l);
        imgs_since += config.batch_size;
        obs.advance(1);
        // A stop request (Ctrl-C) ends the run at this step with a checkpoint, as the time
        // limit does: nothing is lost, and `--resume` goes on from here.
        stopped = trainer.step >= config.max_steps || time_up() || obs.stop_requested();
        let ckpt_now = stopped || trainer.step % config.checkpoint_every.max(1) == 0;
        // Throughput of the training steps alone, before any validation or checkpoint.
        let ips = imgs_since as f64 / t_log.elapsed().as_secs_f64();
        if ckpt_now {
            last_val = val_loss(&trainer)?;
        }
        // A checkpoint step always gets a loss row, so that its validation loss sits beside
        // the training loss of the steps just before it.
        if ckpt_now || trainer.step % config.log_every.max(1) == 0 {
            last_loss = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            t_log = Instant::now();
            imgs_since = 0;
            let lr = trainer.lr_at(trainer.step - 1);
            let vs = match (ckpt_now, last_val) {
                (true, Some(v)) => format!("{v:.6}"),
                _ => String::new(),
            };
            let _ = writeln!(
                csv_f,
                "{},{last_loss:.6},{lr:.3e},{ips:.2},{vs}",
                trainer.step
            );
            let _ = csv_f.flush();
            let vm = last_val.map_or(String::new(), |v| format!("  val {v:.4}"));
            obs.status(&format!("loss {last_loss:.4}{vm}  {ips:.1} img/s"));
        }
        if ckpt_now {
            if let Some(v) = last_val {
                report_val(trainer.step, v);
            }
            write_checkpoint(
                &trainer,
                dataset,
                &split,
                out,
                last_loss,
                last_val,
                t0.elapsed().as_secs_f64(),
            )?;
            plot_loss(&csv, &out.join("loss.png"));
            checkpointed_at = Some(trainer.step);
            // A checkpoint step always ends a log window: restart its clock after the
            // validation and the writes.
            t_log = Instant::now();
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    // No step in this run (resumed at --steps, or no time): the checkpoint is still written,
    // as before, with the validation loss of the weights it holds.
    if checkpointed_at != Some(trainer.step) {
        last_val = val_loss(&trainer)?;
        if let Some(v) = last_val {
            report_val(trainer.step, v);
        }
        write_checkpoint(&trainer, dataset, &split, out, last_loss, last_val, wall)?;
        plot_loss(&csv, &out.join("loss.png"));
    }
    Ok(TrainSummary {
        steps: trainer.step,
        final_loss: last_loss,
        final_val_loss: last_val,
        n_train: images.n,
        n_val: split.val_indices.len(),
        wall_time_s: wall,
        out_dir: out.to_path_buf(),
        stopped_early: obs.stop_requested() && trainer.step < config.max_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run stopped between checkpoints logged steps the resumed run repeats: those rows go,
    /// earlier ones stay byte for byte, and an old four-column file gets the `val_loss` column.
    #[test]
    fn resumed_loss_csv_ends_at_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("loss.csv");
        let rows = "10,0.5,1e-4,30.0,\n20,0.4,1e-4,31.0,0.41\n30,0.3,1e-4,32.0,\n";
        std::fs::write(&csv, format!("{LOSS_CSV_HEADER}\n{rows}")).unwrap();
        resume_loss_csv(&csv, 20).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(
            text,
            format!("{LOSS_CSV_HEADER}\n10,0.5,1e-4,30.0,\n20,0.4,1e-4,31.0,0.41\n")
        );
        let (train, val) = read_loss_csv(&text);
        assert_eq!(train.len(), 2);
        assert_eq!(val, vec![(20.0, 0.41)]);

        std::fs::write(
            &csv,
            format!("{OLD_LOSS_CSV_HEADER}\n10,0.5,1e-4,30.0\n40,0.2,1e-4,30.0\n"),
        )
        .unwrap();
        resume_loss_csv(&csv, 30).unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            format!("{LOSS_CSV_HEADER}\n10,0.5,1e-4,30.0,\n")
        );

        let missing = dir.path().join("new.csv");
        resume_loss_csv(&missing, 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(&missing).unwrap(),
            format!("{LOSS_CSV_HEADER}\n")
        );
    }

    /// The warm-up restarts at a resume: the first step after it runs at 1/warm-up of the
    /// rate, not at step/(step + warm-up) of it, and the full rate returns after warm-up steps.
    #[test]
    fn resume_restarts_the_warm_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            learning_rate: 1e-3,
            warmup_steps: 100,
            ..Default::default()
        };
        let sde = SdeConfig::Ve(crate::prior::sde::VeSde::new(1e-2, 1.0));
        let net = UNetConfig::tiny(16);
        let mut a = Trainer::new(&net, sde, cfg.clone(), &Device::Cpu).unwrap();
        assert!((a.lr_at(0) - 1e-5).abs() < 1e-12);
        assert!((a.lr_at(500) - 1e-3).abs() < 1e-12);
        a.step = 5000;
        a.save_state(dir.path()).unwrap();
        let mut b = Trainer::new(&net, sde, cfg, &Device::Cpu).unwrap();
        b.load_state(dir.path()).unwrap();
        assert_eq!(b.step, 5000);
        assert!((b.lr_at(5000) - 1e-5).abs() < 1e-12, "{}", b.lr_at(5000));
        assert!((b.lr_at(5049) - 5e-4).abs() < 1e-12);
        assert!((b.lr_at(5099) - 1e-3).abs() < 1e-12);
        assert!((b.lr_at(9000) - 1e-3).abs() < 1e-12);
    }
}
