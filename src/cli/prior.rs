//! `interf-image prior train|sample`: train a score-based prior, draw unconditional samples.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::prior::data::{self, NormKind, Preprocess, Resample};
use crate::prior::sde::{sigma_max_from_data, Sde, SdeConfig, VeSde, VpSde};
use crate::prior::train::{self, TrainConfig};
use crate::prior::{ScoreModel, UNetConfig};
use crate::sample;

#[derive(Debug, Subcommand)]
pub enum PriorCommand {
    /// Train a score network by denoising score matching on a stack of images.
    Train(TrainArgs),
    /// Draw unconditional samples from a trained prior.
    Sample(SampleArgs),
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
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
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
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
    /// Stop after this many minutes of this run (a checkpoint is written).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Disable random flips and 90° rotations.
    #[arg(long)]
    pub no_augment: bool,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Continue from the train_state.* files in --out.
    #[arg(long)]
    pub resume: bool,
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
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = SamplerArg::Em)]
    pub sampler: SamplerArg,
    /// Signal-to-noise ratio of the Langevin corrector (pc).
    #[arg(long, default_value_t = 0.16)]
    pub snr: f64,
    /// Langevin steps per time step (pc).
    #[arg(long, default_value_t = 1)]
    pub corrector_steps: usize,
    /// Samples drawn at once.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
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

/// Runs a `prior` subcommand.
pub fn run(cmd: PriorCommand) -> anyhow::Result<()> {
    match cmd {
        PriorCommand::Train(a) => run_train(a),
        PriorCommand::Sample(a) => run_sample(a),
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
        // SAFETY: mallopt only changes allocator tunables; called before heavy allocation.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
            mallopt(M_TOP_PAD, 256 << 20);
        }
    }
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    tune_malloc();
    let dev = device(a.device)?;
    let raw = data::read_images(&a.data)?;
    let pp = Preprocess {
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
    };
    let ds = data::prepare(&raw, &pp, &a.data)?;
    eprintln!(
        "data: {} images {}×{} from {} → {}², {:?}",
        raw.n,
        raw.h,
        raw.w,
        a.data.display(),
        a.size,
        ds.normalisation
    );
    let net_cfg = match &a.network_json {
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
    let net_cfg: UNetConfig = net_cfg;
    net_cfg.validate().map_err(anyhow::Error::msg)?;
    let sde = match a.sde {
        SdeArg::Ve => {
            let smax = match a.sigma_max {
                Some(s) => s,
                None => {
                    let imgs: Vec<&[f32]> = (0..ds.images.n).map(|i| ds.images.image(i)).collect();
                    sigma_max_from_data(&imgs, 1000)
                }
            };
            SdeConfig::Ve(VeSde::new(a.sigma_min, smax))
        }
        SdeArg::Vp => SdeConfig::Vp(VpSde::new(a.beta_min, a.beta_max)),
    };
    eprintln!("sde: {sde:?}");
    let tc = TrainConfig {
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
        ..Default::default()
    };
    {
        let (_, vm) = crate::prior::model::new_unet(&net_cfg, 0, &Device::Cpu)?;
        eprintln!(
            "network: {} parameters ({:?})",
            crate::prior::model::num_params(&vm),
            net_cfg
        );
    }
    let s = train::train(&ds, &net_cfg, sde, tc, &a.out, a.resume, &dev, !a.quiet)?;
    eprintln!(
        "trained {} steps in {:.0} s, final loss {:.4}; checkpoint in {}",
        s.steps,
        s.wall_time_s,
        s.final_loss,
        s.out_dir.display()
    );
    Ok(())
}

fn load_prior(spec: &str, dev: &Device) -> anyhow::Result<ScoreModel> {
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
    let dev = device(a.device)?;
    let model = load_prior(&a.prior, &dev)?;
    let sde = *model.sde();
    let cfg = model.config().clone();
    let size = model.image_size();
    let mut rng = StdRng::seed_from_u64(a.seed);
    let evals_per_step = match a.sampler {
        SamplerArg::Em => 1,
        SamplerArg::Pc => 1 + a.corrector_steps,
        SamplerArg::Ode => 2,
    };
    let nbatches = a.n.div_ceil(a.batch);
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new((nbatches * a.steps) as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps  eta {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        pb
    };
    let score = |x: &Tensor, t: f64| model.score(x, t);
    let mut out: Vec<f32> = Vec::with_capacity(a.n * size * size);
    let mut done = 0;
    while done < a.n {
        let b = a.batch.min(a.n - done);
        let x0 = sample::gaussian_like(
            &Tensor::zeros((b, 1, size, size), candle_core::DType::F32, &dev)?,
            &mut rng,
        )?
        .affine(sde.prior_std(), 0.0)?;
        let x = match a.sampler {
            SamplerArg::Em => {
                sample::euler_maruyama(&score, &sde, &x0, a.steps, cfg.t_eps, &mut rng, Some(&pb))?
            }
            SamplerArg::Pc => sample::predictor_corrector(
                &score,
                &sde,
                &x0,
                a.steps,
                a.snr,
                a.corrector_steps,
                cfg.t_eps,
                &mut rng,
                Some(&pb),
            )?,
            SamplerArg::Ode => {
                sample::probability_flow_heun(&score, &sde, &x0, a.steps, cfg.t_eps, Some(&pb))?
            }
        };
        let x = if a.denoise {
            model.denoise(&x, cfg.t_eps)?
        } else {
            x
        };
        let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        out.extend(v);
        done += b;
    }
    pb.finish_and_clear();
    let _ = evals_per_step;
    if a.physical {
        for v in out.iter_mut() {
            *v = cfg.normalisation.to_physical(*v);
        }
    }
    write_fits_cube(&a.out, &out, a.n, size, size, &cfg, &a)?;
    let png = a.out.with_extension("png");
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

/// Writes an N×H×W float32 cube (no sky WCS: prior samples are not on the sky) through a
/// temporary file renamed into place.
fn write_fits_cube(
    path: &Path,
    data: &[f32],
    n: usize,
    h: usize,
    w: usize,
    cfg: &crate::prior::CheckpointConfig,
    a: &SampleArgs,
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
    {
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
        let units = if a.physical {
            "training-data units"
        } else {
            "model units"
        };
        hdu.write_key(&mut f, "BUNIT", units)?;
        hdu.write_key(&mut f, "SAMPLER", format!("{:?}", a.sampler).as_str())?;
        hdu.write_key(&mut f, "NSTEPS", a.steps as i64)?;
        hdu.write_key(&mut f, "SEED", a.seed as i64)?;
        hdu.write_key(&mut f, "SDE", cfg.sde.name())?;
        hdu.write_key(&mut f, "PRIOR", a.prior.as_str())?;
        hdu.write_key(&mut f, "NORMSCL", cfg.normalisation.scale())?;
        hdu.write_key(&mut f, "NORMOFF", cfg.normalisation.offset())?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
