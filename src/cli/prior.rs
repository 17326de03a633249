//! `interf-image prior train|sample|stats|logp`: train a score-based prior, draw unconditional
//! samples, compare them with the training images, evaluate an image's log-density.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::prior::data::{self, NormKind, Preprocess, Resample};
use crate::prior::sde::{Sde, SdeConfig, VpSde};
use crate::prior::train::TrainConfig;
use crate::prior::{ScoreModel, UNetConfig};
use crate::sample;

#[derive(Debug, Subcommand)]
pub enum PriorCommand {
    /// Train a score network by denoising score matching on a stack of images.
    Train(TrainArgs),
    /// Draw unconditional samples from a trained prior.
    Sample(SampleArgs),
    /// Compare a prior's samples with its training images: pixel values, total flux, power
    /// spectrum (numbers in stats.json, plots as PNG).
    Stats(StatsArgs),
    /// The prior's log-density of an image (or of each plane of a cube): the probability-flow
    /// ODE estimate and the ELBO, in nats and bits per pixel, with standard errors.
    Logp(LogpArgs),
    /// The prior's reference log-densities: the ELBO of images of the kind it was trained on
    /// (its validation split, or any set), written as JSON; `image` places its samples in
    /// this distribution to tell when the prior may be misspecified.
    Reference(ReferenceArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SdeArg {
    Ve,
    Vp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// A few thousand parameters, for tests.
    Tiny,
    /// ≈0.6 M parameters at 64²: a CPU can train it in a few hours.
    Small,
    /// Tens of millions of parameters, for a GPU.
    Large,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NormArg {
    /// Each image divided by its own peak.
    Peak,
    /// The global min/max of the stack mapped to [0, 1].
    Minmax,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SamplerArg {
    /// Euler–Maruyama on the reverse SDE.
    Em,
    /// Predictor–corrector (Euler–Maruyama + Langevin).
    Pc,
    /// Probability-flow ODE, Heun's method (deterministic given the initial noise).
    Ode,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training images: .npy (N×H×W, uint8/float32/float64) or a FITS cube.
    #[arg(long)]
    pub data: PathBuf,
    /// Side of the (square) model images; inputs are cropped to a square and resized.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Output checkpoint folder (config.json, weights.safetensors, loss.csv, loss.png).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = PresetArg::Small)]
    pub preset: PresetArg,
    /// Network config as JSON (a UNetConfig), instead of a preset.
    #[arg(long)]
    pub network_json: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SdeArg::Ve)]
    pub sde: SdeArg,
    #[arg(long, default_value_t = 1e-3)]
    pub sigma_min: f64,
    /// Default: the largest distance between two training images (Song & Ermon 2020).
    #[arg(long)]
    pub sigma_max: Option<f64>,
    #[arg(long, default_value_t = 0.1)]
    pub beta_min: f64,
    #[arg(long, default_value_t = 20.0)]
    pub beta_max: f64,
    /// Central crop (input pixels) before resizing; default: the largest square.
    #[arg(long)]
    pub crop: Option<usize>,
    #[arg(long, value_enum, default_value_t = NormArg::Peak)]
    pub norm: NormArg,
    /// Bilinear instead of area-averaging resize.
    #[arg(long)]
    pub bilinear: bool,
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub batch: usize,
    /// Most memory the network batch may take (e.g. 64GB, 500MB). Default: the memory
    /// available now; a larger --batch is refused before anything is allocated.
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0.999)]
    pub ema: f64,
    /// Total optimisation steps (counting resumed ones).
    #[arg(long, default_value_t = 20_000, value_parser = super::common::at_least_one)]
    pub steps: usize,
    /// Stop after this many minutes of this run (a checkpoint is written).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Disable the augmentation: random flips, 90° rotations and shifts.
    #[arg(long)]
    pub no_augment: bool,
    /// Random shifts of each training image by integers in [−N, N] pixels along each axis
    /// (zero fill), on top of the flips and rotations.
    #[arg(long, default_value_t = 2)]
    pub shift_px: usize,
    /// Fraction of the images held out for validation, never trained on (0: none). The
    /// split is recorded in config.json and a --resume must ask for the same one.
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    pub val_fraction: f64,
    /// Seed of the validation split (and of the validation loss's fixed noise draws);
    /// independent of --seed, so the same data file always gives the same split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Most validation images the validation loss (at every checkpoint) is computed on.
    #[arg(long, default_value_t = 256, value_parser = super::common::at_least_one)]
    pub val_max: usize,
    #[arg(long, default_value_t = 250, value_parser = super::common::at_least_one)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = 10, value_parser = super::common::at_least_one)]
    pub log_every: usize,
    /// Continue from the train_state.* files in --out.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing checkpoint in --out (without it, or --resume, an existing non-empty
    /// folder is refused).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Checkpoint folder, or `default` for the embedded prior.
    #[arg(long, default_value = "default")]
    pub prior: String,
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub n: usize,
    #[arg(long, default_value_t = 1000, value_parser = super::common::at_least_one)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = SamplerArg::Em)]
    pub sampler: SamplerArg,
    /// Signal-to-noise ratio of the Langevin corrector (pc).
    #[arg(long, default_value_t = 0.16)]
    pub snr: f64,
    /// Langevin steps per time step (pc).
    #[arg(long, default_value_t = 1, value_parser = super::common::at_least_one)]
    pub corrector_steps: usize,
    /// Samples drawn at once.
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub batch: usize,
    /// Most memory the network batch may take (e.g. 64GB, 500MB). Default: the memory
    /// available now; a larger --batch is refused before anything is allocated.
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output FITS cube (N×H×W); a PNG grid is written next to it.
    #[arg(long, default_value = "samples.fits")]
    pub out: PathBuf,
    /// Write in the training data's units (normalisation undone) instead of model units.
    #[arg(long)]
    pub physical: bool,
    /// Return Tweedie's denoised estimate at the last time instead of the last iterate.
    #[arg(long)]
    pub denoise: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Checkpoint folder, or `default` for the embedded prior.
    #[arg(long, default_value = "default")]
    pub prior: String,
    /// The training images (.npy or FITS cube), prepared as the checkpoint records.
    #[arg(long)]
    pub data: PathBuf,
    /// Samples drawn, and training images drawn (seeded) to compare with.
    #[arg(long, default_value_t = 256, value_parser = super::common::at_least_one)]
    pub n: usize,
    #[arg(long, default_value_t = 250, value_parser = super::common::at_least_one)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = SamplerArg::Em)]
    pub sampler: SamplerArg,
    #[arg(long, default_value_t = 64, value_parser = super::common::at_least_one)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Histogram bins of the pixel values and of the total flux.
    #[arg(long, default_value_t = 40, value_parser = super::common::at_least_one)]
    pub bins: usize,
    /// Output folder: samples.fits, compare.png, pixels.png, flux.png, power.png, stats.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Images of --data to compare with: all of them, or the validation (training) part of
    /// the split recorded in the prior's config.json (`prior train --val-fraction`).
    #[arg(long, value_enum, default_value_t = SplitArg::All)]
    pub split: SplitArg,
    /// Compare Tweedie-denoised samples with the images as they are. By default the samples
    /// end at the prior's smallest noise level σ_min, undenoised, and the images get N(0,
    /// σ_min²) per pixel (seeded): the score model is trained down to σ_min only, so that is
    /// the density it represents; exact zeros (MiraBest's clipped background) cannot be matched
    /// by any continuous sampler and would dominate the pixel-value KS distance.
    #[arg(long)]
    pub no_floor: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Checkpoint folder, or `default` for the embedded prior.
    #[arg(long, default_value = "default")]
    pub prior: String,
    /// Unconditional draws of the prior whose ELBO makes the reference.
    #[arg(long, default_value_t = 64, value_parser = super::common::at_least_one)]
    pub n: usize,
    /// Reverse-diffusion steps of each draw (Euler–Maruyama, no final denoising, as `image`
    /// ends).
    #[arg(long, default_value_t = 300, value_parser = super::common::at_least_one)]
    pub steps: usize,
    /// Images of the prior's training kind (.npy or FITS cube) whose ELBO is recorded beside
    /// the draws', to show how far the prior is from them (optional).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which images of --data: the prior's validation split (images it never trained on), its
    /// training part, or all of them.
    #[arg(long, value_enum, default_value_t = SplitArg::Val)]
    pub split: SplitArg,
    /// Most images of --data (drawn with --seed).
    #[arg(long, default_value_t = 64, value_parser = super::common::at_least_one)]
    pub n_images: usize,
    /// Monte-Carlo draws of each ELBO: even; `image` uses the same number.
    #[arg(long, default_value_t = crate::prior::reference::ELBO_SAMPLES, value_parser = even_count)]
    pub elbo_samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 64, value_parser = super::common::at_least_one)]
    pub batch: usize,
    /// Output JSON; `image --prior DIR` reads DIR/logp_reference.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long)]
    pub quiet: bool,
}

