//! Simulated Measurement Sets: a copy of an existing MS whose data are replaced by model
//! visibilities plus Gaussian noise.
//!
//! The input is only ever read, and only as files: [`create_like`] copies its directory tree
//! (subtables and `table.lock` files included), and [`MsWriter`] opens that copy, never the
//! input, for update. [`simulate_like`] does both and renames the result into place, so that
//! an interrupted run leaves no half-written MS under the output name.
//!
//! What is written, for every row of the main table:
//! - rows of the selection (field, spectral windows, channels): the caller receives them
//!   chunk by chunk as a [`VisChunkMeta`] (uvw, frequencies, ...) and returns a
//!   [`StokesModel`]: model Stokes I visibilities and the noise σ of Stokes I. Each parallel
//!   hand (XX and YY, or RR and LL) gets `I + noise`, each cross hand noise only, so that
//!   `I = (A + B) / 2` carries the model; noise is complex Gaussian with σ_c per real part,
//!   σ_c = √2·σ with two parallel hands (σ_I² = (σ_c² + σ_c²)/4) and σ_c = σ with one.
//!   WEIGHT (and WEIGHT_SPECTRUM where its cells are defined) become 1/σ_c², SIGMA (and
//!   SIGMA_SPECTRUM) σ_c; noiseless data (σ = 0) get WEIGHT = SIGMA = 1, since 1/0 is no weight.
//!   FLAG and FLAG_ROW stay as in the input, except that channels outside a channel range are
//!   zeroed and flagged.
//! - other rows (other fields, other spectral windows): DATA = 0, FLAG and FLAG_ROW set, so
//!   that no tool mistakes the input's real data for part of the simulation. WEIGHT and SIGMA
//!   are left as they were.
//! - CORRECTED_DATA, when present, becomes a copy of DATA (tools that prefer it see the same
//!   simulation); MODEL_DATA, when present, becomes zero. Both are kept rather than removed, so
//!   that the table layout stays the input's.
//!
//! Noise is reproducible: row `r` draws from ChaCha8 stream `r` of the seed, channel by channel
//! over all channels, so the same seed gives the same data whatever the chunk size, the
//! selection or the thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use num_complex::Complex;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::MsError;
use crate::info::read_info;
use crate::reader::{make_plan, Plan};
use crate::stokes::StokesPlan;
use crate::table::{Rows, Table};
use crate::types::{DataColumn, MsInfo, Selection};

/// One chunk of the selection to simulate: rows of one spectral window, in row order.
#[derive(Debug, Clone, Default)]
pub struct VisChunkMeta {
    pub spw: usize,
    /// Row numbers in the main table (ascending).
    pub rows: Vec<u64>,
    /// Per row: UVW in metres (antenna 1 minus antenna 2, as the reader returns it).
    pub uvw: Vec<[f64; 3]>,
    pub antenna1: Vec<i32>,
    pub antenna2: Vec<i32>,
    pub time: Vec<f64>,
    /// Per selected channel: frequency in Hz.
    pub freq: Vec<f64>,
}

impl VisChunkMeta {
    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }
    pub fn n_chan(&self) -> usize {
        self.freq.len()
    }
}

/// What the caller returns for a chunk.
#[derive(Debug, Clone, Default)]
pub struct StokesModel {
    /// Model Stokes I, `n_rows × n_chan` row-major, in Jy; must be finite.
    pub vis: Vec<Complex<f64>>,
    /// Noise σ of Stokes I per real component, in Jy (0: noiseless).
    pub sigma: f64,
}

/// Counts for the user's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows of the main table (all of them are written).
    pub rows: usize,
    /// Rows that received the model.
    pub simulated_rows: usize,
    /// Stokes I samples (rows × selected channels) simulated.
    pub simulated_samples: usize,
    /// Rows outside the selection, zeroed and flagged.
    pub flagged_out_rows: usize,
}

fn io_err(path: &Path, context: &str, source: std::io::Error) -> MsError {
    MsError::Io {
        path: path.to_path_buf(),
        context: context.to_string(),
        source,
    }
}

