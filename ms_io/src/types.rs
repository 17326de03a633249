use num_complex::Complex;

/// Which data column to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataColumn {
    #[default]
    Data,
    CorrectedData,
    ModelData,
}

impl DataColumn {
    pub fn column_name(&self) -> &'static str {
        match self {
            DataColumn::Data => "DATA",
            DataColumn::CorrectedData => "CORRECTED_DATA",
            DataColumn::ModelData => "MODEL_DATA",
        }
    }
}

/// A field chosen by its row number in the FIELD table or by its NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSelector {
    Id(usize),
    Name(String),
}

/// What to read. `Default` is: the first field (id 0, or the first holding rows when field 0
/// holds none), every spectral window, every channel, the DATA column.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub field: Option<FieldSelector>,
    /// Spectral window ids; `None` = all.
    pub spws: Option<Vec<usize>>,
    /// Channel range `[start, end)` applied to every selected spectral window; `None` = all.
    pub channels: Option<(usize, usize)>,
    pub column: DataColumn,
    /// Rows per chunk; 0 chooses a default (about 10k rows).
    pub chunk_rows: usize,
}

/// Reference frame of a direction (the `MEASINFO` `Ref` keyword of a direction column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    J2000,
    Icrs,
    B1950,
}

/// A sky direction in radians.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Direction {
    pub ra: f64,
    pub dec: f64,
    pub frame: Frame,
}

/// Correlation products (casacore's Stokes enumeration values, as in `CORR_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correlation {
    RR,
    RL,
    LR,
    LL,
    XX,
    XY,
    YX,
    YY,
    /// Any other `CORR_TYPE` code.
    Other(i32),
}

#[derive(Debug, Clone)]
pub struct FieldInfo {
    pub name: String,
    pub phase_dir: Direction,
}

#[derive(Debug, Clone)]
pub struct SpwInfo {
    pub name: String,
    pub chan_freq: Vec<f64>,
    pub ref_freq: f64,
}

#[derive(Debug, Clone)]
pub struct AntennaInfo {
    pub name: String,
    pub dish_diameter: f64,
    /// ITRF position, metres.
    pub position: [f64; 3],
}

/// Metadata of a Measurement Set.
#[derive(Debug, Clone)]
pub struct MsInfo {
    pub path: std::path::PathBuf,
    pub n_rows: usize,
    pub telescope: String,
    pub observer: String,
    /// Columns of the main table.
    pub columns: Vec<String>,
    pub fields: Vec<FieldInfo>,
    pub spws: Vec<SpwInfo>,
    /// DATA_DESCRIPTION rows: `(spectral window id, polarization id)`.
    pub data_descs: Vec<(usize, usize)>,
    /// POLARIZATION rows: the `CORR_TYPE` of each.
    pub polarizations: Vec<Vec<Correlation>>,
    pub antennas: Vec<AntennaInfo>,
    /// First and last TIME of the main table (MJD seconds, UTC).
    pub time_range: (f64, f64),
}

/// A block of Stokes I visibilities sharing one spectral window: `n_rows × n_chan`, row-major.
#[derive(Debug, Clone, Default)]
pub struct VisChunk {
    pub spw: usize,
    /// Per row: UVW in metres.
    pub uvw: Vec<[f64; 3]>,
    pub antenna1: Vec<i32>,
    pub antenna2: Vec<i32>,
    pub time: Vec<f64>,
    /// Per channel: frequency in Hz.
    pub freq: Vec<f64>,
    /// Stokes I, `uvw.len() × freq.len()`.
    pub vis: Vec<Complex<f32>>,
    /// Weight of the Stokes I sample (1/σ²); exactly 0 where the sample must not be used
    /// (flagged, or non-finite data or weight).
    pub weight: Vec<f32>,
}

impl VisChunk {
    pub fn n_rows(&self) -> usize {
        self.uvw.len()
    }
    pub fn n_chan(&self) -> usize {
        self.freq.len()
    }
}

/// Counts gathered while reading, for the user's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub rows: usize,
    /// Stokes I samples (rows × channels) read.
    pub samples: usize,
    /// Samples with weight > 0.
    pub used: usize,
    /// Samples dropped as flagged, zero-weight or non-finite.
    pub dropped: usize,
    /// Rows of the selection skipped as autocorrelations (ANTENNA1 = ANTENNA2).
    pub autocorrelations: usize,
}

/// Everything read for one selection.
#[derive(Debug, Clone)]
pub struct Visibilities {
    pub chunks: Vec<VisChunk>,
    pub field: FieldInfo,
    pub stats: ReadStats,
}