pub use crate::pipeline::split::Split as SplitArg;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AtArg {
    /// E_z log p(x + σ(t_eps) z): the image as the prior sees it at its smallest noise level.
    Noisy,
    /// log p(x) at the image itself.
    Image,
}

#[derive(Debug, Args)]
pub struct LogpArgs {
    /// Checkpoint folder, or `default` for the embedded prior.
    #[arg(long, default_value = "default")]
    pub prior: String,
    /// A FITS image, or a cube (one estimate per plane), at the prior's image size.
    #[arg(long)]
    pub image: PathBuf,
    /// RK4 steps of the probability-flow ODE from t_eps to 1 (0: no ODE estimate).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Rademacher probes of the ODE's divergence; their spread gives the standard error.
    #[arg(long, default_value_t = 4, value_parser = at_least_two)]
    pub probes: usize,
    /// Monte-Carlo draws (t, noise) of the ELBO, two per time stratum: even (0: no ELBO).
    #[arg(long, default_value_t = 256, value_parser = even_count)]
    pub elbo_samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the density is evaluated: at the image plus the prior's smallest noise σ(t_eps)
    /// (`noisy`, fresh noise per probe and draw, averaged), or at the image itself (`image`,
    /// where the network's score is off its training distribution).
    #[arg(long, value_enum, default_value_t = AtArg::Noisy)]
    pub at: AtArg,
    /// Image value at prior value 1 (an `image` run's flux scale). Default: the FLUXSCL of an
    /// `image` product, model units for a `prior sample` cube in model units, otherwise each
    /// plane's own peak.
    #[arg(long)]
    pub flux_scale: Option<f64>,
    /// Rows per network batch (an ODE batch holds whole images: a multiple of --probes).
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub batch: usize,
    /// Most memory the network batch may take (e.g. 64GB, 500MB). Default: the memory
    /// available now; a larger --batch is refused before anything is allocated.
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// clap value parser of a fraction in [0, 1).
fn fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(f.is_finite() && (0.0..1.0).contains(&f)) {
        return Err(format!("must be in [0, 1), got {f}"));
    }
    Ok(f)
}

