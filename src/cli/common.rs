//! Parsing shared by the subcommands: WSClean-style angles, data selection, thread count.

use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use ms_io::{DataColumn, FieldSelector, Selection};

pub use crate::pipeline::resources::{check_network_batch, format_angle};

/// `NAME` for outputs when the user gave none: the MS name without `.ms`.
pub fn default_name(vis: &Path) -> String {
    let stem = vis
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    [".ms", ".uvfits", ".uvf"]
        .iter()
        .find_map(|ext| stem.strip_suffix(ext))
        .unwrap_or(&stem)
        .to_string()
}

/// Parses an angle the way WSClean's `-scale` does: a number with a unit `masec`, `asec`,
/// `amin` or `deg` (a bare number is degrees, as in WSClean). Returns radians.
pub fn parse_angle(s: &str) -> anyhow::Result<f64> {
    let t = s.trim();
    // Longest suffixes first: "uasec" also ends in "asec".
    let units = [
        ("uasec", 1e-6 / 3600.0),
        ("µasec", 1e-6 / 3600.0),
        ("uas", 1e-6 / 3600.0),
        ("µas", 1e-6 / 3600.0),
        ("masec", 1e-3 / 3600.0),
        ("mas", 1e-3 / 3600.0),
        ("asec", 1.0 / 3600.0),
        ("arcsec", 1.0 / 3600.0),
        ("amin", 1.0 / 60.0),
        ("arcmin", 1.0 / 60.0),
        ("deg", 1.0),
    ];
    let (num, deg_per_unit) = units
        .iter()
        .find_map(|(u, f)| t.strip_suffix(u).map(|n| (n, *f)))
        .unwrap_or((t, 1.0));
    let v: f64 = num.trim().parse().with_context(|| {
        format!(
            "cannot read the angle '{s}': expected e.g. 0.5asec, 2masec, 20uas, 1amin or 0.01deg"
        )
    })?;
    if !(v.is_finite() && v > 0.0) {
        bail!("the angle '{s}' must be positive");
    }
    Ok((v * deg_per_unit).to_radians())
}

#[derive(Debug, Clone, Args, Default)]
pub struct SelectionArgs {
    /// Field to image: its id (row of the FIELD table) or its NAME. Default: field 0, or the
    /// first field holding data when field 0 holds none.
    // Negative numbers are taken as values (here and below), so that `--spw -1` is refused
    // naming `--spw` rather than as an unknown argument `-1`.
    #[arg(long, allow_negative_numbers = true)]
    pub field: Option<String>,
    /// Spectral windows, comma-separated ids (default: all).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub spw: Option<Vec<usize>>,
    /// Channel range START END (END exclusive, as WSClean's -channel-range).
    #[arg(long, num_args = 2, value_names = ["START", "END"], allow_negative_numbers = true)]
    pub channels: Option<Vec<usize>>,
    /// Data column: DATA, CORRECTED_DATA or MODEL_DATA.
    #[arg(long, default_value = "DATA")]
    pub column: String,
}

impl SelectionArgs {
    pub fn to_selection(&self) -> anyhow::Result<Selection> {
        let column = match self.column.to_ascii_uppercase().as_str() {
            "DATA" => DataColumn::Data,
            "CORRECTED_DATA" | "CORRECTED" => DataColumn::CorrectedData,
            "MODEL_DATA" | "MODEL" => DataColumn::ModelData,
            other => bail!(
                "--column: unknown data column '{other}': use DATA, CORRECTED_DATA or MODEL_DATA"
            ),
        };
        let field = self.field.as_ref().map(|f| match f.parse::<usize>() {
            Ok(id) => FieldSelector::Id(id),
            Err(_) => FieldSelector::Name(f.clone()),
        });
        let channels = self.channels.as_ref().map(|c| (c[0], c[1]));
        Ok(Selection {
            field,
            spws: self.spw.clone(),
            channels,
            column,
            chunk_rows: 0,
        })
    }
}

/// Environment variable that lets `--threads` exceed the machine's cores (for benchmarks).
pub const FORCE_THREADS_ENV: &str = "INTERF_IMAGE_FORCE_THREADS";

