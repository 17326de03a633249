//! The Measurement Set handle and the chunked Stokes I reader.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use num_complex::Complex;

use crate::error::MsError;
use crate::info::read_info;
use crate::stokes::{combine, Block, BlockWeights, StokesPlan};
use crate::table::{Rows, Table};
use crate::types::{
    DataColumn, FieldInfo, FieldSelector, MsInfo, ReadStats, Selection, VisChunk, Visibilities,
};

/// Rows per block when the selection does not say: large enough that casacore's per-call cost
/// vanishes, small enough to stay in cache-friendly tens of MB (measured: about 10k rows is
/// 20-40 % faster than one whole-column read).
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;

/// A Measurement Set opened read-only.
pub struct MeasurementSet {
    main: Table,
    info: MsInfo,
}

impl std::fmt::Debug for MeasurementSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasurementSet")
            .field("path", &self.info.path)
            .field("n_rows", &self.info.n_rows)
            .finish()
    }
}

impl MeasurementSet {
    /// Opens the Measurement Set at `path` read-only and reads its metadata. Nothing is ever
    /// written to it (no lock is taken either).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MsError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|_| MsError::NotFound {
            path: path.to_path_buf(),
        })?;
        if !meta.is_dir() {
            return Err(MsError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        if !path.join("table.dat").is_file() {
            return Err(MsError::NotATable {
                path: path.to_path_buf(),
                reason: "the directory has no table.dat".into(),
            });
        }
        let main = Table::open(path)?;
        let info = read_info(path, &main)?;
        Ok(MeasurementSet { main, info })
    }

    pub fn info(&self) -> &MsInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// The FIELD row a selection means: its id, its name (exact, then ignoring case), or by
    /// default field 0, or the first field holding rows when field 0 holds none.
    pub fn resolve_field(&self, sel: &Selection) -> Result<usize, MsError> {
        resolve_field_with_rows(&self.info, &self.main, sel)
    }

    /// Rows of the main table per FIELD row (FIELD_IDs out of range are not counted).
    pub fn rows_per_field(&self) -> Result<Vec<usize>, MsError> {
        rows_per_field(&self.info, &self.main)
    }

    fn plan(&self, sel: &Selection) -> Result<Plan, MsError> {
        make_plan(&self.info, &self.main, sel)
    }

    /// Streams the selection as Stokes I chunks: the main table is read `chunk_rows` rows at a
    /// time, and each block yields one [`VisChunk`] per spectral window it contains, in row
    /// order. Memory stays bounded by the block size, whatever the size of the MS.
    ///
    /// Autocorrelations (ANTENNA1 = ANTENNA2) are skipped, as WSClean and CASA never image
    /// them: they measure the total power, not a fringe; [`ChunkIter::autocorrelations`]
    /// counts them.
    pub fn chunks(&self, sel: &Selection) -> Result<ChunkIter<'_>, MsError> {
        self.chunk_iter(sel)
    }

    fn chunk_iter(&self, sel: &Selection) -> Result<ChunkIter<'_>, MsError> {
        let plan = self.plan(sel)?;
        Ok(ChunkIter {
            ms: self,
            plan,
            next_row: 0,
            pending: VecDeque::new(),
            failed: false,
            stokes: BTreeMap::new(),
            fields_seen: Default::default(),
            autocorrelations: 0,
        })
    }

    /// Reads the whole selection (built on [`MeasurementSet::chunks`]). Errors when no row
    /// matches or when every sample is flagged.
    pub fn read(&self, sel: &Selection) -> Result<Visibilities, MsError> {
        let field_id = self.resolve_field(sel)?;
        let mut iter = self.chunk_iter(sel)?;
        let (chunks, mut stats) = gather(&mut iter)?;
        stats.autocorrelations = iter.autocorrelations;
        let field: FieldInfo = self.info.fields[field_id].clone();
        let spws = spw_label(sel);
        let what = format!(
            "field {field_id} ({:?}), spectral windows {spws}, column {}",
            field.name,
            sel.column.column_name()
        );
        finish_read(
            &self.info.path,
            field,
            what,
            "the main table has rows of fields",
            &iter.fields_seen,
            (chunks, stats),
        )
    }

    fn stokes_plan(&self, ddid: usize) -> Result<StokesPlan, MsError> {
        let pol_id = self.info.data_descs[ddid].1;
        let corr = &self.info.polarizations[pol_id];
        StokesPlan::new(corr).ok_or_else(|| MsError::UnsupportedCorrelations {
            path: self.info.path.clone(),
            pol_id,
            corr: corr.clone(),
        })
    }
}

