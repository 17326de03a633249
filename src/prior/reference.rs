//! The prior's log-density of its own typical images, as a reference distribution: the ELBO
//! (nats, [`super::logp::elbo`]) of the prior's unconditional draws, each divided by its peak as
//! the training images were. `image` compares the ELBO of its posterior samples with it — the
//! check of Feng et al. (2023): under a misspecified prior the data pull the samples to where
//! the prior puts little mass, and their log-density falls below everything the prior draws.
//!
//! The prior's draws, not its training images, are the yardstick: a prior that does not yet
//! reproduce its training set (the built-in one: its own draws score 1 750 – 19 800 nats, 60
//! MiraBest images 20 700 – 22 300) would otherwise flag every sky. The training images' ELBOs
//! are kept beside them (`images_nats`) to show that gap.
//!
//! Stored as `logp_reference.json` beside a checkpoint's `config.json` (made by `interf-image
//! prior reference`); the built-in prior carries its own.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PriorError;

/// The file name beside a checkpoint's `config.json`.
pub const FILE_NAME: &str = "logp_reference.json";

/// Monte-Carlo draws of each ELBO, for the reference and for `image`'s samples alike (the
/// ELBO's standard error at 64 draws is about 120 nats for a 64² MiraBest image, a tenth of
/// the spread of the MiraBest images' ELBOs).
pub const ELBO_SAMPLES: usize = 64;

/// Below this fraction of the reference images, the samples are flagged as unusual for the
/// prior; at 0 (below every reference image) as outside what it knows.
pub const UNUSUAL_BELOW: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogpReference {
    pub format_version: u32,
    /// How the reference was made (draws, sampler, steps, seed; images compared).
    pub images: String,
    /// Monte-Carlo draws of each image's ELBO, and their seed.
    pub elbo_samples: usize,
    pub seed: u64,
    /// The ELBO of each of the prior's draws, nats, ascending.
    pub nats: Vec<f64>,
    /// The ELBO of each training-kind image, if any were given, ascending (context only).
    #[serde(default)]
    pub images_nats: Vec<f64>,
}

impl LogpReference {
    /// `nats` in any order; non-finite values are refused by [`Self::validate`].
    pub fn new(
        images: String,
        elbo_samples: usize,
        seed: u64,
        mut nats: Vec<f64>,
        mut images_nats: Vec<f64>,
    ) -> Self {
        nats.sort_by(f64::total_cmp);
        images_nats.sort_by(f64::total_cmp);
        Self {
            format_version: 1,
            images,
            elbo_samples,
            seed,
            nats,
            images_nats,
        }
    }

    pub fn read(path: &Path) -> Result<Self, PriorError> {
        let bytes = std::fs::read(path).map_err(|source| PriorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates; `path` names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, PriorError> {
        let bad = |msg: String| PriorError::Data {
            path: path.to_path_buf(),
            msg: format!("not a prior's log-density reference: {msg}"),
        };
        let mut r: Self = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        r.validate().map_err(bad)?;
        r.nats.sort_by(f64::total_cmp);
        r.images_nats.sort_by(f64::total_cmp);
        Ok(r)
    }

    fn validate(&self) -> Result<(), String> {
        if self.format_version != 1 {
            return Err(format!(
                "format_version {} (this build reads 1)",
                self.format_version
            ));
        }
        if self.nats.len() < 2 {
            return Err(format!(
                "{} reference value(s): a distribution needs at least 2",
                self.nats.len()
            ));
        }
        if let Some(v) = self
            .nats
            .iter()
            .chain(&self.images_nats)
            .find(|v| !v.is_finite())
        {
            return Err(format!("a reference value is {v}, not a finite number"));
        }
        Ok(())
    }

    /// The `q` quantile (0..=1), linear between order statistics.
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.nats.len();
        let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let (i, f) = (pos.floor() as usize, pos.fract());
        match self.nats.get(i + 1) {
            Some(next) => self.nats[i] + f * (next - self.nats[i]),
            None => self.nats[n - 1],
        }
    }

    /// Fraction of the reference images whose ELBO is below `v`.
    pub fn fraction_below(&self, v: f64) -> f64 {
        self.nats.partition_point(|&r| r < v) as f64 / self.nats.len() as f64
    }
}

/// Where the posterior samples sit in the prior's reference distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorCheck {
    /// Median over the samples of their ELBO, nats.
    pub samples_median_nats: f64,
    /// Lowest and highest sample ELBO, nats.
    pub samples_range_nats: [f64; 2],
    /// Fraction of the prior's draws with a lower ELBO than the samples' median.
    pub fraction_of_reference_below: f64,
    /// The prior draws' 5 %, 50 % and 95 % quantiles, nats.
    pub reference_quantiles_nats: [f64; 3],
    /// How many prior draws the reference holds.
    pub reference_images: usize,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the reference distribution.
    Typical,
    /// Below [`UNUSUAL_BELOW`] of the prior's draws.
    Unusual,
    /// Below every draw of the prior: it puts little mass where the samples are.
    Outside,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Typical => "typical of the prior's own draws",
            Verdict::Unusual => {
                "unusual for the prior (below 5 % of its own draws): check the result against \
                 another prior"
            }
            Verdict::Outside => {
                "outside what the prior draws (below every one of its draws): the prior may be \
                 misspecified for this sky; image it under another prior and compare"
            }
        }
    }
}

