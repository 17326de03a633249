//! Parsing shared by the subcommands: WSClean-style angles, data selection, thread count.

use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ms_io::{DataColumn, FieldSelector, MeasurementSet, MsInfo, Selection, VisChunk};

use crate::io::SkyHeader;

const SPEED_OF_LIGHT: f64 = 299_792_458.0;

/// Reads the selection chunk by chunk behind a progress bar.
pub fn read_with_progress(ms: &MeasurementSet, sel: &Selection) -> anyhow::Result<Vec<VisChunk>> {
    let bar = ProgressBar::new(ms.info().n_rows as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} rows ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("reading");
    let mut chunks = Vec::new();
    for chunk in ms.chunks(sel)? {
        let chunk = chunk?;
        bar.inc(chunk.n_rows() as u64);
        chunks.push(chunk);
    }
    bar.finish_and_clear();
    Ok(chunks)
}

/// Usable samples (weight > 0); an error naming the MS when there are none.
pub fn count_usable(chunks: &[VisChunk], vis: &Path) -> anyhow::Result<usize> {
    let n: usize = chunks
        .iter()
        .map(|c| c.weight.iter().filter(|&&w| w > 0.0).count())
        .sum();
    if n == 0 {
        bail!(
            "{}: every selected visibility is flagged or has zero weight",
            vis.display()
        );
    }
    Ok(n)
}

/// Lowest and highest selected frequency.
pub fn freq_range(chunks: &[VisChunk]) -> (f64, f64) {
    chunks
        .iter()
        .flat_map(|c| c.freq.iter())
        .fold((f64::INFINITY, 0.0f64), |(a, b), &f| (a.min(f), b.max(f)))
}

/// Longest projected baseline with a usable sample, in wavelengths.
pub fn longest_baseline(chunks: &[VisChunk]) -> f64 {
    let mut max = 0.0f64;
    for c in chunks {
        let fmax = c.freq.iter().cloned().fold(0.0, f64::max);
        for (r, uvw) in c.uvw.iter().enumerate() {
            let used = c.weight[r * c.n_chan()..(r + 1) * c.n_chan()]
                .iter()
                .any(|&w| w > 0.0);
            if used {
                max = max.max((uvw[0] * uvw[0] + uvw[1] * uvw[1]).sqrt() * fmax / SPEED_OF_LIGHT);
            }
        }
    }
    max
}

/// `NAME` for outputs when the user gave none: the MS name without `.ms`.
pub fn default_name(vis: &Path) -> String {
    let stem = vis
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    stem.strip_suffix(".ms").unwrap_or(&stem).to_string()
}

/// The FITS header of an image of `field_id` made from `chunks` with square pixels `scale` (rad).
pub fn sky_header(
    info: &MsInfo,
    field_id: usize,
    chunks: &[VisChunk],
    scale: f64,
    bunit: &str,
) -> SkyHeader {
    let field = &info.fields[field_id];
    let (fmin, fmax) = freq_range(chunks);
    // Precessed at the observation's epoch, as casacore (and so WSClean) does.
    let j2000 = field.phase_dir.to_j2000_at(info.time_range.0 / 86400.0);
    SkyHeader {
        ra_deg: j2000.ra.to_degrees().rem_euclid(360.0),
        dec_deg: j2000.dec.to_degrees(),
        cell_x_deg: scale.to_degrees(),
        cell_y_deg: scale.to_degrees(),
        freq_hz: 0.5 * (fmin + fmax),
        bandwidth_hz: (fmax - fmin).max(1.0),
        bunit: bunit.into(),
        beam: None,
        date_obs: Some(mjd_seconds_to_iso(info.time_range.0)),
        telescope: Some(info.telescope.clone()),
        object: Some(field.name.clone()),
        observer: Some(info.observer.clone()),
        extra: Vec::new(),
    }
}

/// Parses an angle the way WSClean's `-scale` does: a number with a unit `masec`, `asec`,
/// `amin` or `deg` (a bare number is degrees, as in WSClean). Returns radians.
pub fn parse_angle(s: &str) -> anyhow::Result<f64> {
    let t = s.trim();
    let units = [
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
        format!("cannot read the angle '{s}': expected e.g. 0.5asec, 2masec, 1amin or 0.01deg")
    })?;
    if !(v.is_finite() && v > 0.0) {
        bail!("the angle '{s}' must be positive");
    }
    Ok((v * deg_per_unit).to_radians())
}

