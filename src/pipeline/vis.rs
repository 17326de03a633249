//! Visibilities in: reading a selection with its checks, and what the jobs derive from the
//! chunks (usable count, longest baseline, frequency range, the image's FITS header).

use std::path::Path;

use ms_io::{MsError, MsInfo, Selection, VisChunk, VisChunks, VisSource};

use crate::operator::{cell_multiplicity, ImageGeometry};

use super::{PipelineError, Result};
use crate::io::SkyHeader;
use crate::observe::{check, Observer};

const SPEED_OF_LIGHT: f64 = 299_792_458.0;

/// Reads the selection chunk by chunk (the observer's stage \"reading\", in rows). Autocorrelations
/// are left out by the reader (and counted, in the observer's log); a selection without any row is an error that
/// says which fields hold data. `ms` is a Measurement Set or a UVFITS file ([`ms_io::VisFile`]).
pub fn read_vis<V: VisSource + ?Sized>(
    ms: &V,
    sel: &Selection,
    obs: &dyn Observer,
) -> Result<Vec<VisChunk>> {
    obs.stage("reading", ms.info().n_rows as u64);
    let mut chunks = Vec::new();
    let mut iter = open_selection(ms, sel)?;
    for chunk in iter.by_ref() {
        check(obs)?;
        let chunk = chunk?;
        obs.advance(chunk.n_rows() as u64);
        chunks.push(chunk);
    }
    let autocorrelations = iter.autocorrelations();
    if autocorrelations > 0 {
        obs.log(&format!(
            "{}: left out {autocorrelations} autocorrelation rows (ANTENNA1 = ANTENNA2), as \
             WSClean and CASA do",
            ms.path().display()
        ));
    }
    if chunks.iter().all(|c| c.n_rows() == 0) {
        let field = ms.resolve_field(sel)?;
        let info = ms.info();
        let rows = ms.rows_per_field()?;
        let holding: Vec<String> = rows
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, n)| format!("{i} '{}' ({n} rows)", info.fields[i].name))
            .collect();
        let why = if autocorrelations > 0 {
            format!(
                "its {autocorrelations} selected rows are all autocorrelations, which are never \
                 imaged"
            )
        } else if rows.get(field) == Some(&0) {
            "it has no rows in the main table".to_string()
        } else {
            "no row of it falls in the selected spectral windows".to_string()
        };
        input_error!(
            "{}: nothing to image in field {field} '{}': {why}; fields holding data: {} \
             (choose one with --field)",
            ms.path().display(),
            info.fields[field].name,
            if holding.is_empty() {
                "none".to_string()
            } else {
                holding.join(", ")
            }
        );
    }
    Ok(chunks)
}

/// The reader of `sel` in `ms`: a selection the MS cannot satisfy (a spectral window,
/// channel range, field or data column it does not have) is an error that names the option
/// to change.
pub fn open_selection<'a, V: VisSource + ?Sized>(
    ms: &'a V,
    sel: &Selection,
) -> Result<VisChunks<'a>> {
    ms.vis_chunks(sel).map_err(|e| {
        let option = match &e {
            MsError::SpwOutOfRange { .. } => Some("--spw"),
            MsError::BadChannelRange { .. } => Some("--channels"),
            MsError::UnknownField { .. } => Some("--field"),
            MsError::MissingColumn { table, .. } if table == "MAIN" => Some("--column"),
            MsError::NoRows { .. } if sel.spws.as_ref().is_some_and(|v| v.is_empty()) => {
                Some("--spw")
            }
            _ => None,
        };
        match option {
            Some(o) => PipelineError::Context {
                context: o.into(),
                source: Box::new(e.into()),
            },
            None => e.into(),
        }
    })
}

