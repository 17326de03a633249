//! Metadata of a Measurement Set from its subtables. Every index read from the file is checked
//! here, once, so that the reader can use them without further checks.

use std::path::Path;

use crate::error::MsError;
use crate::table::Table;
use crate::types::{AntennaInfo, Correlation, Direction, FieldInfo, Frame, MsInfo, SpwInfo};

/// Subtables the reader cannot work without.
pub(crate) const REQUIRED_SUBTABLES: &[&str] = &[
    "SPECTRAL_WINDOW",
    "DATA_DESCRIPTION",
    "POLARIZATION",
    "FIELD",
    "ANTENNA",
];

/// Main-table columns every selection needs.
pub(crate) const REQUIRED_MAIN_COLUMNS: &[&str] = &[
    "UVW",
    "FLAG",
    "ANTENNA1",
    "ANTENNA2",
    "TIME",
    "FIELD_ID",
    "DATA_DESC_ID",
];

fn open_subtable(ms: &Path, name: &str) -> Result<Table, MsError> {
    let p = ms.join(name);
    if !p.is_dir() {
        return Err(MsError::NotAMeasurementSet {
            path: ms.to_path_buf(),
            reason: format!("the {name} subtable is missing"),
        });
    }
    Table::open(&p).map_err(|e| match e {
        MsError::NotATable { reason, .. } => MsError::NotAMeasurementSet {
            path: ms.to_path_buf(),
            reason: format!("the {name} subtable cannot be opened: {reason}"),
        },
        e => e,
    })
}

fn index(
    t: &Table,
    row: usize,
    what: &'static str,
    value: i32,
    len: usize,
) -> Result<usize, MsError> {
    if value < 0 || value as usize >= len {
        return Err(MsError::BadIndex {
            path: t.path().to_path_buf(),
            table: t.table_name(),
            row,
            what,
            value: value as i64,
            len,
        });
    }
    Ok(value as usize)
}

fn read_spws(t: &Table) -> Result<Vec<SpwInfo>, MsError> {
    let num_chan: Vec<i32> = t.read_scalar_all("NUM_CHAN")?;
    let ref_freq: Vec<f64> = t.read_scalar_all("REF_FREQUENCY")?;
    let mut out = Vec::with_capacity(t.n_rows());
    for row in 0..t.n_rows() {
        let (_, chan_freq) = t.read_cell::<f64>("CHAN_FREQ", row)?;
        if chan_freq.is_empty() || num_chan[row] as i64 != chan_freq.len() as i64 {
            return Err(MsError::Malformed {
                path: t.path().to_path_buf(),
                what: format!(
                    "row {row}: NUM_CHAN = {} but CHAN_FREQ has {} values",
                    num_chan[row],
                    chan_freq.len()
                ),
            });
        }
        let name = if t.has_column("NAME") {
            t.get_string_cell("NAME", row)?
        } else {
            String::new()
        };
        out.push(SpwInfo {
            name,
            chan_freq,
            ref_freq: ref_freq[row],
        });
    }
    Ok(out)
}

/// casacore `MDirection::Types` codes, as stored in a variable-reference column.
fn frame_from_code(code: i32) -> Option<Frame> {
    match code {
        0 => Some(Frame::J2000),
        4 | 5 => Some(Frame::B1950),
        21 => Some(Frame::Icrs),
        _ => None,
    }
}

/// The frame of each FIELD row's PHASE_DIR: a fixed `MEASINFO` `Ref`, or, as ALMA writes it, a
/// per-row code in the column that `MEASINFO` `VarRefCol` names.
fn phase_dir_frames(t: &Table) -> Result<Vec<Frame>, MsError> {
    let bad = |what: String| MsError::Malformed {
        path: t.path().to_path_buf(),
        what: format!("PHASE_DIR reference frame {what} (supported: J2000, ICRS, B1950)"),
    };
    if let Some(r) = t.column_keyword_string("PHASE_DIR", "MEASINFO", "Ref")? {
        let f = Direction::frame_from_ref(&r).ok_or_else(|| bad(format!("{r:?}")))?;
        return Ok(vec![f; t.n_rows()]);
    }
    if let Some(col) = t.column_keyword_string("PHASE_DIR", "MEASINFO", "VarRefCol")? {
        let codes: Vec<i32> = t.read_scalar_all(&col)?;
        return codes
            .iter()
            .enumerate()
            .map(|(row, &c)| {
                frame_from_code(c).ok_or_else(|| bad(format!("code {c} ({col} row {row})")))
            })
            .collect();
    }
    // casacore's default reference for a direction without one.
    Ok(vec![Frame::J2000; t.n_rows()])
}