/// Sets rayon's global thread count once (0 keeps rayon's default: all cores). More threads
/// than cores only add switching (2000 threads made a 0.02 s job take a minute), so the count
/// is capped at the cores, with a warning, unless INTERF_IMAGE_FORCE_THREADS=1.
pub fn set_threads(n: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let forced = std::env::var(FORCE_THREADS_ENV).is_ok_and(|v| v == "1");
    let n = if n > cores && !forced {
        eprintln!(
            "warning: --threads {n} is more than the {cores} cores of this machine; using {cores} \
             (set {FORCE_THREADS_ENV}=1 to force)"
        );
        cores
    } else {
        n
    };
    if n > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot set the number of threads")?;
    }
    Ok(())
}

// The output policy lives in `outputs`; re-exported here, where every command imports from.
pub use super::outputs::{check_checkpoint_dir, check_output, check_outputs, output_path};

#[cfg(test)]
mod tests {
    use super::*;
    // The shared helpers these tests cover moved to the pipeline layer.
    use crate::pipeline::resources::{check_field_of_view, check_memory};
    use crate::pipeline::vis::{count_usable, mjd_seconds_to_iso};
    use ms_io::VisChunk;

    #[test]
    fn angles_in_wsclean_units() {
        let asec = (1.0f64 / 3600.0).to_radians();
        assert!((parse_angle("0.5asec").unwrap() / asec - 0.5).abs() < 1e-12);
        assert!((parse_angle("2masec").unwrap() / asec - 0.002).abs() < 1e-12);
        assert!((parse_angle("20uas").unwrap() / asec - 2e-5).abs() < 1e-15);
        assert!((parse_angle("20µasec").unwrap() / asec - 2e-5).abs() < 1e-15);
        assert!((parse_angle("1amin").unwrap() / asec - 60.0).abs() < 1e-12);
        assert!((parse_angle("0.01deg").unwrap() / asec - 36.0).abs() < 1e-9);
        assert!((parse_angle("0.01").unwrap() / asec - 36.0).abs() < 1e-9);
        assert!(parse_angle("fast").is_err());
        assert!(parse_angle("-1asec").is_err());
        assert!(parse_angle("0asec").is_err());
    }

    #[test]
    fn mjd_to_iso() {
        // MJD 51544.5 = 2000-01-01T12:00:00; MJD 55312 = 2010-04-26.
        assert_eq!(
            mjd_seconds_to_iso(51544.5 * 86400.0),
            "2000-01-01T12:00:00.000"
        );
        assert_eq!(
            mjd_seconds_to_iso(55312.0 * 86400.0 + 3661.5),
            "2010-04-26T01:01:01.500"
        );
        // And back, as MJD-OBS is written from DATE-OBS; 1858-11-17 is MJD 0.
        use crate::io::iso_to_mjd;
        assert_eq!(iso_to_mjd("2000-01-01T12:00:00.000"), Some(51544.5));
        let t = iso_to_mjd("2010-04-26T01:01:01.500").unwrap();
        assert!((t - (55312.0 + 3661.5 / 86400.0)).abs() < 1e-9, "{t}");
        assert_eq!(iso_to_mjd("1858-11-17"), Some(0.0));
        assert_eq!(iso_to_mjd("2000-13-01T00:00:00"), None);
        assert_eq!(iso_to_mjd("yesterday"), None);
        for k in 0..50 {
            let mjd = 40000.0 + 731.37 * k as f64;
            let back = iso_to_mjd(&mjd_seconds_to_iso(mjd * 86400.0)).unwrap();
            assert!((back - mjd).abs() < 1e-8, "{mjd} -> {back}");
        }
    }

    fn chunk(uvw: [f64; 3], freq: f64) -> VisChunk {
        VisChunk {
            uvw: vec![uvw; 2],
            antenna1: vec![0, 0],
            antenna2: vec![1, 2],
            time: vec![0.0; 2],
            freq: vec![freq],
            vis: vec![Default::default(); 2],
            weight: vec![1.0; 2],
            ..Default::default()
        }
    }

    #[test]
    fn data_without_a_baseline_is_refused_with_its_cause() {
        let p = Path::new("x.ms");
        assert_eq!(count_usable(&[chunk([10.0, 5.0, 0.0], 1e9)], p).unwrap(), 2);
        let e = count_usable(&[chunk([0.0, 0.0, 3.0], 1e9)], p).unwrap_err();
        assert!(format!("{e}").contains("UVW is zero"), "{e}");
        let e = count_usable(&[chunk([10.0, 5.0, 0.0], 0.0)], p).unwrap_err();
        assert!(format!("{e}").contains("frequency 0 Hz"), "{e}");
        assert!(format!("{e}").contains("x.ms"), "{e}");
    }

