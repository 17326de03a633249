//! The default prior, embedded in the binary.
use candle_core::Device;

use super::{Result, ScoreModel};

static CONFIG: &[u8] = include_bytes!("../../priors/default/config.json");
static WEIGHTS: &[u8] = include_bytes!("../../priors/default/weights.safetensors");

/// The score model trained on MiraBest FIRST radio galaxies (64², see `priors/default/README.md`).
pub fn default_prior(device: &Device) -> Result<ScoreModel> {
    ScoreModel::from_bytes(CONFIG, WEIGHTS, device)
}