fn read_fields(t: &Table) -> Result<Vec<FieldInfo>, MsError> {
    let frames = phase_dir_frames(t)?;
    let mut out = Vec::with_capacity(t.n_rows());
    for (row, &frame) in frames.iter().enumerate() {
        // Shape (2, NUM_POLY + 1) in casacore order: the first two values are the constant term.
        let (_, dir) = t.read_cell::<f64>("PHASE_DIR", row)?;
        if dir.len() < 2 || !dir[0].is_finite() || !dir[1].is_finite() {
            return Err(MsError::Malformed {
                path: t.path().to_path_buf(),
                what: format!("PHASE_DIR of row {row}: {dir:?}"),
            });
        }
        out.push(FieldInfo {
            name: t.get_string_cell("NAME", row)?,
            phase_dir: Direction {
                ra: dir[0],
                dec: dir[1],
                frame,
            },
        });
    }
    Ok(out)
}

fn read_antennas(t: &Table) -> Result<Vec<AntennaInfo>, MsError> {
    let dish: Vec<f64> = t.read_scalar_all("DISH_DIAMETER")?;
    let mut out = Vec::with_capacity(t.n_rows());
    for (row, &dish_diameter) in dish.iter().enumerate() {
        let (_, pos) = t.read_cell::<f64>("POSITION", row)?;
        if pos.len() != 3 {
            return Err(MsError::Malformed {
                path: t.path().to_path_buf(),
                what: format!("POSITION of row {row} has {} values, not 3", pos.len()),
            });
        }
        out.push(AntennaInfo {
            name: t.get_string_cell("NAME", row)?,
            dish_diameter,
            position: [pos[0], pos[1], pos[2]],
        });
    }
    Ok(out)
}

/// Reads the metadata; `main` is the opened main table of the Measurement Set at `path`.
pub(crate) fn read_info(path: &Path, main: &Table) -> Result<MsInfo, MsError> {
    for name in REQUIRED_SUBTABLES {
        if !path.join(name).is_dir() {
            return Err(MsError::NotAMeasurementSet {
                path: path.to_path_buf(),
                reason: format!("the {name} subtable is missing"),
            });
        }
    }
    for col in REQUIRED_MAIN_COLUMNS {
        if !main.has_column(col) {
            return Err(MsError::NotAMeasurementSet {
                path: path.to_path_buf(),
                reason: format!("the main table has no {col} column"),
            });
        }
    }

    let spws = read_spws(&open_subtable(path, "SPECTRAL_WINDOW")?)?;

    let pol_t = open_subtable(path, "POLARIZATION")?;
    let mut polarizations = Vec::with_capacity(pol_t.n_rows());
    for row in 0..pol_t.n_rows() {
        let (_, codes) = pol_t.read_cell::<i32>("CORR_TYPE", row)?;
        polarizations.push(codes.into_iter().map(Correlation::from_code).collect());
    }

    let dd_t = open_subtable(path, "DATA_DESCRIPTION")?;
    let spw_id: Vec<i32> = dd_t.read_scalar_all("SPECTRAL_WINDOW_ID")?;
    let pol_id: Vec<i32> = dd_t.read_scalar_all("POLARIZATION_ID")?;
    let mut data_descs = Vec::with_capacity(dd_t.n_rows());
    for row in 0..dd_t.n_rows() {
        data_descs.push((
            index(&dd_t, row, "SPECTRAL_WINDOW_ID", spw_id[row], spws.len())?,
            index(
                &dd_t,
                row,
                "POLARIZATION_ID",
                pol_id[row],
                polarizations.len(),
            )?,
        ));
    }

    let fields = read_fields(&open_subtable(path, "FIELD")?)?;
    let antennas = read_antennas(&open_subtable(path, "ANTENNA")?)?;

    // OBSERVATION is required by the MS definition but carries nothing we need to read data:
    // tolerate its absence.
    let (mut telescope, mut observer) = (String::new(), String::new());
    if path.join("OBSERVATION").is_dir() {
        let t = open_subtable(path, "OBSERVATION")?;
        if t.n_rows() > 0 {
            if t.has_column("TELESCOPE_NAME") {
                telescope = t.get_string_cell("TELESCOPE_NAME", 0)?;
            }
            if t.has_column("OBSERVER") {
                observer = t.get_string_cell("OBSERVER", 0)?;
            }
        }
    }

    let time: Vec<f64> = main.read_scalar_all("TIME")?;
    let time_range = time
        .iter()
        .filter(|t| t.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, &t| match acc {
            None => Some((t, t)),
            Some((a, b)) => Some((a.min(t), b.max(t))),
        })
        .unwrap_or((0.0, 0.0));

    Ok(MsInfo {
        path: path.to_path_buf(),
        n_rows: main.n_rows(),
        telescope,
        observer,
        columns: main.column_names()?,
        fields,
        spws,
        data_descs,
        polarizations,
        antennas,
        time_range,
    })
}