    #[test]
    fn angles_in_the_unit_that_fits() {
        let asec = (1.0f64 / 3600.0).to_radians();
        assert_eq!(format_angle(0.05549e-3 * asec), "55.49 µas");
        assert_eq!(format_angle(0.3e-3 * asec), "300.0 µas");
        assert_eq!(format_angle(20e-3 * asec), "20.00 mas");
        assert_eq!(format_angle(0.5 * asec), "500.0 mas");
        assert_eq!(format_angle(2.052 * asec), "2.052″");
        assert_eq!(format_angle(108.7 * asec), "1.812′");
        assert_eq!(format_angle(2.0f64.to_radians()), "2.000°");
        assert_eq!(format_angle(0.0), "0″");
    }

    #[test]
    fn the_fit_gate() {
        let fine = [0.5f32, 1.0];
        assert!(check_fit(1.1, 3.0, &[("mean", &fine)], false).is_ok());
        let e = check_fit(3e14, 1e9, &[("mean", &fine)], false).unwrap_err();
        assert!(format!("{e}").contains("--steps"), "{e}");
        assert!(check_fit(3e14, 1e9, &[("mean", &fine)], true).is_ok());
        assert!(check_fit(f64::NAN, 1.0, &[("mean", &fine)], false).is_err());
        // NaN in a product is an error even with --allow-poor-fit.
        let e = check_fit(1.0, 1.0, &[("std", &[1.0, f32::NAN])], true).unwrap_err();
        assert!(format!("{e}").contains("std"), "{e}");
    }

    #[test]
    fn option_parsers() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-3").is_err());
        assert!(padding("1e6").is_err());
        assert!(padding("0.5").is_err());
        assert_eq!(padding("1.2"), Ok(1.2));
        assert!(rank_filter_level("-3").is_err());
        assert!(rank_filter_level("0.5").is_err());
        assert_eq!(rank_filter_level("0"), Ok(0.0));
        assert_eq!(memory_size("64GB"), Ok(64_000_000_000));
        assert_eq!(memory_size("2GiB"), Ok(2 << 30));
        assert_eq!(memory_size("500mb"), Ok(500_000_000));
        assert!(memory_size("lots").is_err());
        assert!(output_name("").is_err());
        assert!(check_memory(1e18, "x", Some(1 << 30)).is_err());
        assert!(check_memory(1e6, "x", Some(1 << 30)).is_ok());
    }

    #[test]
    fn field_of_view_below_the_resolution() {
        let asec = (1.0f64 / 3600.0).to_radians();
        let longest = 1.0 / (2.0 * asec);
        assert!(check_field_of_view(128, 128, 0.3e-3 * asec, longest).is_err());
        assert!(check_field_of_view(512, 512, 0.5 * asec, longest).is_ok());
    }
}

/// How posterior samples are drawn: shared by `image`, `validate`, `lens` and `denoise`, with
/// one default each (the number of samples is each command's own: per image, per truth; the
/// method is each command's own too: see [`SamplingArgs::method`]).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Reverse-diffusion steps. Default: 100 with dps, 300 with cla (about the same time:
    /// a DPS step also differentiates the network).
    #[arg(long, value_parser = at_least_one)]
    pub steps: Option<usize>,
    /// Chains per network batch. Default: all samples in one batch, at most 64.
    #[arg(long, value_parser = at_least_one)]
    pub batch: Option<usize>,
    /// The likelihood score: `dps` (diffusion posterior sampling, a network gradient per
    /// step) or `cla` (convolved approximation, no network gradient, three times faster per
    /// step but over-confident on real galaxies: on 12 held-out MiraBest galaxies through
    /// 3C 273's uv coverage its samples' χ² is 1.50 and TARP rejects it, DPS gives 1.01 and
    /// passes). Default: dps for image and validate, cla for lens and denoise.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Weight of the likelihood score (1 = the Bayesian posterior; other values are for
    /// diagnosis and are recorded in the outputs).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
    /// Langevin corrector signal-to-noise ratio (0 = no corrector).
    #[arg(long, default_value_t = 0.0)]
    pub corrector_snr: f64,
    /// Seed of every random draw (same seed, same samples).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Most chains a network batch gets by default.