/// The FIELD row a selection means: its id, its name (exact, then ignoring case), or 0.
pub(crate) fn resolve_field(info: &MsInfo, sel: &Selection) -> Result<usize, MsError> {
    let fields = &info.fields;
    let unknown = |f: String| MsError::UnknownField {
        path: info.path.clone(),
        field: f,
        available: fields
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{i}: {}", f.name))
            .collect(),
    };
    match &sel.field {
        None => (!fields.is_empty())
            .then_some(0)
            .ok_or_else(|| unknown("0 (the default)".into())),
        Some(FieldSelector::Id(i)) => (*i < fields.len())
            .then_some(*i)
            .ok_or_else(|| unknown(format!("id {i}"))),
        Some(FieldSelector::Name(n)) => fields
            .iter()
            .position(|f| f.name == *n)
            .or_else(|| fields.iter().position(|f| f.name.eq_ignore_ascii_case(n)))
            .ok_or_else(|| unknown(format!("{n:?}"))),
    }
}

/// Rows of the main table per FIELD row.
pub(crate) fn rows_per_field(info: &MsInfo, main: &Table) -> Result<Vec<usize>, MsError> {
    let ids: Vec<i32> = main.read_scalar_all("FIELD_ID")?;
    let mut n = vec![0usize; info.fields.len()];
    for f in ids {
        if let Some(c) = usize::try_from(f).ok().and_then(|f| n.get_mut(f)) {
            *c += 1;
        }
    }
    Ok(n)
}

/// [`resolve_field`], except that the default moves from field 0 to the first field holding
/// rows when field 0 holds none (an ALMA MS often keeps its target in field 2, its
/// calibrators split off): the default should image the data, not fail.
pub(crate) fn resolve_field_with_rows(
    info: &MsInfo,
    main: &Table,
    sel: &Selection,
) -> Result<usize, MsError> {
    let id = resolve_field(info, sel)?;
    if sel.field.is_none() {
        let rows = rows_per_field(info, main)?;
        if rows.get(id) == Some(&0) {
            if let Some(first) = rows.iter().position(|&n| n > 0) {
                return Ok(first);
            }
        }
    }
    Ok(id)
}

/// Checks a selection against the metadata of `main` and builds the reading plan.
pub(crate) fn make_plan(info: &MsInfo, main: &Table, sel: &Selection) -> Result<Plan, MsError> {
    let path = &info.path;
    let field = resolve_field_with_rows(info, main, sel)?;
    let col = sel.column.column_name();
    if !main.has_column(col) {
        let present: Vec<&str> = [
            DataColumn::Data,
            DataColumn::CorrectedData,
            DataColumn::ModelData,
        ]
        .iter()
        .map(|c| c.column_name())
        .filter(|c| main.has_column(c))
        .collect();
        return Err(MsError::MissingColumn {
            path: path.clone(),
            table: "MAIN".into(),
            column: col.into(),
            hint: format!(" (data columns present: {present:?})"),
        });
    }
    let n_spw = info.spws.len();
    let spws: Vec<usize> = match &sel.spws {
        None => (0..n_spw).collect(),
        Some(v) => {
            if let Some(&bad) = v.iter().find(|&&s| s >= n_spw) {
                return Err(MsError::SpwOutOfRange {
                    path: path.clone(),
                    spw: bad,
                    n_spw,
                });
            }
            if v.is_empty() {
                return Err(MsError::NoRows {
                    path: path.clone(),
                    what: "the selection lists no spectral window".into(),
                });
            }
            v.clone()
        }
    };
    if let Some((start, end)) = sel.channels {
        for &s in &spws {
            let n_chan = info.spws[s].chan_freq.len();
            let why = if end <= start {
                Some("empty")
            } else if end > n_chan {
                Some("out of bounds")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(MsError::BadChannelRange {
                    path: path.clone(),
                    start,
                    end,
                    spw: s,
                    n_chan,
                    why,
                });
            }
        }
    }
    let dd_selected = info
        .data_descs
        .iter()
        .map(|(spw, _)| spws.contains(spw))
        .collect();
    Ok(Plan {
        field,
        column: col,
        dd_selected,
        channels: sel.channels,
        chunk_rows: if sel.chunk_rows == 0 {
            DEFAULT_CHUNK_ROWS
        } else {
            sel.chunk_rows
        },
        has_flag_row: main.has_column("FLAG_ROW"),
    })
}

