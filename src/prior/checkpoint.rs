//! Checkpoints: a folder with `config.json` and `weights.safetensors` (EMA weights).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::data::Normalisation;
use super::model::{UNet, UNetConfig};
use super::sde::{Sde, SdeConfig};
use super::{PriorError, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const FORMAT_VERSION: u32 = 1;

/// What a checkpoint was trained on and how far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Training data (path as given) and how many images it held.
    pub data: String,
    pub n_images: usize,
    /// Crop/resize/normalisation description.
    pub preprocess: String,
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub ema_decay: f64,
    pub seed: u64,
    /// Mean DSM loss (per pixel) over the last logging window.
    pub final_loss: f64,
    pub wall_time_s: f64,
    pub num_params: usize,
}

/// Everything needed to rebuild the network and interpret its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    pub format_version: u32,
    pub network: UNetConfig,
    pub sde: SdeConfig,
    /// Side of the square images the model works on.
    pub image_size: usize,
    /// Smallest diffusion time used in training (samplers should stop there).
    pub t_eps: f64,
    pub normalisation: Normalisation,
    pub training: TrainingInfo,
}

/// A trained score network with its SDE: `score(x, t) = net(x, t) / σ(t)`.
pub struct ScoreModel {
    net: UNet,
    config: CheckpointConfig,
    device: Device,
}

impl std::fmt::Debug for ScoreModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreModel")
            .field("config", &self.config)
            .finish()
    }
}

impl ScoreModel {
    pub fn from_parts(net: UNet, config: CheckpointConfig, device: Device) -> Self {
        Self {
            net,
            config,
            device,
        }
    }