/// Copies the Measurement Set `src` (the whole directory tree: subtables, `table.lock` files)
/// to the new path `dst`, with the copy writable by its owner. Refuses when `dst` exists or lies
/// inside `src`; `src` is only read. On failure, whatever was copied is removed again.
pub fn create_like(src: &Path, dst: &Path) -> Result<(), MsError> {
    let meta = std::fs::metadata(src).map_err(|_| MsError::NotFound {
        path: src.to_path_buf(),
    })?;
    if !meta.is_dir() {
        return Err(MsError::NotADirectory {
            path: src.to_path_buf(),
        });
    }
    if !src.join("table.dat").is_file() {
        return Err(MsError::NotATable {
            path: src.to_path_buf(),
            reason: "the directory has no table.dat".into(),
        });
    }
    if std::fs::symlink_metadata(dst).is_ok() {
        return Err(MsError::OutputExists {
            path: dst.to_path_buf(),
        });
    }
    let src_abs = src
        .canonicalize()
        .map_err(|e| io_err(src, "resolving the path", e))?;
    let dst_abs = absolute_new_path(dst)?;
    if dst_abs.starts_with(&src_abs) {
        return Err(MsError::OutputInsideInput {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
        });
    }
    copy_tree(src, dst).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(dst);
    })
}

/// The absolute path `dst` will have, resolving its (existing) parent directory.
fn absolute_new_path(dst: &Path) -> Result<PathBuf, MsError> {
    let name = dst.file_name().ok_or_else(|| MsError::Malformed {
        path: dst.to_path_buf(),
        what: "output path (it has no file name)".into(),
    })?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| io_err(parent, "resolving the output's directory", e))?;
    Ok(parent.join(name))
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), MsError> {
    std::fs::create_dir(dst).map_err(|e| io_err(dst, "creating the directory", e))?;
    let entries = std::fs::read_dir(src).map_err(|e| io_err(src, "listing the directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(src, "listing the directory", e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        // Follows symbolic links: the copy must stand on its own.
        let meta = std::fs::metadata(&from).map_err(|e| io_err(&from, "reading", e))?;
        if meta.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| io_err(&from, "copying", e))?;
            make_owner_writable(&to)?;
        }
    }
    make_owner_writable(dst)
}

/// Inputs are often read-only (archives, test data); `fs::copy` carries that over, and casacore
/// could then not open the copy for update.
fn make_owner_writable(path: &Path) -> Result<(), MsError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, "reading", e))?;
    let mut perm = meta.permissions();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        perm.set_mode(perm.mode() | 0o200);
    }
    #[cfg(not(unix))]
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(path, perm).map_err(|e| io_err(path, "making it writable", e))
}

/// Rows of one data description in a block: (selected, others).
type RowGroups = (Vec<u64>, Vec<u64>);

/// A Measurement Set made by [`create_like`], opened for update.
pub struct MsWriter {
    main: Table,
    info: MsInfo,
}

impl std::fmt::Debug for MsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsWriter")
            .field("path", &self.info.path)
            .finish()
    }
}

