//! The default prior, embedded in the binary.
use candle_core::Device;

use super::{Result, ScoreModel};

static CONFIG: &[u8] = include_bytes!("../../priors/default/config.json");
static WEIGHTS: &[u8] = include_bytes!("../../priors/default/weights.safetensors");

/// The score model trained on MiraBest FIRST radio galaxies (64², see `priors/default/README.md`).
pub fn default_prior(device: &Device) -> Result<ScoreModel> {
    ScoreModel::from_bytes(CONFIG, WEIGHTS, device)
}

static REFERENCE: &[u8] = include_bytes!("../../priors/default/logp_reference.json");

/// The built-in prior's log-density reference ([`super::reference`]): the ELBO of its own draws
/// and of MiraBest images (the file's `images` says which and how it was made).
pub fn default_reference() -> Result<super::reference::LogpReference> {
    super::reference::LogpReference::from_bytes(
        REFERENCE,
        std::path::Path::new("<built-in prior>/logp_reference.json"),
    )
}

#[cfg(test)]
mod tests {
    /// The shipped reference is a real one: the ELBOs of many draws of the prior and of many
    /// MiraBest images, the images in the range the README reports for them (20 960 – 22 160
    /// nats for 40 images at 256 draws) and above most draws (the prior's gap, issue 14).
    #[test]
    fn built_in_reference_holds_the_priors_draws_and_mirabest_images() {
        let r = super::default_reference().unwrap();
        assert!(r.nats.len() >= 50, "{} draws", r.nats.len());
        assert!(r.images_nats.len() >= 50, "{} images", r.images_nats.len());
        let (lo, hi) = (r.images_nats[0], r.images_nats[r.images_nats.len() - 1]);
        assert!(lo > 19_000.0 && hi < 23_500.0, "images' range {lo} – {hi}");
        assert!(
            r.quantile(0.5) < lo,
            "draws' median {} ≥ images' min {lo}",
            r.quantile(0.5)
        );
        assert_eq!(r.elbo_samples, crate::prior::reference::ELBO_SAMPLES);
    }
}