    /// Loads `dir/config.json` and `dir/weights.safetensors`, checking that they agree.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cpath = dir.join(CONFIG_FILE);
        let wpath = dir.join(WEIGHTS_FILE);
        let cbytes = std::fs::read(&cpath).map_err(|source| PriorError::Io {
            path: cpath.clone(),
            source,
        })?;
        let wbytes = std::fs::read(&wpath).map_err(|source| PriorError::Io {
            path: wpath.clone(),
            source,
        })?;
        Self::load_from_bytes_named(&cbytes, &cpath, &wbytes, &wpath, device)
    }

    /// Loads from in-memory `config.json` and `weights.safetensors` bytes (embedded priors).
    pub fn from_bytes(config_json: &[u8], weights: &[u8], device: &Device) -> Result<Self> {
        Self::load_from_bytes_named(
            config_json,
            Path::new("<memory>/config.json"),
            weights,
            Path::new("<memory>/weights.safetensors"),
            device,
        )
    }

    fn load_from_bytes_named(
        config_json: &[u8],
        cpath: &Path,
        weights: &[u8],
        wpath: &Path,
        device: &Device,
    ) -> Result<Self> {
        let config = parse_config(config_json, cpath)?;
        let tensors = parse_weights(weights, wpath)?;
        check_weights(&config, &tensors, wpath, cpath)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(device)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let net = UNet::new(&config.network, vb).map_err(|e| PriorError::Mismatch {
            path: wpath.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            net,
            config,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }
    pub fn sde(&self) -> &SdeConfig {
        &self.config.sde
    }
    pub fn net(&self) -> &UNet {
        &self.net
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn image_size(&self) -> usize {
        self.config.image_size
    }

    /// σ(t)·score for a batch at per-sample times `t` (B,).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self.net.forward(x, t)
    }

    /// The score ∇ log p_t(x) for a batch (B, 1, H, W) at one time t.
    pub fn score(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let tt = Tensor::full(t as f32, b, x.device())?;
        let out = self.net.forward(x, &tt)?;
        out.affine(1.0 / self.config.sde.sigma(t), 0.0)
    }

    /// Tweedie's denoiser E[x₀ | x_t] = (x_t + σ² score) / μ.
    pub fn denoise(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        let sde = &self.config.sde;
        let s = self.score(x, t)?;
        let (mu, sig) = (sde.mu(t), sde.sigma(t));
        (x + s.affine(sig * sig, 0.0)?)?.affine(1.0 / mu, 0.0)
    }
}

fn parse_config(bytes: &[u8], path: &Path) -> Result<CheckpointConfig> {
    let config: CheckpointConfig =
        serde_json::from_slice(bytes).map_err(|e| PriorError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    if config.format_version != FORMAT_VERSION {
        return Err(PriorError::Config {
            path: path.to_path_buf(),
            msg: format!(
                "format_version {} is not supported (expected {FORMAT_VERSION})",
                config.format_version
            ),
        });
    }
    if config.network.image_size != config.image_size {
        return Err(PriorError::Config {
            path: path.to_path_buf(),
            msg: format!(
                "network.image_size {} != image_size {}",
                config.network.image_size, config.image_size
            ),
        });
    }
    config
        .network
        .validate()
        .and_then(|()| check_network_size(&config.network))
        .map_err(|msg| PriorError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
    config.sde.check().map_err(|msg| PriorError::Config {
        path: path.to_path_buf(),
        msg,
    })?;
    // Sampling runs from t = 1 down to t_eps and maps back through the normalisation: values
    // outside these ranges give NaN or infinite images, never an error further on.
    if !(config.t_eps > 0.0 && config.t_eps < 1.0) {
        return Err(PriorError::Config {
            path: path.to_path_buf(),
            msg: format!("t_eps must be in (0, 1), got {}", config.t_eps),
        });
    }
    let (scale, offset) = (config.normalisation.scale(), config.normalisation.offset());
    if !(scale.is_finite() && scale != 0.0 && offset.is_finite()) {
        return Err(PriorError::Config {
            path: path.to_path_buf(),
            msg: format!(
                "normalisation scale {scale} and offset {offset} must be finite (scale non-zero)"
            ),
        });
    }
    Ok(config)
}

/// Parses safetensors bytes on the CPU (device transfer comes after validation).
fn parse_weights(bytes: &[u8], path: &Path) -> Result<HashMap<String, Tensor>> {
    // safetensors validates the header and that every tensor lies inside the buffer.
    safetensors::SafeTensors::deserialize(bytes).map_err(|e| PriorError::Weights {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        PriorError::Weights {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    })?;
    for (name, t) in &tensors {
        if t.dtype() != DType::F32 {
            return Err(PriorError::Weights {
                path: path.to_path_buf(),
                msg: format!("tensor '{name}' has dtype {:?}, expected f32", t.dtype()),
            });
        }
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(PriorError::Weights {
                path: path.to_path_buf(),
                msg: format!("tensor '{name}' holds NaN or infinite values"),
            });
        }
    }
    Ok(tensors)
}

/// Bounds on a network read from a file, checked before any of it is built: the shapes are
/// computed by building the network, so a corrupt `nf` of 10¹¹ would overflow or allocate
/// without end. The bounds are far beyond any network this project trains (nf 128, ch_mult
/// up to 4, 2 residual blocks, 256² images).
pub fn check_network_size(cfg: &UNetConfig) -> std::result::Result<(), String> {
    let bad = |what: &str, v: String, max: usize| {
        Err(format!(
            "network {what} {v} is out of range (at most {max})"
        ))
    };
    if cfg.nf > 4096 {
        return bad("nf", cfg.nf.to_string(), 4096);
    }
    if cfg.ch_mult.len() > 10 {
        return bad("ch_mult length", cfg.ch_mult.len().to_string(), 10);
    }
    if let Some(m) = cfg.ch_mult.iter().find(|&&m| m == 0 || m > 64) {
        return Err(format!(
            "network ch_mult entry {m} is out of range (1 … 64)"
        ));
    }
    if cfg.nf * cfg.ch_mult.iter().max().copied().unwrap_or(1) > 16_384 {
        return Err(format!(
            "network nf × ch_mult = {} channels is out of range (at most 16384)",
            cfg.nf * cfg.ch_mult.iter().max().copied().unwrap_or(1)
        ));
    }
    if cfg.num_res_blocks > 64 {
        return bad("num_res_blocks", cfg.num_res_blocks.to_string(), 64);
    }
    if cfg.image_size > 8192 {
        return bad("image_size", cfg.image_size.to_string(), 8192);
    }
    if cfg.attn_resolutions.len() > 16 {
        return bad(
            "attn_resolutions length",
            cfg.attn_resolutions.len().to_string(),
            16,
        );
    }
    if !(cfg.fourier_scale.is_finite() && cfg.fourier_scale > 0.0) {
        return Err(format!(
            "network fourier_scale must be positive and finite, got {}",
            cfg.fourier_scale
        ));
    }
    Ok(())
}

/// Names and shapes the config's network expects.
pub fn expected_shapes(cfg: &UNetConfig) -> candle_core::Result<HashMap<String, Vec<usize>>> {
    let vm = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    UNet::new(cfg, vb)?;
    let data = vm.data().lock().unwrap();
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect())
}

fn check_weights(
    config: &CheckpointConfig,
    tensors: &HashMap<String, Tensor>,
    wpath: &Path,
    cpath: &Path,
) -> Result<()> {
    let expected = expected_shapes(&config.network)?;
    let mismatch = |msg: String| PriorError::Mismatch {
        path: wpath.to_path_buf(),
        msg: format!("{msg} (network described in {})", cpath.display()),
    };
    let mut missing: Vec<&String> = expected
        .keys()
        .filter(|k| !tensors.contains_key(*k))
        .collect();
    missing.sort();
    if !missing.is_empty() {
        return Err(mismatch(format!(
            "{} tensor(s) missing, e.g. '{}'",
            missing.len(),
            missing[0]
        )));
    }
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    extra.sort();
    if !extra.is_empty() {
        return Err(mismatch(format!(
            "{} unexpected tensor(s), e.g. '{}'",
            extra.len(),
            extra[0]
        )));
    }
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    for k in names {
        let want = &expected[k];
        let got = tensors[k].dims();
        if want.as_slice() != got {
            return Err(mismatch(format!(
                "tensor '{k}' has shape {got:?}, config needs {want:?}"
            )));
        }
    }
    Ok(())
}

/// Writes a checkpoint atomically enough for a long training run: files go to temporary
/// names first and are renamed into place, so a crash never leaves a half-written prior.
pub fn save_checkpoint(
    dir: &Path,
    config: &CheckpointConfig,
    weights: &HashMap<String, Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| PriorError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let cpath = dir.join(CONFIG_FILE);
    let wpath = dir.join(WEIGHTS_FILE);
    let wtmp = dir.join(".weights.safetensors.tmp");
    let ctmp = dir.join(".config.json.tmp");
    let cpu: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    candle_core::safetensors::save(&cpu, &wtmp).map_err(|e| PriorError::Weights {
        path: wtmp.clone(),
        msg: e.to_string(),
    })?;
    let json = serde_json::to_string_pretty(config).expect("config serialises");
    std::fs::write(&ctmp, json + "\n").map_err(|source| PriorError::Io {
        path: ctmp.clone(),
        source,
    })?;
    for (tmp, fin) in [(&wtmp, &wpath), (&ctmp, &cpath)] {
        std::fs::rename(tmp, fin).map_err(|source| PriorError::Io {
            path: fin.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Default location of a checkpoint's files, for messages.
pub fn checkpoint_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(CONFIG_FILE), dir.join(WEIGHTS_FILE))
}