pub const DEFAULT_MAX_BATCH: usize = 64;

impl SamplingArgs {
    /// The batch for `samples` chains: `--batch`, or all of them up to [`DEFAULT_MAX_BATCH`].
    pub fn batch_for(&self, samples: usize) -> usize {
        self.batch
            .unwrap_or_else(|| samples.clamp(1, DEFAULT_MAX_BATCH))
    }

    /// `--method`, or the command's default.
    pub fn method(&self, default: MethodArg) -> MethodArg {
        self.method.unwrap_or(default)
    }

    /// `--steps`, or the method's default (see [`SamplingArgs::steps`]).
    pub fn steps(&self, default: MethodArg) -> usize {
        self.steps.unwrap_or_else(|| {
            crate::sample::posterior::Method::from(self.method(default)).default_steps()
        })
    }

    /// The sampler's options for `samples` chains per data set, with the command's default
    /// method.
    pub fn options(
        &self,
        samples: usize,
        default: MethodArg,
    ) -> crate::sample::posterior::PosteriorOptions {
        crate::sample::posterior::PosteriorOptions {
            method: self.method(default).into(),
            n_samples: samples,
            steps: self.steps(default),
            batch: self.batch_for(samples),
            seed: self.seed,
            alpha: self.alpha,
            corrector: (self.corrector_snr > 0.0).then_some((self.corrector_snr, 1)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Convolved likelihood approximation (fast, no network gradient).
    Cla,
    /// Diffusion posterior sampling (a network gradient per step).
    Dps,
}

impl From<MethodArg> for crate::sample::posterior::Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Cla => Self::Cla,
            MethodArg::Dps => Self::Dps,
        }
    }
}

/// NUFFT accuracy and threads: shared by every command that grids, with one default each.
#[derive(Debug, Clone, Args)]
pub struct ComputeArgs {
    /// NUFFT (gridding) accuracy relative to a direct Fourier transform, 1e-7 … 1e-1.
    #[arg(long, default_value_t = 1e-5, value_parser = accuracy)]
    pub epsilon: f64,
    /// Threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `--epsilon`: a number in 1e-7 … 1e-1.
pub fn accuracy(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && (1e-7..=1e-1).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be in 1e-7 … 1e-1, got {s}"))
    }
}

/// Gridding and weighting options shared by `dirty` and `clean`, as WSClean spells them.
#[derive(Debug, Clone, Args)]
pub struct GriddingArgs {
    /// W-term correction: auto (when the field and |w| need it), on or off.
    #[arg(long, default_value = "auto")]
    pub wgridding: String,
    /// Padding of the weighting grid, as WSClean's -padding.
    #[arg(long, default_value_t = crate::imaging::weighting::DEFAULT_PADDING, value_parser = padding)]
    pub padding: f64,
    /// WSClean's weighting rank filter: cap imaging weights at LEVEL × the local mean
    /// (0 turns it off).
    #[arg(long, default_value_t = 3.0, value_parser = rank_filter_level, allow_hyphen_values = true)]
    pub weighting_rank_filter: f64,
    /// Window of the rank filter, in uv cells.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub weighting_rank_filter_size: usize,
    /// Most memory the job may take (e.g. 64GB, 500MB). Default: the memory available now;
    /// a larger image is refused before anything is allocated.
    #[arg(long, value_parser = memory_size)]
    pub max_memory: Option<u64>,
}

impl GriddingArgs {
    /// The w-term mode; also checks `--padding`, before any data are read.
    pub fn w_mode(&self) -> anyhow::Result<crate::operator::WMode> {
        use crate::operator::WMode;
        let mode = match self.wgridding.to_ascii_lowercase().as_str() {
            "auto" => WMode::Auto,
            "on" => WMode::On,
            "off" => WMode::Off,
            other => bail!("--wgridding must be auto, on or off, not '{other}'"),
        };
        if !(self.padding >= 1.0 && self.padding.is_finite()) {
            bail!("--padding must be at least 1, got {}", self.padding);
        }
        Ok(mode)
    }