/// clap value parser of the Hutchinson probes: one probe has no spread to give an error bar.
fn at_least_two(s: &str) -> Result<usize, String> {
    let n = super::common::at_least_one(s)?;
    if n < 2 {
        return Err("must be at least 2 (their spread gives the standard error)".into());
    }
    Ok(n)
}

/// clap value parser of the ELBO draws: two per time stratum, so even (0 skips the ELBO).
fn even_count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !n.is_multiple_of(2) {
        return Err(format!(
            "must be even (two draws per time stratum give the standard error), got {n}"
        ));
    }
    Ok(n)
}

/// Runs a `prior` subcommand.
pub fn run(cmd: PriorCommand) -> anyhow::Result<()> {
    match cmd {
        PriorCommand::Train(a) => run_train(a),
        PriorCommand::Sample(a) => run_sample(a),
        PriorCommand::Stats(a) => run_stats(a),
        PriorCommand::Logp(a) => run_logp(a),
        PriorCommand::Reference(a) => run_reference(a),
    }
}

pub fn device(d: DeviceArg) -> anyhow::Result<Device> {
    match d {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this binary was built without the `cuda` feature (cargo build --release --features cuda)");
            }
            Device::new_cuda(0).context("cannot open CUDA device 0")
        }
    }
}

/// glibc's default malloc thresholds make candle's per-op allocations page-fault heavily;
/// larger mmap/trim thresholds measured about 20 % faster training here.
pub(crate) fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_MMAP_MAX: i32 = -4;
        // SAFETY: mallopt only changes allocator tunables; called before heavy allocation.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            // The threshold cannot go above 32 MiB, and a batch-64 activation of 32 channels
            // at 64² is exactly that: every such buffer was a fresh mmap whose pages fault in
            // on first touch (a training step of the 2 M U-Net took 6.3 s instead of 4.9 s).
            // Serving every block from the heap, which is never trimmed, reuses warm pages.
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
            mallopt(M_TOP_PAD, 256 << 20);
        }
    }
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    tune_malloc();
    let inputs: Vec<&Path> = [Some(a.data.as_path()), a.network_json.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    super::common::check_checkpoint_dir(&a.out, a.resume, a.force, &inputs)?;
    let dev = device(a.device)?;
    let opts = train_options(&a)?;
    let created = !a.out.exists();
    let bar = super::interrupt::training_bar(a.quiet);
    let s =
        crate::pipeline::train::train_prior(&opts, &dev, &super::interrupt::Terminal::bar(&bar))
            .inspect_err(|_| remove_if_no_checkpoint(&a.out, created))?;
    bar.finish();
    if s.stopped_early {
        eprintln!(
            "stopped by Ctrl-C at step {}: the checkpoint in {} holds it, and --resume goes on",
            s.steps,
            a.out.display()
        );
    }
    let val = s
        .final_val_loss
        .map_or(String::new(), |v| format!(", validation loss {v:.4}"));
    eprintln!(
        "trained {} steps in {:.0} s on {} images ({} held out), final loss {:.4}{val}; \
         checkpoint in {}",
        s.steps,
        s.wall_time_s,
        s.n_train,
        s.n_val,
        s.final_loss,
        s.out_dir.display()
    );
    Ok(())
}

/// The training job's options from the command line.
fn train_options(a: &TrainArgs) -> anyhow::Result<crate::pipeline::train::TrainOptions> {
    use crate::pipeline::train::{SdeChoice, TrainOptions};
    let network: UNetConfig = match &a.network_json {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not a network config", p.display()))?,
        None => match a.preset {
            PresetArg::Tiny => UNetConfig::tiny(a.size),
            PresetArg::Small => UNetConfig::small(a.size),
            PresetArg::Large => UNetConfig::large(a.size),
        },
    };
    Ok(TrainOptions {
        data: a.data.clone(),
        out: a.out.clone(),
        preprocess: Preprocess {
            size: a.size,
            crop: a.crop,
            resample: if a.bilinear {
                Resample::Bilinear
            } else {
                Resample::Area
            },
            norm: match a.norm {
                NormArg::Peak => NormKind::PerImagePeak,
                NormArg::Minmax => NormKind::GlobalMinMax,
            },
        },
        network,
        sde: match a.sde {
            SdeArg::Ve => SdeChoice::Ve {
                sigma_min: a.sigma_min,
                sigma_max: a.sigma_max,
            },
            SdeArg::Vp => SdeChoice::Given(SdeConfig::Vp(
                VpSde::try_new(a.beta_min, a.beta_max)
                    .map_err(|e| anyhow::anyhow!("--beta-min/--beta-max: {e}"))?,
            )),
        },
        config: TrainConfig {
            batch_size: a.batch,
            learning_rate: a.lr,
            weight_decay: a.weight_decay,
            warmup_steps: a.warmup,
            grad_clip: a.grad_clip,
            ema_decay: a.ema,
            max_steps: a.steps,
            max_minutes: a.max_minutes,
            seed: a.seed,
            augment: !a.no_augment,
            log_every: a.log_every,
            checkpoint_every: a.checkpoint_every,
            val_fraction: a.val_fraction,
            split_seed: a.split_seed,
            val_max: a.val_max,
            shift_px: a.shift_px,
            ..Default::default()
        },
        resume: a.resume,
        max_memory: a.max_memory,
    })
}

/// After a failed training run: removes the folder it created when no checkpoint reached it
/// (only its loss.csv), so that a failure leaves nothing half-written; a folder that existed
/// before, or that holds weights, is left alone (hours of training are not thrown away).
pub(crate) fn remove_if_no_checkpoint(out: &Path, created: bool) {
    if created && !out.join(crate::prior::checkpoint::WEIGHTS_FILE).exists() {
        let _ = std::fs::remove_dir_all(out);
    }
}