/// Usable samples (weight > 0); an error naming the MS when there are none, or when none of
/// them has a non-zero uv length (all-zero UVW or zero frequencies: no image can be made, and
/// the default pixel scale would be infinite).
pub fn count_usable(chunks: &[VisChunk], vis: &Path) -> Result<usize> {
    let n: usize = chunks
        .iter()
        .map(|c| c.weight.iter().filter(|&&w| w > 0.0).count())
        .sum();
    if n == 0 {
        input_error!(
            "{}: every selected visibility is flagged or has zero weight",
            vis.display()
        );
    }
    if longest_baseline(chunks) == 0.0 {
        let freq_zero = chunks
            .iter()
            .all(|c| c.freq.iter().all(|&f| f == 0.0 || !f.is_finite()));
        let uvw_zero = chunks
            .iter()
            .all(|c| c.uvw.iter().all(|u| u[0] == 0.0 && u[1] == 0.0));
        let why = match (freq_zero, uvw_zero) {
            (true, _) => "the selected channels have frequency 0 Hz (SPECTRAL_WINDOW CHAN_FREQ)",
            (false, true) => "UVW is zero (u = v = 0) on every selected row",
            _ => "every usable visibility has u = v = 0",
        };
        input_error!(
            "{}: {why}: the data hold no baseline, so no image can be made from them",
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

/// Every usable visibility (weight > 0) as (re, im) and its σ per component, `√(factor/w)`.
pub fn usable_data(c: &VisChunk, factor: f64) -> (Vec<f32>, Vec<f32>) {
    let (mut y, mut sigma) = (Vec::new(), Vec::new());
    for (v, &w) in c.vis.iter().zip(&c.weight).filter(|(_, &w)| w > 0.0) {
        let s = (factor / w as f64).sqrt() as f32;
        y.extend([v.re, v.im]);
        sigma.extend([s, s]);
    }
    (y, sigma)
}

/// Chunks that share a frequency list become one, so that one NUFFT plan covers them.
pub fn merge_by_frequency(chunks: Vec<VisChunk>) -> Vec<VisChunk> {
    let mut out: Vec<VisChunk> = Vec::new();
    for c in chunks {
        match out.iter_mut().find(|o| o.freq == c.freq) {
            Some(o) => {
                o.uvw.extend(c.uvw);
                o.antenna1.extend(c.antenna1);
                o.antenna2.extend(c.antenna2);
                o.time.extend(c.time);
                o.vis.extend(c.vis);
                o.weight.extend(c.weight);
            }
            None => out.push(c),
        }
    }
    out
}

/// The median amplitude of the usable visibilities on the shortest 5 % of uv distances: the
/// total flux of a source those baselines do not resolve.
pub fn shortest_baseline_flux(c: &VisChunk) -> f64 {
    let nc = c.n_chan();
    let mut by_uv: Vec<(f64, f64)> = (0..c.vis.len())
        .filter(|&k| c.weight[k] > 0.0)
        .map(|k| {
            let (r, ch) = (k / nc, k % nc);
            let uv = c.uvw[r][0].hypot(c.uvw[r][1]) * c.freq[ch];
            (uv, c.vis[k].norm() as f64)
        })
        .collect();
    by_uv.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = (by_uv.len() / 20).max(1).min(by_uv.len());
    let mut amp: Vec<f64> = by_uv[..n].iter().map(|p| p.1).collect();
    amp.sort_by(f64::total_cmp);
    amp.get(amp.len() / 2).copied().unwrap_or(0.0)
}

/// Per usable visibility (`[re, im, …]`), the number of usable visibilities in its uv cell:
/// the convolved likelihood's Γ factors ([`crate::operator::cell_multiplicity`]).
pub fn vis_gamma_factors(c: &VisChunk, g: &ImageGeometry) -> Vec<f32> {
    let uv: Vec<(f64, f64)> = (0..c.weight.len())
        .filter(|&k| c.weight[k] > 0.0)
        .map(|k| {
            let r = k / c.n_chan();
            let f = c.freq[k % c.n_chan()] / 299_792_458.0;
            (c.uvw[r][0] * f, c.uvw[r][1] * f)
        })
        .collect();
    cell_multiplicity(&uv, g)
        .into_iter()
        .flat_map(|m| [m, m])
        .collect()
}