/// Compares the samples' ELBOs (nats, at least one) with the reference.
pub fn check(reference: &LogpReference, samples_nats: &[f64]) -> PriorCheck {
    let mut s = samples_nats.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    };
    let below = reference.fraction_below(median);
    let verdict = if !(median.is_finite()) || median < reference.nats[0] {
        Verdict::Outside
    } else if below < UNUSUAL_BELOW {
        Verdict::Unusual
    } else {
        Verdict::Typical
    };
    PriorCheck {
        samples_median_nats: median,
        samples_range_nats: [
            s.first().copied().unwrap_or(f64::NAN),
            s.last().copied().unwrap_or(f64::NAN),
        ],
        fraction_of_reference_below: below,
        reference_quantiles_nats: [0.05, 0.5, 0.95].map(|q| reference.quantile(q)),
        reference_images: reference.nats.len(),
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> LogpReference {
        LogpReference::new(
            "test".into(),
            64,
            0,
            (0..100).rev().map(f64::from).collect(),
            vec![5.0, 1.0],
        )
    }

    #[test]
    fn quantiles_and_ranks_of_a_known_set() {
        let r = reference();
        assert_eq!(r.nats[0], 0.0);
        assert_eq!(r.images_nats, [1.0, 5.0]);
        assert_eq!(r.quantile(0.0), 0.0);
        assert_eq!(r.quantile(1.0), 99.0);
        assert!((r.quantile(0.5) - 49.5).abs() < 1e-12);
        assert_eq!(r.fraction_below(-1.0), 0.0);
        assert_eq!(r.fraction_below(10.0), 0.10);
        assert_eq!(r.fraction_below(1e9), 1.0);
    }

    #[test]
    fn verdicts_follow_the_samples_median() {
        let r = reference();
        assert_eq!(check(&r, &[40.0, 60.0, 50.0]).verdict, Verdict::Typical);
        let c = check(&r, &[3.0, 2.0, 4.0, -100.0]);
        assert_eq!(c.samples_median_nats, 2.5);
        assert_eq!(c.verdict, Verdict::Unusual);
        assert_eq!(c.samples_range_nats, [-100.0, 4.0]);
        assert_eq!(check(&r, &[-5.0, -1.0, 80.0]).verdict, Verdict::Outside);
    }

    #[test]
    fn json_round_trip_and_bad_files() {
        let r = reference();
        let bytes = serde_json::to_vec(&r).unwrap();
        let p = Path::new("x/logp_reference.json");
        assert_eq!(LogpReference::from_bytes(&bytes, p).unwrap(), r);
        let one = br#"{"format_version":1,"images":"a","elbo_samples":2,"seed":0,"nats":[1.0]}"#;
        let e = LogpReference::from_bytes(one, p).unwrap_err().to_string();
        assert!(
            e.contains("at least 2") && e.contains("x/logp_reference.json"),
            "{e}"
        );
        let v2 = br#"{"format_version":2,"images":"a","elbo_samples":2,"seed":0,"nats":[1,2]}"#;
        let e = LogpReference::from_bytes(v2, p).unwrap_err().to_string();
        assert!(e.contains("format_version 2"), "{e}");
    }
}