pub(crate) fn load_prior(spec: &str, dev: &Device) -> anyhow::Result<ScoreModel> {
    if spec == "default" {
        Ok(crate::prior::default_prior(dev)?)
    } else {
        Ok(ScoreModel::load(Path::new(spec), dev)?)
    }
}

fn run_sample(a: SampleArgs) -> anyhow::Result<()> {
    tune_malloc();
    if a.n == 0 || a.steps == 0 || a.batch == 0 {
        bail!("--n, --steps and --batch must be positive");
    }
    // The cube and its PNG never replace a file of the prior, nor land inside its folder.
    let png = a.out.with_extension("png");
    for out in [&a.out, &png] {
        super::common::check_output(out, &[Path::new(&a.prior)])?;
    }
    let dev = device(a.device)?;
    let model = load_prior(&a.prior, &dev)?;
    let cfg = model.config().clone();
    super::common::check_network_batch(&cfg.network, a.batch.min(a.n), false, a.max_memory)?;
    let size = model.image_size();
    let pb = progress_bar(a.quiet, a.n.div_ceil(a.batch) * a.steps);
    let draw = Draw {
        n: a.n,
        steps: a.steps,
        sampler: a.sampler,
        snr: a.snr,
        corrector_steps: a.corrector_steps,
        batch: a.batch,
        seed: a.seed,
        denoise: a.denoise,
    };
    let mut out = draw_samples(&model, &draw, &pb)?;
    pb.finish_and_clear();
    if a.physical {
        for v in out.iter_mut() {
            *v = cfg.normalisation.to_physical(*v);
        }
    }
    let meta = CubeMeta {
        physical: a.physical,
        sampler: a.sampler,
        steps: a.steps,
        seed: a.seed,
        prior: &a.prior,
    };
    write_fits_cube(&a.out, &out, a.n, size, size, &cfg, &meta)?;
    let imgs: Vec<&[f32]> = out.chunks(size * size).collect();
    let ncols = (a.n as f64).sqrt().ceil() as usize;
    let zoom = (256 / size).max(1);
    crate::report::plot_util::image_grid(&png, &imgs, size, size, ncols, zoom, None)?;
    eprintln!(
        "wrote {} samples ({}², {:?} sampler, {} steps) to {} and {}",
        a.n,
        size,
        a.sampler,
        a.steps,
        a.out.display(),
        png.display()
    );
    Ok(())
}

use crate::pipeline::split::split_indices;

/// `--data` prepared as the prior's training images were (its size and normalisation), and up
/// to `n` indices (seeded) of the `split` part of it.
fn split_images(
    prior: &str,
    cfg: &crate::prior::CheckpointConfig,
    size: usize,
    path: &Path,
    split: SplitArg,
    n: usize,
    seed: u64,
) -> anyhow::Result<(data::Dataset, Vec<usize>)> {
    let raw = data::read_images(path)?;
    let norm = match cfg.normalisation {
        data::Normalisation::PerImagePeak { .. } => NormKind::PerImagePeak,
        _ => NormKind::GlobalMinMax,
    };
    let pp = Preprocess {
        size,
        crop: None,
        resample: Resample::Area,
        norm,
    };
    let ds = data::prepare(&raw, &pp, path)?;
    let idx = split_indices(prior, path, ds.images.n, split, n, seed)?;
    Ok((ds, idx))
}

