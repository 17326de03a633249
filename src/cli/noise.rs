//! `interf-image noise train`: a score model of the noise alone, for the learned noise
//! likelihood (`crate::likelihood::LearnedNoiseLikelihood`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::prior::{device, tune_malloc, DeviceArg, PresetArg};
use crate::likelihood::noise_tiles;
use crate::prior::data::{self, NormKind, Preprocess, Resample};
use crate::prior::sde::{SdeConfig, VeSde};
use crate::prior::train::{self, TrainConfig};
use crate::prior::UNetConfig;

#[derive(Debug, Subcommand)]
pub enum NoiseCommand {
    /// Train a score network by denoising score matching on noise-only cutouts.
    ///
    /// Every image of the input is cut into non-overlapping SIZE×SIZE tiles (no resampling:
    /// that would change the noise), tiles with blank pixels (NaN, stored as 0) are dropped,
    /// and all pixels are divided by the stack's rms. The checkpoint records that rms, so the
    /// likelihood works in the data's units.
    Train(NoiseTrainArgs),
}

#[derive(Debug, Args)]
pub struct NoiseTrainArgs {
    /// Noise-only images: .npy (N×H×W) or a FITS image/cube, in the data's units.
    #[arg(long)]
    pub noise_cutouts: PathBuf,
    /// Side of the network's square tiles (a multiple of 2^(levels−1), at least 8).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Output checkpoint folder.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = PresetArg::Small)]
    pub preset: PresetArg,
    /// Smallest diffusion noise, in units of the noise rms.
    #[arg(long, default_value_t = 0.01)]
    pub sigma_min: f64,
    /// Largest diffusion noise, in units of the noise rms (beyond it the likelihood uses the
    /// Gaussian limit).
    #[arg(long, default_value_t = 10.0)]
    pub sigma_max: f64,
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.999)]
    pub ema: f64,
    #[arg(long, default_value_t = 5000, value_parser = super::common::at_least_one)]
    pub steps: usize,
    #[arg(long)]
    pub max_minutes: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Random flips and 90° rotations: only for noise whose correlations are isotropic.
    #[arg(long)]
    pub augment: bool,
    #[arg(long, default_value_t = 250, value_parser = super::common::at_least_one)]
    pub checkpoint_every: usize,
    /// Continue from the train_state.* files in --out.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing noise model in --out (without it, or --resume, an existing
    /// non-empty folder is refused).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(cmd: NoiseCommand) -> anyhow::Result<()> {
    match cmd {
        NoiseCommand::Train(a) => run_train(a),
    }
}

fn run_train(a: NoiseTrainArgs) -> anyhow::Result<()> {
    tune_malloc();
    super::common::check_checkpoint_dir(&a.out, a.resume, a.force, &[&a.noise_cutouts])?;
    if !(a.sigma_min > 0.0 && a.sigma_max > a.sigma_min) {
        bail!(
            "--sigma-min {} / --sigma-max {}: need 0 < sigma-min < sigma-max",
            a.sigma_min,
            a.sigma_max
        );
    }
    let net_cfg = match a.preset {
        PresetArg::Tiny => UNetConfig::tiny(a.size),
        PresetArg::Small => UNetConfig::small(a.size),
        PresetArg::Large => UNetConfig::large(a.size),
    };
    net_cfg
        .validate()
        .map_err(|m| anyhow::anyhow!("--size {}: {m}", a.size))?;
    let dev = device(a.device)?;
    let raw = data::read_images(&a.noise_cutouts)?;
    let tiles =
        noise_tiles(&raw, a.size).with_context(|| format!("{}", a.noise_cutouts.display()))?;
    let pp = Preprocess {
        size: a.size,
        crop: Some(a.size),
        resample: Resample::Area,
        norm: NormKind::NoiseRms,
    };
    let ds = data::prepare(&tiles, &pp, &a.noise_cutouts)?;
    eprintln!(
        "noise: {} tiles of {}² from {} image(s) {}×{} in {}, {:?}",
        tiles.n,
        a.size,
        raw.n,
        raw.h,
        raw.w,
        a.noise_cutouts.display(),
        ds.normalisation
    );
    let sde = SdeConfig::Ve(
        VeSde::try_new(a.sigma_min, a.sigma_max)
            .map_err(|e| anyhow::anyhow!("--sigma-min/--sigma-max: {e}"))?,
    );
    let tc = TrainConfig {
        batch_size: a.batch,
        learning_rate: a.lr,
        warmup_steps: a.warmup,
        ema_decay: a.ema,
        max_steps: a.steps,
        max_minutes: a.max_minutes,
        seed: a.seed,
        augment: a.augment,
        checkpoint_every: a.checkpoint_every,
        ..Default::default()
    };
    let created = !a.out.exists();
    let bar = super::interrupt::training_bar(a.quiet);
    let s = train::train(
        &ds,
        &net_cfg,
        sde,
        tc,
        &a.out,
        a.resume,
        &dev,
        &super::interrupt::Terminal::bar(&bar),
    )
    .inspect_err(|_| super::prior::remove_if_no_checkpoint(&a.out, created))?;
    bar.finish();
    if s.stopped_early {
        eprintln!(
            "stopped by Ctrl-C at step {}: the checkpoint in {} holds it, and --resume goes on",
            s.steps,
            a.out.display()
        );
    }
    eprintln!(
        "trained {} steps in {:.0} s, final loss {:.4}; noise model in {}",
        s.steps,
        s.wall_time_s,
        s.final_loss,
        s.out_dir.display()
    );
    Ok(())
}