impl MsWriter {
    /// Opens `path` for update. Meant for a copy made by [`create_like`]: opening a user's
    /// input this way would modify it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MsError> {
        let path = path.as_ref();
        if !path.join("table.dat").is_file() {
            return Err(MsError::NotATable {
                path: path.to_path_buf(),
                reason: "the directory has no table.dat".into(),
            });
        }
        let main = Table::open_rw(path)?;
        let info = read_info(path, &main)?;
        if !main.has_column("DATA") {
            return Err(MsError::MissingColumn {
                path: path.to_path_buf(),
                table: "MAIN".into(),
                column: "DATA".into(),
                hint: " (the simulator writes DATA)".into(),
            });
        }
        Ok(MsWriter { main, info })
    }

    pub fn info(&self) -> &MsInfo {
        &self.info
    }

    /// Replaces the data of every row (see the module documentation): `model` is called once
    /// per chunk of the selection (`sel.column` is ignored: DATA is written), in row order, and
    /// its error is returned as is. Rows are processed `sel.chunk_rows` at a time. Errors with
    /// `NoRows`, before writing anything, when the selection has no row.
    pub fn write_stokes_i<E: From<MsError>>(
        &mut self,
        sel: &Selection,
        seed: u64,
        mut model: impl FnMut(&VisChunkMeta) -> Result<StokesModel, E>,
    ) -> Result<WriteStats, E> {
        let sel = Selection {
            column: DataColumn::Data,
            ..sel.clone()
        };
        let plan = make_plan(&self.info, &self.main, &sel)?;
        let n_rows = self.main.n_rows();
        let mut stats = WriteStats {
            rows: n_rows,
            ..Default::default()
        };
        // A first pass over the (small) index columns, so that an empty selection is refused
        // before anything is written.
        let mut any = false;
        let mut start = 0;
        while start < n_rows && !any {
            let n = plan.chunk_rows.min(n_rows - start);
            any = self
                .block_groups(&plan, start, n)?
                .values()
                .any(|(selected, _)| !selected.is_empty());
            start += n;
        }
        if !any {
            return Err(MsError::NoRows {
                path: self.info.path.clone(),
                what: format!(
                    "no row of field {} in the selected spectral windows: nothing to simulate",
                    plan.field
                ),
            }
            .into());
        }
        let mut start = 0;
        while start < n_rows {
            let n = plan.chunk_rows.min(n_rows - start);
            for (d, (selected, others)) in self.block_groups(&plan, start, n)? {
                if !selected.is_empty() {
                    let meta = self.chunk_meta(d, &selected, plan.channels)?;
                    let m = model(&meta)?;
                    self.write_model(d, &meta, plan.channels, &m, seed)?;
                    stats.simulated_rows += meta.n_rows();
                    stats.simulated_samples += meta.n_rows() * meta.n_chan();
                }
                if !others.is_empty() {
                    self.write_flagged_out(d, &others)?;
                    stats.flagged_out_rows += others.len();
                }
            }
            start += n;
        }
        Ok(stats)
    }

    /// Rows `[start, start + n)` by data description: (selected rows, other rows).
    fn block_groups(
        &self,
        plan: &Plan,
        start: usize,
        n: usize,
    ) -> Result<BTreeMap<usize, RowGroups>, MsError> {
        let range = Rows::Range {
            start: start as u64,
            len: n as u64,
        };
        let (mut field_id, mut ddid) = (Vec::<i32>::new(), Vec::<i32>::new());
        self.main.read_scalar("FIELD_ID", range, &mut field_id)?;
        self.main.read_scalar("DATA_DESC_ID", range, &mut ddid)?;
        let mut groups: BTreeMap<usize, RowGroups> = BTreeMap::new();
        let n_dd = self.info.data_descs.len();
        for i in 0..n {
            let row = start + i;
            let (f, d) = (field_id[i], ddid[i]);
            if d < 0 || d as usize >= n_dd {
                return Err(self.bad_index(row, "DATA_DESC_ID", d, n_dd));
            }
            let g = groups.entry(d as usize).or_default();
            if f >= 0 && f as usize == plan.field && plan.dd_selected[d as usize] {
                g.0.push(row as u64);
            } else {
                g.1.push(row as u64);
            }
        }
        Ok(groups)
    }

    /// Turns `rows` of the copy into unflagged autocorrelations (ANTENNA2 = ANTENNA1, UVW 0,
    /// every correlation and channel of DATA = `value`), as a total-power measurement is
    /// stored: for tests that readers leave such rows out.
    #[doc(hidden)]
    pub fn make_autocorrelations(
        &mut self,
        rows: &[u64],
        value: Complex<f32>,
    ) -> Result<(), MsError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sel = Rows::List(rows);
        let mut a1 = Vec::<i32>::new();
        self.main.read_scalar("ANTENNA1", sel, &mut a1)?;
        self.main.write_scalar("ANTENNA2", sel, &a1)?;
        self.main
            .write_array("UVW", sel, &[3], &vec![0.0f64; 3 * rows.len()])?;
        let first = rows[0] as usize;
        let shape = self
            .main
            .cell_shape("DATA", first)?
            .ok_or_else(|| MsError::Malformed {
                path: self.info.path.clone(),
                what: format!("DATA row {first}: no shape"),
            })?;
        let cell: usize = shape.iter().product();
        self.main
            .write_array("DATA", sel, &shape, &vec![value; cell * rows.len()])?;
        self.main
            .write_array("FLAG", sel, &shape, &vec![0u8; cell * rows.len()])?;
        if self.main.has_column("FLAG_ROW") {
            self.main
                .write_scalar("FLAG_ROW", sel, &vec![0u8; rows.len()])?;
        }
        // Usable weights, so that a reader that did not leave the rows out would grid them.
        let n_corr = shape[0];
        if self.main.has_column("WEIGHT") {
            self.main
                .write_array("WEIGHT", sel, &[n_corr], &vec![1.0f32; n_corr * rows.len()])?;
        }
        if self.main.has_column("WEIGHT_SPECTRUM")
            && self.main.cell_shape("WEIGHT_SPECTRUM", first)?.as_deref() == Some(&shape[..])
        {
            self.main.write_array(
                "WEIGHT_SPECTRUM",
                sel,
                &shape,
                &vec![1.0f32; cell * rows.len()],
            )?;
        }
        Ok(())
    }

    /// Sets ANTENNA1 of `rows` to `value` (which need not be a valid antenna): for tests of
    /// readers' checks of malformed input.
    #[doc(hidden)]
    pub fn set_antenna1(&mut self, rows: &[u64], value: i32) -> Result<(), MsError> {
        self.main
            .write_scalar("ANTENNA1", Rows::List(rows), &vec![value; rows.len()])
    }

    /// Sets UVW of `rows` to zero: for tests of data without any baseline.
    #[doc(hidden)]
    pub fn zero_uvw(&mut self, rows: &[u64]) -> Result<(), MsError> {
        self.main
            .write_array("UVW", Rows::List(rows), &[3], &vec![0.0f64; 3 * rows.len()])
    }

    /// Flushes everything to disk and closes the table; errors that casacore would otherwise
    /// swallow on close show up here.
    pub fn finish(self) -> Result<(), MsError> {
        self.main.flush()
    }

    fn bad_index(&self, row: usize, what: &'static str, value: i32, len: usize) -> MsError {
        MsError::BadIndex {
            path: self.info.path.clone(),
            table: "MAIN".into(),
            row,
            what,
            value: value as i64,
            len,
        }
    }

    /// `(n_corr, n_chan)` of a data description, checked against the DATA cell of `first`.
    fn cell(&self, ddid: usize, first: u64) -> Result<[usize; 2], MsError> {
        let (spw, pol) = self.info.data_descs[ddid];
        let cell = [
            self.info.polarizations[pol].len(),
            self.info.spws[spw].chan_freq.len(),
        ];
        // An undefined cell is fine: whole-cell writes define it.
        if let Some(shape) = self.main.cell_shape("DATA", first as usize)? {
            if shape != cell {
                return Err(MsError::Malformed {
                    path: self.info.path.clone(),
                    what: format!(
                        "DATA row {first}: cell shape {shape:?}, but its data description \
                         ({ddid}) says {} correlations × {} channels",
                        cell[0], cell[1]
                    ),
                });
            }
        }
        Ok(cell)
    }

    fn chunk_meta(
        &self,
        ddid: usize,
        rows: &[u64],
        channels: Option<(usize, usize)>,
    ) -> Result<VisChunkMeta, MsError> {
        let spw = self.info.data_descs[ddid].0;
        let freq_all = &self.info.spws[spw].chan_freq;
        let (c0, c1) = channels.unwrap_or((0, freq_all.len()));
        let r = rows_of(rows);
        let mut uvw = Vec::new();
        let mut meta = VisChunkMeta {
            spw,
            rows: rows.to_vec(),
            freq: freq_all[c0..c1].to_vec(),
            ..Default::default()
        };
        self.main.read_array("UVW", r, &[3], None, &mut uvw)?;
        meta.uvw = uvw.chunks_exact(3).map(|u| [u[0], u[1], u[2]]).collect();
        self.main.read_scalar("TIME", r, &mut meta.time)?;
        self.main.read_scalar("ANTENNA1", r, &mut meta.antenna1)?;
        self.main.read_scalar("ANTENNA2", r, &mut meta.antenna2)?;
        Ok(meta)
    }

    fn bad_model(&self, what: String) -> MsError {
        MsError::BadModel {
            path: self.info.path.clone(),
            what,
        }
    }

    fn write_model(
        &self,
        ddid: usize,
        meta: &VisChunkMeta,
        channels: Option<(usize, usize)>,
        model: &StokesModel,
        seed: u64,
    ) -> Result<(), MsError> {
        let rows = &meta.rows;
        let (n_rows, n_sel) = (meta.n_rows(), meta.n_chan());
        if model.vis.len() != n_rows * n_sel {
            return Err(self.bad_model(format!(
                "{} values for {n_rows} rows × {n_sel} channels",
                model.vis.len()
            )));
        }
        if let Some(i) = model
            .vis
            .iter()
            .position(|v| !(v.re.is_finite() && v.im.is_finite()))
        {
            return Err(self.bad_model(format!(
                "value {} (row {}) is not finite",
                model.vis[i],
                rows[i / n_sel.max(1)]
            )));
        }
        if !(model.sigma.is_finite() && model.sigma >= 0.0) {
            return Err(self.bad_model(format!("noise σ = {}", model.sigma)));
        }
        let pol = self.info.data_descs[ddid].1;
        let corr = &self.info.polarizations[pol];
        let stokes = StokesPlan::new(corr).ok_or_else(|| MsError::UnsupportedCorrelations {
            path: self.info.path.clone(),
            pol_id: pol,
            corr: corr.clone(),
        })?;
        let sigma_c = match stokes {
            StokesPlan::Pair(..) => std::f64::consts::SQRT_2 * model.sigma,
            StokesPlan::Single(_) => model.sigma,
        };
        let parallel: Vec<bool> = corr.iter().map(|c| c.is_parallel_hand()).collect();
        let [n_corr, n_chan] = self.cell(ddid, rows[0])?;
        let (c0, c1) = channels.unwrap_or((0, n_chan));

        let mut data = vec![Complex::<f32>::new(0.0, 0.0); n_rows * n_chan * n_corr];
        for (r, &row) in rows.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(row);
            for c in 0..n_chan {
                for k in 0..n_corr {
                    let noise = if sigma_c > 0.0 {
                        let re: f64 = StandardNormal.sample(&mut rng);
                        let im: f64 = StandardNormal.sample(&mut rng);
                        Complex::new(re, im) * sigma_c
                    } else {
                        Complex::new(0.0, 0.0)
                    };
                    if c < c0 || c >= c1 {
                        continue;
                    }
                    let i = if parallel[k] {
                        model.vis[r * n_sel + c - c0]
                    } else {
                        Complex::new(0.0, 0.0)
                    };
                    let v = i + noise;
                    data[(r * n_chan + c) * n_corr + k] = Complex::new(v.re as f32, v.im as f32);
                }
            }
        }

        let r = rows_of(rows);
        let cell = [n_corr, n_chan];
        let main = &self.main;
        main.write_array("DATA", r, &cell, &data)?;
        if main.has_column("CORRECTED_DATA") {
            main.write_array("CORRECTED_DATA", r, &cell, &data)?;
        }
        if main.has_column("MODEL_DATA") {
            data.fill(Complex::new(0.0, 0.0));
            main.write_array("MODEL_DATA", r, &cell, &data)?;
        }
        if (c0, c1) != (0, n_chan) {
            let mut flag = Vec::<u8>::new();
            main.read_array("FLAG", r, &cell, None, &mut flag)?;
            for (i, f) in flag.iter_mut().enumerate() {
                let c = (i / n_corr) % n_chan;
                if c < c0 || c >= c1 {
                    *f = 1;
                }
            }
            main.write_array("FLAG", r, &cell, &flag)?;
        }

        let (w, s) = if sigma_c > 0.0 {
            ((1.0 / (sigma_c * sigma_c)) as f32, sigma_c as f32)
        } else {
            (1.0, 1.0)
        };
        for (col, value) in [("WEIGHT", w), ("SIGMA", s)] {
            if main.has_column(col) {
                main.write_array(col, r, &[n_corr], &vec![value; n_rows * n_corr])?;
            }
        }
        for (col, value) in [("WEIGHT_SPECTRUM", w), ("SIGMA_SPECTRUM", s)] {
            // Only where the input defines them, as the reader (and WSClean) use them only then.
            if main.has_column(col)
                && main.cell_shape(col, rows[0] as usize)?.as_deref() == Some(&cell[..])
            {
                main.write_array(col, r, &cell, &vec![value; n_rows * n_chan * n_corr])?;
            }
        }
        Ok(())
    }

    fn write_flagged_out(&self, ddid: usize, rows: &[u64]) -> Result<(), MsError> {
        let cell = self.cell(ddid, rows[0])?;
        let n = rows.len() * cell[0] * cell[1];
        let r = rows_of(rows);
        let main = &self.main;
        let zeros = vec![Complex::<f32>::new(0.0, 0.0); n];
        for col in ["DATA", "CORRECTED_DATA", "MODEL_DATA"] {
            if main.has_column(col) {
                main.write_array(col, r, &cell, &zeros)?;
            }
        }
        main.write_array("FLAG", r, &cell, &vec![1u8; n])?;
        if main.has_column("FLAG_ROW") {
            main.write_scalar("FLAG_ROW", r, &vec![1u8; rows.len()])?;
        }
        Ok(())
    }
}