pub(crate) struct Plan {
    pub field: usize,
    pub column: &'static str,
    /// Per DATA_DESCRIPTION row: is its spectral window selected.
    pub dd_selected: Vec<bool>,
    pub channels: Option<(usize, usize)>,
    pub chunk_rows: usize,
    pub has_flag_row: bool,
}

/// The chunks of a selection, in row order (see [`MeasurementSet::chunks`]).
pub struct ChunkIter<'a> {
    ms: &'a MeasurementSet,
    plan: Plan,
    next_row: usize,
    pending: VecDeque<VisChunk>,
    failed: bool,
    stokes: BTreeMap<usize, StokesPlan>,
    /// FIELD_IDs met so far, for the message when nothing was selected.
    fields_seen: std::collections::BTreeSet<usize>,
    /// Rows of the selection skipped as autocorrelations so far.
    autocorrelations: usize,
}

impl ChunkIter<'_> {
    /// Rows of the selection skipped so far because ANTENNA1 = ANTENNA2.
    pub fn autocorrelations(&self) -> usize {
        self.autocorrelations
    }
}

/// Reusable buffers, so that a block's columns are read without reallocating.
#[derive(Default)]
struct Buffers {
    uvw: Vec<f64>,
    data: Vec<Complex<f32>>,
    flag: Vec<u8>,
    flag_row: Vec<u8>,
    weight: Vec<f32>,
}