fn run_stats(a: StatsArgs) -> anyhow::Result<()> {
    use crate::prior::stats;
    use crate::report::plot_util::{line_plot, Series};
    use plotters::style::RGBColor;
    tune_malloc();
    if a.n == 0 || a.steps == 0 || a.batch == 0 || a.bins == 0 {
        bail!("--n, --steps, --batch and --bins must be positive");
    }
    let dev = device(a.device)?;
    let model = load_prior(&a.prior, &dev)?;
    let cfg = model.config().clone();
    let size = model.image_size();
    let (ds, idx) = split_images(&a.prior, &cfg, size, &a.data, a.split, a.n, a.seed)?;
    let floor = (!a.no_floor).then(|| crate::validate::truths::resolution_floor(&model));
    let images: Vec<Vec<f32>> = idx
        .iter()
        .map(|&i| {
            let mut img = ds.images.image(i).to_vec();
            if let Some(f) = floor {
                crate::validate::truths::add_floor(&mut img, f, a.seed, i);
            }
            img
        })
        .collect();
    let training: Vec<&[f32]> = images.iter().map(|v| v.as_slice()).collect();

    // The output folder must be neither the prior's nor hold the training data.
    {
        let inputs = [Path::new(&a.prior), a.data.as_path()];
        for f in [
            "samples.fits",
            "compare.png",
            "pixels.png",
            "flux.png",
            "power.png",
            "stats.json",
        ] {
            let p = a.out.join(f);
            if a.out.is_dir() {
                super::common::check_output(&p, &inputs)?;
            }
        }
        super::common::check_checkpoint_dir(&a.out, false, true, &inputs)?;
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create output folder {}", a.out.display()))?;
    let pb = progress_bar(a.quiet, a.n.div_ceil(a.batch) * a.steps);
    let draw = Draw {
        n: a.n,
        steps: a.steps,
        sampler: a.sampler,
        snr: 0.16,
        corrector_steps: 1,
        batch: a.batch,
        seed: a.seed,
        denoise: floor.is_none(),
    };
    let t0 = std::time::Instant::now();
    let out = draw_samples(&model, &draw, &pb)?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let samples: Vec<&[f32]> = out.chunks(size * size).collect();
    let meta = CubeMeta {
        physical: false,
        sampler: a.sampler,
        steps: a.steps,
        seed: a.seed,
        prior: &a.prior,
    };
    write_fits_cube(
        &a.out.join("samples.fits"),
        &out,
        a.n,
        size,
        size,
        &cfg,
        &meta,
    )?;

    let c = stats::compare(&training, &samples, size, a.bins);
    // Training images on the top rows, samples below, each on its own grey scale.
    // A validation split can hold fewer images than --n samples.
    let shown = 8.min(a.n).min(training.len());
    let mut grid: Vec<&[f32]> = training[..shown].to_vec();
    grid.extend_from_slice(&samples[..shown]);
    let zoom = (128 / size).max(1);
    crate::report::plot_util::image_grid(
        &a.out.join("compare.png"),
        &grid,
        size,
        size,
        shown.min(8),
        zoom,
        None,
    )?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let centres: Vec<f64> = c.edges.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let pts =
        |v: &[f64]| -> Vec<(f64, f64)> { centres.iter().copied().zip(v.iter().copied()).collect() };
    let (ht, hs) = (pts(&c.training.histogram), pts(&c.samples.histogram));
    line_plot(
        &a.out.join("pixels.png"),
        &format!("Pixel values (KS distance {:.3})", c.ks_pixels),
        "pixel value (model units)",
        "density",
        &[
            Series {
                name: "training",
                points: &ht,
                color: blue,
            },
            Series {
                name: "prior samples",
                points: &hs,
                color: orange,
            },
        ],
        true,
    )?;
    let flux_edges = {
        let all = c.training.flux.iter().chain(&c.samples.flux);
        let lo = all.clone().cloned().fold(f64::MAX, f64::min);
        let hi = all.cloned().fold(f64::MIN, f64::max).max(lo + 1e-9);
        (0..=a.bins)
            .map(|i| lo + (hi - lo) * i as f64 / a.bins as f64)
            .collect::<Vec<f64>>()
    };
    let flux_density = |f: &[f64]| -> Vec<(f64, f64)> {
        let as32: Vec<f32> = f.iter().map(|&v| v as f32).collect();
        let h = stats::pixel_histogram(&[&as32], &flux_edges);
        flux_edges
            .windows(2)
            .map(|w| 0.5 * (w[0] + w[1]))
            .zip(h)
            .collect()
    };
    let (ft, fs) = (
        flux_density(&c.training.flux),
        flux_density(&c.samples.flux),
    );
    line_plot(
        &a.out.join("flux.png"),
        &format!("Total flux (KS distance {:.3})", c.ks_flux),
        "total flux (model units)",
        "density",
        &[
            Series {
                name: "training",
                points: &ft,
                color: blue,
            },
            Series {
                name: "prior samples",
                points: &fs,
                color: orange,
            },
        ],
        false,
    )?;
    let spec = |p: &[f64]| -> Vec<(f64, f64)> {
        p.iter()
            .enumerate()
            .skip(1)
            .map(|(k, &v)| (k as f64, v))
            .collect()
    };
    let (pt, ps) = (spec(&c.training.power), spec(&c.samples.power));
    line_plot(
        &a.out.join("power.png"),
        &format!(
            "Radial power spectrum (max |log10 ratio| {:.2})",
            c.power_max_abs_log_ratio
        ),
        "k (cycles per image)",
        "power",
        &[
            Series {
                name: "training",
                points: &pt,
                color: blue,
            },
            Series {
                name: "prior samples",
                points: &ps,
                color: orange,
            },
        ],
        true,
    )?;
    let json = serde_json::json!({
        "prior": a.prior,
        "data": a.data,
        "n": a.n,
        "steps": a.steps,
        "sampler": format!("{:?}", a.sampler),
        "seed": a.seed,
        "split": format!("{:?}", a.split).to_lowercase(),
        "reference_images": training.len(),
        "floor": floor,
        "sampling_seconds": secs,
        "comparison": c,
    });
    let jp = a.out.join("stats.json");
    crate::io::write_atomic(&jp, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("cannot write {}", jp.display()))?;
    if let Some(f) = floor {
        eprintln!(
            "compared at the prior's resolution floor: samples undenoised at σ_min, images plus \
             N(0, {f:.1e}²) per pixel (--no-floor: denoised samples against the images as they are)"
        );
    }
    eprintln!(
        "{} samples vs {} {} images: KS pixels {:.3}, KS flux {:.3} (flux mean {:.1} vs {:.1}), \
         max |log10 power ratio| {:.2}; sampling took {:.0} s; results in {}",
        a.n,
        training.len(),
        match a.split {
            SplitArg::All => "data",
            SplitArg::Val => "validation-split",
            SplitArg::Train => "training-split",
        },
        c.ks_pixels,
        c.ks_flux,
        c.samples.flux_mean,
        c.training.flux_mean,
        c.power_max_abs_log_ratio,
        secs,
        a.out.display()
    );
    Ok(())
}

/// `prior logp`: reads the planes, brings them to the prior's units as `image` does, and
/// prints the ODE log-density and the ELBO of each (stdout), in nats and bits per pixel.
fn run_logp(a: LogpArgs) -> anyhow::Result<()> {
    use crate::prior::logp::{self, ElboOptions, OdeOptions};
    tune_malloc();
    if a.steps == 0 && a.elbo_samples == 0 {
        bail!("--steps 0 and --elbo-samples 0 leave nothing to estimate");
    }
    if let Some(f) = a.flux_scale {
        if !(f > 0.0 && f.is_finite()) {
            bail!("--flux-scale must be positive and finite, got {f}");
        }
    }
    let path = a.image.display();
    let img =
        crate::io::read_image(&a.image).with_context(|| format!("cannot read --image {path}"))?;
    let shape = img.shape.clone();
    if shape.len() < 2 {
        bail!(
            "--image {path}: a {}-D array of shape {shape:?}, not an image",
            shape.len()
        );
    }
    let (ny, nx) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let planes: usize = shape[..shape.len() - 2].iter().product();
    if planes == 0 || ny == 0 || nx == 0 {
        bail!("--image {path}: holds no pixel (shape {shape:?})");
    }
    let dev = device(a.device)?;
    let model = load_prior(&a.prior, &dev)?;
    let cfg = model.config().clone();
    let size = model.image_size();
    if ny != size || nx != size {
        bail!(
            "--image {path}: its planes are {ny}×{nx} pixels, but the prior '{}' works on \
             {size}×{size} images: resample or crop the image to {size}×{size} first (a density \
             at another size is not this prior's)",
            a.prior
        );
    }
    let d = size * size;

    // Units: what `image` divides the sky by to reach the prior's (its flux scale).
    let header_scale = img.get_f64("FLUXSCL").filter(|f| *f > 0.0 && f.is_finite());
    let model_units = img
        .get_str("BUNIT")
        .is_some_and(|u| u.trim().eq_ignore_ascii_case("model units"));
    let (fixed, how): (Option<f64>, String) = match (a.flux_scale, header_scale, model_units) {
        (Some(f), _, _) => (Some(f), format!("divided by --flux-scale {f}")),
        (None, Some(f), _) => (
            Some(f),
            format!(
                "divided by its FLUXSCL {f:.6}, the flux scale of the `image` run that wrote it \
                 (its value at prior value 1)"
            ),
        ),
        (None, None, true) => (
            Some(1.0),
            "already in the prior's model units (BUNIT 'model units'), not rescaled".into(),
        ),
        (None, None, false) => (
            None,
            "each plane divided by its own peak: the per-image-peak normalisation of the \
             training images, and `image`'s flux scale without --flux-scale (negative pixels \
             kept, not clipped as in training)"
                .into(),
        ),
    };
    let mut data = Vec::with_capacity(planes * d);
    let mut scales = Vec::with_capacity(planes);
    for p in 0..planes {
        let plane = &img.data[p * d..(p + 1) * d];
        let bad = plane.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            bail!(
                "--image {path}: plane {p} holds {bad} NaN or infinite pixel(s) (blanked?): the \
                 density is defined on finite images only"
            );
        }
        let scale = match fixed {
            Some(f) => f,
            None => {
                let peak = plane.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if peak <= 0.0 {
                    bail!(
                        "--image {path}: plane {p} has no positive peak (its maximum is {peak}): \
                         nothing to normalise by; give --flux-scale"
                    );
                }
                peak
            }
        };
        scales.push(scale);
        data.extend(plane.iter().map(|&v| (v / scale) as f32));
    }
    let x = Tensor::from_vec(data, (planes, 1, size, size), &dev)?;

    let point = match a.at {
        AtArg::Noisy => logp::Point::Noisy,
        AtArg::Image => logp::Point::Image,
    };
    let ode_images = (a.batch / a.probes).max(1);
    if a.steps > 0 {
        let rows = ode_images.min(planes) * a.probes;
        super::common::check_network_batch(&cfg.network, rows, true, a.max_memory)?;
    }
    if a.elbo_samples > 0 {
        let rows = a.batch.min(planes * a.elbo_samples);
        super::common::check_network_batch(&cfg.network, rows, false, a.max_memory)?;
    }
    let ode = if a.steps > 0 {
        let opts = OdeOptions {
            steps: a.steps,
            probes: a.probes,
            seed: a.seed,
            batch: a.batch,
            point,
        };
        let pb = counted_bar(a.quiet, planes.div_ceil(ode_images) * a.steps, "ODE steps");
        let t0 = std::time::Instant::now();
        let r = logp::ode_log_density(&model, &x, &opts, &super::interrupt::Terminal::bar(&pb))?;
        pb.finish_and_clear();
        Some((r, t0.elapsed().as_secs_f64()))
    } else {
        None
    };
    let elbo = if a.elbo_samples > 0 {
        let opts = ElboOptions {
            samples: a.elbo_samples,
            seed: a.seed,
            batch: a.batch,
            point,
        };
        let pb = counted_bar(
            a.quiet,
            (planes * a.elbo_samples).div_ceil(a.batch),
            "ELBO batches",
        );
        let t0 = std::time::Instant::now();
        let r = logp::elbo(&model, &x, &opts, &super::interrupt::Terminal::bar(&pb))?;
        pb.finish_and_clear();
        Some((r, t0.elapsed().as_secs_f64()))
    } else {
        None
    };

    let sde = match cfg.sde {
        SdeConfig::Ve(v) => format!("VE SDE, σ {}…{:.4}", v.sigma_min, v.sigma_max),
        SdeConfig::Vp(v) => format!("VP SDE, β {}…{}", v.beta_min, v.beta_max),
    };
    let trained = match cfg.normalisation {
        data::Normalisation::PerImagePeak { .. } => "per-image-peak".to_string(),
        data::Normalisation::Global { offset, scale } => format!("(v − {offset})/{scale}"),
        data::Normalisation::NoiseRms { rms } => format!("v/{rms} (noise rms)"),
    };
    println!(
        "prior '{}': {size}×{size} images, {sde}, trained on {trained} normalised images",
        a.prior
    );
    println!("image {path}: {planes} plane(s); units: {how}");
    let sig0 = cfg.sde.sigma(cfg.t_eps);
    let at = match point {
        logp::Point::Noisy => {
            format!("E_z log p(x + {sig0:.4e} z), averaged over fresh noise z per probe and draw")
        }
        logp::Point::Image => "log p(x) at the image itself (--at image)".to_string(),
    };
    println!(
        "log p: the density at the prior's smallest noise level σ(t_eps = {}) = {sig0:.4e}, \
         in those units, nats: {at}; bits/dim = −log p/({d}·ln 2) of the continuous density \
         (no dequantisation offset); ± one standard error",
        cfg.t_eps,
    );
    let cell = |r: Option<&logp::LogDensity>| match r {
        Some(r) => format!(
            "{:>12.1} ± {:<8.1}{:>9.4} ± {:<7.4}",
            r.nats,
            r.std_err,
            r.bits_per_dim(),
            r.bits_per_dim_err()
        ),
        None => format!("{:>12} {:<10}{:>9} {:<9}", "—", "", "—", ""),
    };
    println!(
        "{:>5}  {:>11}  {:>23}{:>19}  {:>23}{:>19}",
        "plane", "scale", "ODE log p (nats)", "bits/dim", "ELBO (nats)", "bits/dim"
    );
    for (p, scale) in scales.iter().enumerate() {
        println!(
            "{p:>5}  {scale:>11.4e}  {}  {}",
            cell(ode.as_ref().map(|(r, _)| &r[p])),
            cell(elbo.as_ref().map(|(r, _)| &r[p]))
        );
    }
    let mut how_run = Vec::new();
    if let Some((_, secs)) = &ode {
        how_run.push(format!(
            "ODE: RK4, {} steps, {} Rademacher probes, seed {}, {secs:.1} s",
            a.steps, a.probes, a.seed
        ));
    }
    if let Some((_, secs)) = &elbo {
        how_run.push(format!(
            "ELBO: {} draws in {} time strata, seed {}, {secs:.1} s (a lower bound of log p)",
            a.elbo_samples,
            a.elbo_samples / 2,
            a.seed
        ));
    }
    println!("{}", how_run.join("; "));
    Ok(())
}