/// A contiguous run goes to casacore as a range, which its storage managers handle fastest.
fn rows_of(rows: &[u64]) -> Rows<'_> {
    if rows[rows.len() - 1] - rows[0] + 1 == rows.len() as u64 {
        Rows::Range {
            start: rows[0],
            len: rows.len() as u64,
        }
    } else {
        Rows::List(rows)
    }
}

/// Writes a simulated copy of `src` at `dst`: [`create_like`] into a temporary directory beside
/// `dst`, [`MsWriter::write_stokes_i`], flush, then a rename into place. On any error the
/// temporary copy is removed and `dst` does not exist.
pub fn simulate_like<E: From<MsError>>(
    src: &Path,
    dst: &Path,
    sel: &Selection,
    seed: u64,
    model: impl FnMut(&VisChunkMeta) -> Result<StokesModel, E>,
) -> Result<WriteStats, E> {
    if std::fs::symlink_metadata(dst).is_ok() {
        return Err(MsError::OutputExists {
            path: dst.to_path_buf(),
        }
        .into());
    }
    let abs = absolute_new_path(dst)?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = abs.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    // The inside-the-input check must see the real output path, not the temporary one.
    if let Ok(src_abs) = src.canonicalize() {
        if abs.starts_with(&src_abs) {
            return Err(MsError::OutputInsideInput {
                src: src.to_path_buf(),
                dst: dst.to_path_buf(),
            }
            .into());
        }
    }
    create_like(src, &tmp)?;
    let result = (|| {
        let mut w = MsWriter::open(&tmp)?;
        let stats = w.write_stokes_i(sel, seed, model)?;
        w.finish()?;
        if std::fs::symlink_metadata(dst).is_ok() {
            return Err(MsError::OutputExists {
                path: dst.to_path_buf(),
            }
            .into());
        }
        std::fs::rename(&tmp, dst).map_err(|e| io_err(dst, "renaming the finished copy", e))?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