    /// Puts padding, rank filter and NUFFT accuracy into `opts`.
    pub fn apply(
        &self,
        w_mode: crate::operator::WMode,
        epsilon: f64,
        opts: &mut crate::imaging::ImagingOptions,
    ) {
        opts.padding = self.padding;
        opts.rank_filter =
            (self.weighting_rank_filter >= 1.0).then_some(crate::imaging::weighting::RankFilter {
                level: self.weighting_rank_filter,
                size: self.weighting_rank_filter_size.max(1),
            });
        opts.nufft = crate::operator::NufftOptions { epsilon, w_mode };
    }
}

/// Largest reduced χ² of a posterior accepted as a fit: a well-sampled posterior sits near 1;
/// hundreds mean the sampler did not converge (too few steps) or the model cannot describe
/// the data (a wrong pixel scale or field of view).
pub const MAX_REDUCED_CHI2: f64 = 100.0;

/// The sanity gate on a result before it is written: any non-finite value in a product is an
/// error; a reduced χ² above [`MAX_REDUCED_CHI2`] (or non-finite), or a non-finite total flux,
/// is a failure with advice unless `allow_poor_fit`, when it is only a warning.
pub fn check_fit(
    chi2: f64,
    flux: f64,
    products: &[(&str, &[f32])],
    allow_poor_fit: bool,
) -> anyhow::Result<()> {
    for (what, values) in products {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "the {what} holds a non-finite value ({} at index {i}); nothing written \
                 (check the prior checkpoint and the data for NaN)",
                values[i]
            );
        }
    }
    let poor = if !chi2.is_finite() {
        Some(format!("the reduced χ² is {chi2}"))
    } else if chi2 > MAX_REDUCED_CHI2 {
        Some(format!(
            "the reduced χ² is {chi2:.4e} (above {MAX_REDUCED_CHI2})"
        ))
    } else if !flux.is_finite() {
        Some(format!("the total flux is {flux}"))
    } else {
        None
    };
    let Some(why) = poor else {
        return Ok(());
    };
    let advice = "the posterior does not fit the data: try more --steps, another --scale \
                  (or field of view), or check the noise level";
    if allow_poor_fit {
        eprintln!(
            "warning: {why} (total flux {flux:.4e}): {advice}; written anyway (--allow-poor-fit)"
        );
        Ok(())
    } else {
        bail!("{why} (total flux {flux:.4e}): {advice}; nothing written (--allow-poor-fit writes it anyway)")
    }
}

/// clap value parser of counts that must be at least 1 (batches, steps, samples, …): 0 would
/// divide by zero, loop forever or panic deep inside.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// clap value parser of an output prefix: not empty (`--name ""` would write `-dirty.fits`)
/// and not a bare folder.
pub fn output_name(s: &str) -> Result<String, String> {
    super::outputs::check_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// clap value parser of WSClean's weighting padding: at least 1 (the grid cannot be smaller
/// than the image) and at most 16 (beyond, the weighting grid alone outgrows any memory).
pub fn padding(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(1.0..=16.0).contains(&v) {
        return Err(format!("must be in 1 … 16, got {v}"));
    }
    Ok(v)
}

/// clap value parser of the rank-filter level: 0 (off) or at least 1 (a cap below the local
/// mean would cut every weight).
pub fn rank_filter_level(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(v == 0.0 || (v >= 1.0 && v.is_finite())) {
        return Err(format!("must be 0 (off) or at least 1, got {v}"));
    }
    Ok(v)
}

/// clap value parser of a memory size: bytes, or a number with KB, MB, GB or TB (powers of
/// 1000; KiB, MiB, GiB, TiB for powers of 1024).
pub fn memory_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let units: [(&str, f64); 8] = [
        ("KiB", 1024.0),
        ("MiB", 1024.0 * 1024.0),
        ("GiB", 1024.0 * 1024.0 * 1024.0),
        ("TiB", 1024.0f64.powi(4)),
        ("KB", 1e3),
        ("MB", 1e6),
        ("GB", 1e9),
        ("TB", 1e12),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| {
            t.strip_suffix(u)
                .or_else(|| t.strip_suffix(&u.to_ascii_lowercase()))
                .map(|n| (n, *m))
        })
        .unwrap_or((t, 1.0));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a memory size such as 64GB or 500MB"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("'{s}' must be positive"));
    }
    Ok((v * mult) as u64)
}