impl ChunkIter<'_> {
    fn bad_index(&self, row: usize, what: &'static str, value: i32, len: usize) -> MsError {
        MsError::BadIndex {
            path: self.ms.info.path.clone(),
            table: "MAIN".into(),
            row,
            what,
            value: value as i64,
            len,
        }
    }

    /// Reads rows `[start, start + n)` and queues their chunks.
    fn read_block(&mut self, start: usize, n: usize) -> Result<(), MsError> {
        let main = &self.ms.main;
        let info = &self.ms.info;
        let range = Rows::Range {
            start: start as u64,
            len: n as u64,
        };
        let (mut field_id, mut ddid) = (Vec::<i32>::new(), Vec::<i32>::new());
        let (mut a1, mut a2) = (Vec::<i32>::new(), Vec::<i32>::new());
        main.read_scalar("FIELD_ID", range, &mut field_id)?;
        main.read_scalar("DATA_DESC_ID", range, &mut ddid)?;
        main.read_scalar("ANTENNA1", range, &mut a1)?;
        main.read_scalar("ANTENNA2", range, &mut a2)?;
        // An MS without an ANTENNA table (some simulations) cannot be checked.
        let n_ant = info.antennas.len();
        let mut groups: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for i in 0..n {
            let row = start + i;
            let (f, d) = (field_id[i], ddid[i]);
            if f < 0 || f as usize >= info.fields.len() {
                return Err(self.bad_index(row, "FIELD_ID", f, info.fields.len()));
            }
            if d < 0 || d as usize >= info.data_descs.len() {
                return Err(self.bad_index(row, "DATA_DESC_ID", d, info.data_descs.len()));
            }
            for (what, a) in [("ANTENNA1", a1[i]), ("ANTENNA2", a2[i])] {
                if a < 0 || (n_ant > 0 && a as usize >= n_ant) {
                    return Err(self.bad_index(row, what, a, n_ant));
                }
            }
            self.fields_seen.insert(f as usize);
            if f as usize == self.plan.field && self.plan.dd_selected[d as usize] {
                if a1[i] == a2[i] {
                    self.autocorrelations += 1;
                    continue;
                }
                groups.entry(d as usize).or_default().push(row as u64);
            }
        }
        // Chunks come out in the order of each spectral window's first row in the block.
        let mut order: Vec<(u64, usize)> = groups.iter().map(|(&d, r)| (r[0], d)).collect();
        order.sort_unstable();
        let mut buf = Buffers::default();
        for (_, d) in order {
            let chunk = self.read_group(d, &groups[&d], &mut buf)?;
            self.pending.push_back(chunk);
        }
        Ok(())
    }

    fn read_group(
        &mut self,
        ddid: usize,
        rows: &[u64],
        buf: &mut Buffers,
    ) -> Result<VisChunk, MsError> {
        let ms = self.ms;
        let main = &ms.main;
        let path = &ms.info.path;
        let (spw, pol_id) = ms.info.data_descs[ddid];
        let stokes = match self.stokes.get(&ddid) {
            Some(&p) => p,
            None => {
                let p = ms.stokes_plan(ddid)?;
                self.stokes.insert(ddid, p);
                p
            }
        };
        let n_corr = ms.info.polarizations[pol_id].len();
        let freq_all = &ms.info.spws[spw].chan_freq;
        let n_chan_all = freq_all.len();
        let (c0, c1) = self.plan.channels.unwrap_or((0, n_chan_all));
        let n_chan = c1 - c0;
        let col = self.plan.column;
        let first = rows[0] as usize;

        // The cell shape must agree with the metadata before casacore fills our buffers.
        let shape = main.cell_shape(col, first)?;
        if shape.as_deref() != Some(&[n_corr, n_chan_all][..]) {
            return Err(MsError::Malformed {
                path: path.clone(),
                what: format!(
                    "{col} row {first}: cell shape {shape:?}, but its data description \
                     ({ddid}) says {n_corr} correlations × {n_chan_all} channels"
                ),
            });
        }
        // A contiguous run (the common case: one field, one spw) goes to casacore as a range.
        let contiguous = rows[rows.len() - 1] - rows[0] + 1 == rows.len() as u64;
        let sel_rows = if contiguous {
            Rows::Range {
                start: rows[0],
                len: rows.len() as u64,
            }
        } else {
            Rows::List(rows)
        };
        let cell = [n_corr, n_chan_all];
        let box_ = ([0, c0], [n_corr, n_chan]);
        let slice = Some((&box_.0[..], &box_.1[..]));

        let mut time = Vec::new();
        let (mut a1, mut a2) = (Vec::new(), Vec::new());
        main.read_array("UVW", sel_rows, &[3], None, &mut buf.uvw)?;
        main.read_scalar("TIME", sel_rows, &mut time)?;
        main.read_scalar("ANTENNA1", sel_rows, &mut a1)?;
        main.read_scalar("ANTENNA2", sel_rows, &mut a2)?;
        if self.plan.has_flag_row {
            main.read_scalar("FLAG_ROW", sel_rows, &mut buf.flag_row)?;
        } else {
            buf.flag_row.clear();
        }
        main.read_array(col, sel_rows, &cell, slice, &mut buf.data)?;
        main.read_array("FLAG", sel_rows, &cell, slice, &mut buf.flag)?;

        // WSClean's choice: WEIGHT_SPECTRUM when present and defined, else WEIGHT per
        // correlation. SIGMA (w = 1/σ²) stands in for a missing WEIGHT; without either, unit
        // weights.
        let per_channel = main.has_column("WEIGHT_SPECTRUM")
            && main.cell_shape("WEIGHT_SPECTRUM", first)?.as_deref() == Some(&cell[..]);
        let weights = if per_channel {
            main.read_array("WEIGHT_SPECTRUM", sel_rows, &cell, slice, &mut buf.weight)?;
            BlockWeights::PerChannel(&buf.weight)
        } else {
            let wcol = ["WEIGHT", "SIGMA"].into_iter().find(|c| {
                main.has_column(c) && main.cell_shape(c, first).ok().flatten() == Some(vec![n_corr])
            });
            match wcol {
                Some(c) => {
                    main.read_array(c, sel_rows, &[n_corr], None, &mut buf.weight)?;
                    if c == "SIGMA" {
                        for s in buf.weight.iter_mut() {
                            *s = 1.0 / (*s * *s);
                        }
                    }
                }
                None => {
                    buf.weight.clear();
                    buf.weight.resize(rows.len() * n_corr, 1.0);
                }
            }
            BlockWeights::PerRow(&buf.weight)
        };

        let block = Block {
            n_rows: rows.len(),
            n_chan,
            n_corr,
            data: &buf.data,
            flag: &buf.flag,
            flag_row: &buf.flag_row,
            weights,
        };
        let mut chunk = VisChunk {
            spw,
            uvw: buf
                .uvw
                .chunks_exact(3)
                .map(|u| [u[0], u[1], u[2]])
                .collect(),
            antenna1: a1,
            antenna2: a2,
            time,
            freq: freq_all[c0..c1].to_vec(),
            vis: Vec::new(),
            weight: Vec::new(),
        };
        combine(stokes, &block, &mut chunk.vis, &mut chunk.weight);
        Ok(chunk)
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<VisChunk, MsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(Ok(c));
            }
            let n_rows = self.ms.main.n_rows();
            if self.failed || self.next_row >= n_rows {
                return None;
            }
            let start = self.next_row;
            let n = self.plan.chunk_rows.min(n_rows - start);
            self.next_row += n;
            if let Err(e) = self.read_block(start, n) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