#[derive(Debug, Clone, Args, Default)]
pub struct SelectionArgs {
    /// Field to image: its id (row of the FIELD table) or its NAME. Default: field 0.
    #[arg(long)]
    pub field: Option<String>,
    /// Spectral windows, comma-separated ids (default: all).
    #[arg(long, value_delimiter = ',')]
    pub spw: Option<Vec<usize>>,
    /// Channel range START END (END exclusive, as WSClean's -channel-range).
    #[arg(long, num_args = 2, value_names = ["START", "END"])]
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
            other => bail!("unknown data column '{other}': use DATA, CORRECTED_DATA or MODEL_DATA"),
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

/// Sets rayon's global thread count once (0 keeps rayon's default: all cores).
pub fn set_threads(n: usize) -> anyhow::Result<()> {
    if n > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot set the number of threads")?;
    }
    Ok(())
}

/// Output path `NAME-suffix.fits`, refusing to overwrite an input.
pub fn output_path(
    name: &str,
    suffix: &str,
    inputs: &[&Path],
) -> anyhow::Result<std::path::PathBuf> {
    let p = std::path::PathBuf::from(format!("{name}-{suffix}.fits"));
    for i in inputs {
        if p.as_path() == *i {
            bail!("output {} would overwrite an input", p.display());
        }
    }
    Ok(p)
}

/// MJD seconds (casacore's TIME) to an ISO 8601 date-time, as DATE-OBS wants it.
pub fn mjd_seconds_to_iso(t: f64) -> String {
    // Days since 1970-01-01 (MJD 40587), then the civil-from-days algorithm.
    let secs = t - 40587.0 * 86400.0;
    let days = (secs / 86400.0).floor();
    let mut sod = secs - days * 86400.0;
    if sod >= 86400.0 {
        sod = 86399.999;
    }
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let h = (sod / 3600.0).floor();
    let mi = ((sod - h * 3600.0) / 60.0).floor();
    let s = sod - h * 3600.0 - mi * 60.0;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:06.3}",
        h as u32, mi as u32, s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angles_in_wsclean_units() {
        let asec = (1.0f64 / 3600.0).to_radians();
        assert!((parse_angle("0.5asec").unwrap() / asec - 0.5).abs() < 1e-12);
        assert!((parse_angle("2masec").unwrap() / asec - 0.002).abs() < 1e-12);
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
    }
}

/// Gridding and weighting options shared by `dirty` and `clean`, as WSClean spells them.
#[derive(Debug, Clone, Args)]
pub struct GriddingArgs {
    /// Gridding accuracy (relative to a direct Fourier transform), 1e-7 … 1e-1.
    #[arg(long, default_value_t = 1e-4)]
    pub epsilon: f64,
    /// W-term correction: auto (when the field and |w| need it), on or off.
    #[arg(long, default_value = "auto")]
    pub wgridding: String,
    /// Padding of the weighting grid, as WSClean's -padding.
    #[arg(long, default_value_t = crate::imaging::weighting::DEFAULT_PADDING)]
    pub padding: f64,
    /// WSClean's weighting rank filter: cap imaging weights at LEVEL × the local mean
    /// (0 turns it off).
    #[arg(long, default_value_t = 3.0)]
    pub weighting_rank_filter: f64,
    /// Window of the rank filter, in uv cells.
    #[arg(long, default_value_t = 16)]
    pub weighting_rank_filter_size: usize,
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
    pub fn apply(&self, w_mode: crate::operator::WMode, opts: &mut crate::imaging::ImagingOptions) {
        opts.padding = self.padding;
        opts.rank_filter =
            (self.weighting_rank_filter >= 1.0).then_some(crate::imaging::weighting::RankFilter {
                level: self.weighting_rank_filter,
                size: self.weighting_rank_filter_size.max(1),
            });
        opts.nufft = crate::operator::NufftOptions {
            epsilon: self.epsilon,
            w_mode,
        };
    }
}
