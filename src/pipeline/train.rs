//! The prior-training job (`interf-image prior train`): images read and prepared as the prior
//! will see them, a validation split held out, σ_max by Song & Ermon's rule on the training part,
//! and the resumable training loop ([`crate::prior::train::train`]) writing its checkpoints.

use std::path::PathBuf;

use candle_core::Device;

use super::resources::check_network_batch;
use super::Result;
use crate::observe::Observer;
use crate::prior::data::{self, Preprocess};
use crate::prior::model::UNetConfig;
use crate::prior::sde::{sigma_max_from_data, SdeConfig, VeSde};
use crate::prior::train::{self, TrainConfig, TrainSummary};

/// The diffusion the prior is trained for.
#[derive(Debug, Clone, Copy)]
pub enum SdeChoice {
    /// Variance exploding, σ from `sigma_min` to `sigma_max` (`None`: the largest distance
    /// between two training images).
    Ve {
        sigma_min: f64,
        sigma_max: Option<f64>,
    },
    /// Variance preserving, or any SDE given in full.
    Given(SdeConfig),
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Training images: .npy (N×H×W) or a FITS cube.
    pub data: PathBuf,
    /// The checkpoint folder written (config.json, weights, loss.csv, loss.png, train state).
    pub out: PathBuf,
    pub preprocess: Preprocess,
    pub network: UNetConfig,
    pub sde: SdeChoice,
    pub config: TrainConfig,
    /// Continue from the train state in `out`.
    pub resume: bool,
    pub max_memory: Option<u64>,
}

/// Trains (or, with `resume`, continues training) a prior on `opts.data`. The observer's log
/// gets what was trained on (data, split, SDE, network) before the loop, its stage "training"
/// the steps; a stop request ends the run at a checkpoint.
pub fn train_prior(
    opts: &TrainOptions,
    device: &Device,
    obs: &dyn Observer,
) -> Result<TrainSummary> {
    let raw = data::read_images(&opts.data)?;
    let ds = data::prepare(&raw, &opts.preprocess, &opts.data)?;
    if ds.images.n == 0 {
        input_error!("{}: holds no image to train on", opts.data.display());
    }
    if (0..ds.images.n).all(|i| ds.images.image(i).iter().all(|&v| v == 0.0)) {
        input_error!(
            "{}: every one of its {} images is zero (after cropping and normalising): nothing \
             to learn",
            opts.data.display(),
            ds.images.n
        );
    }
    obs.log(&format!(
        "data: {} images {}×{} from {} → {}², {:?}",
        raw.n,
        raw.h,
        raw.w,
        opts.data.display(),
        opts.preprocess.size,
        ds.normalisation
    ));
    let tc = &opts.config;
    let split = train::split_for(&ds, tc)?;
    let train_idx = split.train_indices();
    obs.log(&format!(
        "split: {} training, {} validation images (--val-fraction {}, --split-seed {}); \
         augmentation: {}",
        train_idx.len(),
        split.val_indices.len(),
        tc.val_fraction,
        tc.split_seed,
        if tc.augment {
            format!(
                "8 dihedral symmetries, shifts of ±{} px (zero fill)",
                tc.shift_px
            )
        } else {
            "none".to_string()
        }
    ));
    let net = &opts.network;
    if let Err(m) = net
        .validate()
        .and_then(|()| crate::prior::checkpoint::check_network_size(net))
    {
        input_error!("{m}");
    }
    check_network_batch(net, tc.batch_size, true, opts.max_memory)?;
    let sde = match opts.sde {
        SdeChoice::Given(s) => s,
        SdeChoice::Ve {
            sigma_min,
            sigma_max,
        } => {
            let smax = match sigma_max {
                Some(s) => s,
                None => {
                    // Song & Ermon's rule on the training part only: σ_max must not depend
                    // on the images held out.
                    let imgs: Vec<&[f32]> = train_idx.iter().map(|&i| ds.images.image(i)).collect();
                    let s = sigma_max_from_data(&imgs, 1000);
                    // One image, or identical (e.g. all-zero) images, have no spread to set
                    // the largest noise level from.
                    if s.is_nan() || s <= sigma_min {
                        input_error!(
                            "{}: the largest distance between two training images is {s} \
                             ({} training images): need at least two different images, or \
                             give --sigma-max",
                            opts.data.display(),
                            imgs.len()
                        );
                    }
                    s
                }
            };
            match VeSde::try_new(sigma_min, smax) {
                Ok(v) => SdeConfig::Ve(v),
                Err(e) => input_error!("--sigma-min/--sigma-max: {e}"),
            }
        }
    };
    obs.log(&format!("sde: {sde:?}"));
    {
        let (_, vm) = crate::prior::model::new_unet(net, 0, &Device::Cpu)?;
        obs.log(&format!(
            "network: {} parameters ({:?})",
            crate::prior::model::num_params(&vm),
            net
        ));
    }
    Ok(train::train(
        &ds,
        net,
        sde,
        tc.clone(),
        &opts.out,
        opts.resume,
        device,
        obs,
    )?)
}