/// A progress bar counting `unit` (hidden with `quiet`).
/// `prior reference`: the ELBO of `--n` draws of the prior, each divided by its peak, and of
/// `--data` images if given, written as a [`crate::prior::reference::LogpReference`].
fn run_reference(a: ReferenceArgs) -> anyhow::Result<()> {
    use crate::prior::logp::{self, ElboOptions, Point};
    use crate::prior::reference::LogpReference;
    tune_malloc();
    if a.elbo_samples == 0 {
        bail!("--elbo-samples 0 leaves nothing to estimate");
    }
    let mut inputs = vec![Path::new(&a.prior)];
    if let Some(d) = &a.data {
        inputs.push(d.as_path());
    }
    super::common::check_output(&a.out, &inputs)?;
    let dev = device(a.device)?;
    let model = load_prior(&a.prior, &dev)?;
    let cfg = model.config().clone();
    let size = model.image_size();
    let d = size * size;
    super::common::check_network_batch(&cfg.network, a.batch, false, a.max_memory)?;
    let t0 = std::time::Instant::now();

    // The prior's own draws, as `image` ends its reverse diffusion, each divided by its peak.
    let pb = progress_bar(a.quiet, a.n.div_ceil(a.batch) * a.steps);
    let draw = Draw {
        n: a.n,
        steps: a.steps,
        sampler: SamplerArg::Em,
        snr: 0.16,
        corrector_steps: 1,
        batch: a.batch,
        seed: a.seed,
        denoise: false,
    };
    let draws = draw_samples(&model, &draw, &pb)?;
    pb.finish_and_clear();
    let mut flat = Vec::with_capacity(draws.len());
    let mut skipped = 0usize;
    for img in draws.chunks(d) {
        let peak = img.iter().copied().fold(f32::MIN, f32::max);
        if peak > 0.0 && peak.is_finite() {
            flat.extend(img.iter().map(|v| v / peak));
        } else {
            skipped += 1;
        }
    }
    let kept = flat.len() / d;
    if kept < 2 {
        bail!(
            "only {kept} of the prior's {} draws have a positive peak",
            a.n
        );
    }
    let opts = ElboOptions {
        samples: a.elbo_samples,
        seed: a.seed,
        batch: a.batch,
        point: Point::Noisy,
    };
    let elbo_of = |x: Tensor, k: usize, what: &str| -> anyhow::Result<Vec<f64>> {
        let pb = counted_bar(a.quiet, (k * a.elbo_samples).div_ceil(a.batch), what);
        let r = logp::elbo(&model, &x, &opts, &super::interrupt::Terminal::bar(&pb))?;
        pb.finish_and_clear();
        Ok(r.iter().map(|l| l.nats).collect())
    };
    let nats = elbo_of(
        Tensor::from_vec(flat, (kept, 1, size, size), &dev)?,
        kept,
        "ELBO batches (draws)",
    )?;
    let mut what = format!(
        "{kept} draws of the prior '{}' (Euler–Maruyama, {} steps, seed {}, no final denoising; \
         each divided by its peak{})",
        a.prior,
        a.steps,
        a.seed,
        if skipped > 0 {
            format!("; {skipped} without a positive peak left out")
        } else {
            String::new()
        }
    );
    let images_nats = match &a.data {
        None => Vec::new(),
        Some(path) => {
            let (ds, idx) = split_images(&a.prior, &cfg, size, path, a.split, a.n_images, a.seed)?;
            let mut imgs = Vec::with_capacity(idx.len() * d);
            for &i in &idx {
                imgs.extend_from_slice(ds.images.image(i));
            }
            what.push_str(&format!(
                "; beside them {} images of {} ({:?} split, seed {}) prepared as the training \
                 images",
                idx.len(),
                path.display(),
                a.split,
                a.seed
            ));
            elbo_of(
                Tensor::from_vec(imgs, (idx.len(), 1, size, size), &dev)?,
                idx.len(),
                "ELBO batches (images)",
            )?
        }
    };
    let reference = LogpReference::new(what.clone(), a.elbo_samples, a.seed, nats, images_nats);
    let json = serde_json::to_vec_pretty(&reference)?;
    crate::io::write_atomic(&a.out, &json)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("ELBO ({} draws each) of {what}:", a.elbo_samples);
    let q = |v: &[f64]| {
        let r = LogpReference::new(String::new(), 2, 0, v.to_vec(), Vec::new());
        format!(
            "5 / 50 / 95 %: {:.0} / {:.0} / {:.0} nats (range {:.0} – {:.0})",
            r.quantile(0.05),
            r.quantile(0.5),
            r.quantile(0.95),
            r.nats[0],
            r.nats[r.nats.len() - 1]
        )
    };
    println!("  the prior's draws: {}", q(&reference.nats));
    if !reference.images_nats.is_empty() {
        println!("  the images:        {}", q(&reference.images_nats));
    }
    println!(
        "  wrote {} in {:.1} s",
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn counted_bar(quiet: bool, len: usize, unit: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  eta {{eta}}"
        ))
        .unwrap()
        .progress_chars("=> "),
    );
    pb
}