/// Reads every chunk of `iter`, counting rows and samples (used and dropped).
pub(crate) fn gather(
    iter: &mut dyn Iterator<Item = Result<VisChunk, MsError>>,
) -> Result<(Vec<VisChunk>, ReadStats), MsError> {
    let mut chunks = Vec::new();
    let mut stats = ReadStats::default();
    for chunk in iter {
        let chunk = chunk?;
        let used = chunk.weight.iter().filter(|&&w| w > 0.0).count();
        stats.rows += chunk.n_rows();
        stats.samples += chunk.weight.len();
        stats.used += used;
        stats.dropped += chunk.weight.len() - used;
        chunks.push(chunk);
    }
    Ok((chunks, stats))
}

/// The selected spectral windows as the read's errors name them.
pub(crate) fn spw_label(sel: &Selection) -> String {
    match &sel.spws {
        None => "all".to_string(),
        Some(v) => format!("{v:?}"),
    }
}

/// The end of a whole read, for both readers: an error naming `what` when no row matched
/// (with the fields that do hold rows, `holder` saying where) or every sample is flagged.
pub(crate) fn finish_read(
    path: &Path,
    field: FieldInfo,
    what: String,
    holder: &str,
    fields_seen: &std::collections::BTreeSet<usize>,
    (chunks, stats): (Vec<VisChunk>, ReadStats),
) -> Result<Visibilities, MsError> {
    if stats.rows == 0 {
        return Err(MsError::NoRows {
            path: path.to_path_buf(),
            what: format!(
                "no rows of {what}; {holder} {:?}",
                fields_seen.iter().collect::<Vec<_>>()
            ),
        });
    }
    if stats.used == 0 {
        return Err(MsError::AllFlagged {
            path: path.to_path_buf(),
            samples: stats.samples,
            what,
        });
    }
    Ok(Visibilities {
        chunks,
        field,
        stats,
    })
}