/// What a sample cube's header records of how it was drawn.
struct CubeMeta<'a> {
    physical: bool,
    sampler: SamplerArg,
    steps: usize,
    seed: u64,
    prior: &'a str,
}

/// How to draw unconditional samples.
pub(crate) struct Draw {
    pub n: usize,
    pub steps: usize,
    pub sampler: SamplerArg,
    pub snr: f64,
    pub corrector_steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub denoise: bool,
}

fn progress_bar(quiet: bool, len: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb
}

/// Unconditional samples in model units, `d.n` images of `size²` concatenated.
pub(crate) fn draw_samples(
    model: &ScoreModel,
    d: &Draw,
    pb: &ProgressBar,
) -> anyhow::Result<Vec<f32>> {
    let sde = *model.sde();
    let t_eps = model.config().t_eps;
    let size = model.image_size();
    let dev = model.device().clone();
    let mut rng = StdRng::seed_from_u64(d.seed);
    let score = |x: &Tensor, t: f64| model.score(x, t);
    let mut out: Vec<f32> = Vec::with_capacity(d.n * size * size);
    let mut done = 0;
    while done < d.n {
        let b = d.batch.min(d.n - done);
        let x0 = sample::gaussian_like(
            &Tensor::zeros((b, 1, size, size), candle_core::DType::F32, &dev)?,
            &mut rng,
        )?
        .affine(sde.prior_std(), 0.0)?;
        let x = match d.sampler {
            SamplerArg::Em => sample::euler_maruyama(
                &score,
                &sde,
                &x0,
                d.steps,
                t_eps,
                &mut rng,
                &super::interrupt::Terminal::bar(pb),
            )?,
            SamplerArg::Pc => sample::predictor_corrector(
                &score,
                &sde,
                &x0,
                d.steps,
                d.snr,
                d.corrector_steps,
                t_eps,
                &mut rng,
                &super::interrupt::Terminal::bar(pb),
            )?,
            SamplerArg::Ode => sample::probability_flow_heun(
                &score,
                &sde,
                &x0,
                d.steps,
                t_eps,
                &super::interrupt::Terminal::bar(pb),
            )?,
        };
        let x = if d.denoise {
            model.denoise(&x, t_eps)?
        } else {
            x
        };
        out.extend(x.flatten_all()?.to_vec1::<f32>()?);
        done += b;
    }
    Ok(out)
}

/// Writes an N×H×W float32 cube (no sky WCS: prior samples are not on the sky) through a
/// temporary file renamed into place.
fn write_fits_cube(
    path: &Path,
    data: &[f32],
    n: usize,
    h: usize,
    w: usize,
    cfg: &crate::prior::CheckpointConfig,
    meta: &CubeMeta,
) -> anyhow::Result<()> {
    use fitsio::images::{ImageDescription, ImageType};
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = match dir {
        Some(d) => d.join(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        )),
        None => PathBuf::from(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        )),
    };
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> anyhow::Result<()> {
        let desc = ImageDescription {
            data_type: ImageType::Float,
            dimensions: &[n, h, w],
        };
        let mut f = fitsio::FitsFile::create(&tmp)
            .with_custom_primary(&desc)
            .open()
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let hdu = f.primary_hdu().context("primary HDU")?;
        hdu.write_image(&mut f, data).context("writing samples")?;
        let units = if meta.physical {
            "training-data units"
        } else {
            "model units"
        };
        hdu.write_key(&mut f, "BUNIT", units)?;
        hdu.write_key(&mut f, "SAMPLER", format!("{:?}", meta.sampler).as_str())?;
        hdu.write_key(&mut f, "NSTEPS", meta.steps as i64)?;
        hdu.write_key(&mut f, "SEED", meta.seed as i64)?;
        hdu.write_key(&mut f, "SDE", cfg.sde.name())?;
        hdu.write_key(&mut f, "PRIOR", meta.prior)?;
        hdu.write_key(&mut f, "NORMSCL", cfg.normalisation.scale())?;
        hdu.write_key(&mut f, "NORMOFF", cfg.normalisation.offset())?;
        Ok(())
    })()
    .and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    // A failed write never leaves its temporary file behind.
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
