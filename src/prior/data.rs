//! Training images: `.npy` stacks and FITS cubes, resizing, cropping and normalisation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PriorError;

/// A stack of equally sized single-channel images, row-major, `n × h × w`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageStack {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl ImageStack {
    pub fn new(n: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), n * h * w, "ImageStack data length");
        Self { n, h, w, data }
    }
    pub fn image(&self, i: usize) -> &[f32] {
        let s = self.h * self.w;
        &self.data[i * s..(i + 1) * s]
    }
    pub fn image_mut(&mut self, i: usize) -> &mut [f32] {
        let s = self.h * self.w;
        &mut self.data[i * s..(i + 1) * s]
    }
    /// The images at `indices`, in that order (a copy).
    pub fn subset(&self, indices: &[usize]) -> ImageStack {
        let mut data = Vec::with_capacity(indices.len() * self.h * self.w);
        for &i in indices {
            data.extend_from_slice(self.image(i));
        }
        ImageStack::new(indices.len(), self.h, self.w, data)
    }
}

/// A hold-out split of an image stack: which images training never sees. Recorded in a
/// checkpoint's `config.json` (`training.split`) so that `prior stats --split val` and a
/// resumed run use exactly the same images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// Seed of the split (independent of the training seed, so that changing `--seed` never
    /// moves images between the training and the validation part).
    pub seed: u64,
    /// Requested validation fraction.
    pub fraction: f64,
    /// Number of images of the input stack the split was drawn over.
    pub n_images: usize,
    /// Validation image indices into the input stack, ascending.
    pub val_indices: Vec<usize>,
}

impl Split {
    /// Training image indices: every index of the stack not held out, ascending.
    pub fn train_indices(&self) -> Vec<usize> {
        let mut held = vec![false; self.n_images];
        for &i in &self.val_indices {
            held[i] = true;
        }
        (0..self.n_images).filter(|&i| !held[i]).collect()
    }
}

/// SplitMix64's finaliser: a fixed, well-mixed hash of a 64-bit word.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Holds out `round(fraction · n)` images (at least one when `fraction > 0`) of an `n`-image
/// stack. Each index is ranked by a hash of (`seed`, index) and the lowest ranks are held
/// out: a pure function of `(n, fraction, seed)`, spelled out here rather than drawn from a
/// library RNG, so the same data file gives the same split in any build or rand version.
pub fn validation_split(n: usize, fraction: f64, seed: u64) -> Result<Split, String> {
    if !(fraction.is_finite() && (0.0..1.0).contains(&fraction)) {
        return Err(format!(
            "validation fraction must be in [0, 1), got {fraction}"
        ));
    }
    let mut n_val = (fraction * n as f64).round() as usize;
    if fraction > 0.0 {
        n_val = n_val.max(1);
    }
    if n_val >= n && n_val > 0 {
        return Err(format!(
            "a validation fraction of {fraction} of {n} image(s) holds out {n_val} and leaves              none to train on (lower --val-fraction, or 0 to train on all)"
        ));
    }
    let key = splitmix64(seed ^ 0x7661_6c5f_7370_6c74); // "val_splt"
    let mut ranked: Vec<(u64, usize)> = (0..n)
        .map(|i| (splitmix64(key ^ splitmix64(i as u64)), i))
        .collect();
    ranked.sort_unstable();
    let mut val_indices: Vec<usize> = ranked[..n_val].iter().map(|&(_, i)| i).collect();
    val_indices.sort_unstable();
    Ok(Split {
        seed,
        fraction,
        n_images: n,
        val_indices,
    })
}

fn data_err(path: &Path, msg: impl Into<String>) -> PriorError {
    PriorError::Data {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads a `.npy` file holding N×H×W (or H×W, read as N = 1) images of uint8, float32 or
/// float64 (little-endian, C order).
pub fn read_npy(path: &Path) -> Result<ImageStack, PriorError> {
    let bytes = std::fs::read(path).map_err(|source| PriorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes).map_err(|m| data_err(path, m))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NpyType {
    U8,
    F32,
    F64,
}

/// Parses `.npy` bytes; errors are plain messages so the caller can name the file.
pub fn parse_npy(bytes: &[u8]) -> Result<ImageStack, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (missing \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "non-UTF-8 .npy header")?;
    let descr = header_value(header, "descr").ok_or("no 'descr' in .npy header")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let ty = match descr {
        "|u1" | "<u1" | "u1" | "|b1" => NpyType::U8,
        "<f4" => NpyType::F32,
        "<f8" => NpyType::F64,
        d => {
            return Err(format!(
                "unsupported dtype '{d}' (supported: uint8, little-endian float32/float64)"
            ))
        }
    };
    let fortran = header_value(header, "fortran_order").ok_or("no 'fortran_order' in header")?;
    if fortran.trim() != "False" {
        return Err("Fortran-ordered arrays are not supported; save with C order".into());
    }
    let shape_s = header_value(header, "shape").ok_or("no 'shape' in .npy header")?;
    let dims: Vec<usize> = shape_s
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_s}"))
        })
        .collect::<Result<_, _>>()?;
    let (n, h, w) = match dims.as_slice() {
        [h, w] => (1, *h, *w),
        [n, h, w] => (*n, *h, *w),
        [n, 1, h, w] => (*n, *h, *w),
        _ => {
            return Err(format!(
                "expected an N×H×W (or H×W, N×1×H×W) array, got shape {dims:?}"
            ))
        }
    };
    let count = n * h * w;
    let body = &bytes[hstart + hlen..];
    let item = match ty {
        NpyType::U8 => 1,
        NpyType::F32 => 4,
        NpyType::F64 => 8,
    };
    if body.len() < count * item {
        return Err(format!(
            "truncated data: shape {dims:?} needs {} bytes, file has {}",
            count * item,
            body.len()
        ));
    }
    let data: Vec<f32> = match ty {
        NpyType::U8 => body[..count].iter().map(|&b| b as f32).collect(),
        NpyType::F32 => body[..count * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        NpyType::F64 => body[..count * 8]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(format!("non-finite value at flat index {i}"));
    }
    Ok(ImageStack::new(n, h, w, data))
}

/// Value text of `'key': value` in a numpy header dict (values here never contain `'key'`).
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find(',').unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Writes an f32 `.npy` N×H×W stack (for tests and for exchanging samples with Python).
pub fn write_npy_f32(path: &Path, stack: &ImageStack) -> std::io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}, {}), }}",
        stack.n, stack.h, stack.w
    );
    // Pad so that the data starts on a 64-byte boundary, as numpy does.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + stack.data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &stack.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out)
}

/// Reads training images from `.npy` or FITS (a 2-D image or a 3-D cube, NAXIS3 = N).
pub fn read_images(path: &Path) -> Result<ImageStack, PriorError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "npy" => read_npy(path),
        "fits" | "fit" | "fts" => read_fits_stack(path),
        _ => Err(data_err(
            path,
            "unknown training-data format (expected .npy or .fits)",
        )),
    }
}

fn read_fits_stack(path: &Path) -> Result<ImageStack, PriorError> {
    let img = crate::io::read_image(path).map_err(|e| data_err(path, e.to_string()))?;
    // numpy axis order: (N, H, W) for a cube; degenerate axes (frequency, Stokes) dropped.
    let dims: Vec<usize> = img.shape.iter().copied().filter(|&d| d != 1).collect();
    let (n, h, w) = match dims.as_slice() {
        [h, w] => (1, *h, *w),
        [n, h, w] => (*n, *h, *w),
        _ => {
            return Err(data_err(
                path,
                format!("expected a 2-D image or 3-D cube, got axes {:?}", img.shape),
            ))
        }
    };
    // Blanked (NaN) pixels carry no emission: train on them as zero.
    let data: Vec<f32> = img
        .data
        .iter()
        .map(|&v| if v.is_finite() { v as f32 } else { 0.0 })
        .collect();
    Ok(ImageStack::new(n, h, w, data))
}

/// How raw pixel values map to the network's [0, 1] range; recorded in checkpoints so that
/// posterior samples can be mapped back to physical units (`physical = x · scale + offset`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Normalisation {
    /// Each image is clipped at 0 and divided by its own peak. `typical_peak` (the median peak
    /// of the training set, in input units) is the scale to use when mapping back.
    PerImagePeak { typical_peak: f64 },
    /// One affine map for all images: x = (v − offset) / scale.
    Global { offset: f64, scale: f64 },
    /// Noise cutouts: every pixel divided by the root mean square of the whole stack, no
    /// offset, so zero-mean noise keeps its zero and has unit variance (a learned noise
    /// likelihood reads the noise level from `rms`).
    NoiseRms { rms: f64 },
}

impl Normalisation {
    /// Multiplicative scale from model units to input units.
    pub fn scale(&self) -> f64 {
        match self {
            Normalisation::PerImagePeak { typical_peak } => *typical_peak,
            Normalisation::Global { scale, .. } => *scale,
            Normalisation::NoiseRms { rms } => *rms,
        }
    }
    pub fn offset(&self) -> f64 {
        match self {
            Normalisation::PerImagePeak { .. } | Normalisation::NoiseRms { .. } => 0.0,
            Normalisation::Global { offset, .. } => *offset,
        }
    }
    pub fn to_physical(&self, x: f32) -> f32 {
        (x as f64 * self.scale() + self.offset()) as f32
    }
}

/// Which normalisation to apply when preparing a training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    #[default]
    PerImagePeak,
    /// Global min/max of the whole stack to [0, 1].
    GlobalMinMax,
    /// Divide by the stack's root mean square (noise cutouts: a peak or min/max scale would
    /// distort zero-mean noise).
    NoiseRms,
}

/// Resampling used to bring images to the model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// Area averaging when shrinking (no aliasing), bilinear when enlarging.
    #[default]
    Area,
    Bilinear,
}

/// 1-D area-averaging weights: output i covers input [i·s, (i+1)·s), s = n_in / n_out.
fn area_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let s = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let a = i as f64 * s;
            let b = (i + 1) as f64 * s;
            let mut w = Vec::new();
            let mut j = a.floor() as usize;
            while (j as f64) < b && j < n_in {
                let lo = a.max(j as f64);
                let hi = b.min((j + 1) as f64);
                if hi > lo {
                    w.push((j, ((hi - lo) / s) as f32));
                }
                j += 1;
            }
            w
        })
        .collect()
}

/// 1-D bilinear weights with half-pixel centres (align_corners = false).
fn bilinear_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let s = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let x = ((i as f64 + 0.5) * s - 0.5).clamp(0.0, (n_in - 1) as f64);
            let j = x.floor() as usize;
            let f = (x - j as f64) as f32;
            if j + 1 < n_in && f > 0.0 {
                vec![(j, 1.0 - f), (j + 1, f)]
            } else {
                vec![(j, 1.0)]
            }
        })
        .collect()
}

fn weights(n_in: usize, n_out: usize, mode: Resample) -> Vec<Vec<(usize, f32)>> {
    match mode {
        Resample::Area if n_out < n_in => area_weights(n_in, n_out),
        _ => bilinear_weights(n_in, n_out),
    }
}

/// Separable resize of one image.
pub fn resize(img: &[f32], h: usize, w: usize, oh: usize, ow: usize, mode: Resample) -> Vec<f32> {
    if (h, w) == (oh, ow) {
        return img.to_vec();
    }
    let wx = weights(w, ow, mode);
    let wy = weights(h, oh, mode);
    let mut tmp = vec![0f32; h * ow];
    for y in 0..h {
        let row = &img[y * w..(y + 1) * w];
        for (x, ws) in wx.iter().enumerate() {
            tmp[y * ow + x] = ws.iter().map(|&(j, c)| row[j] * c).sum();
        }
    }
    let mut out = vec![0f32; oh * ow];
    for (y, ws) in wy.iter().enumerate() {
        for &(j, c) in ws {
            let src = &tmp[j * ow..(j + 1) * ow];
            let dst = &mut out[y * ow..(y + 1) * ow];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += c * s;
            }
        }
    }
    out
}

/// Central crop of one image to `ch × cw`.
pub fn center_crop(img: &[f32], h: usize, w: usize, ch: usize, cw: usize) -> Vec<f32> {
    let y0 = (h - ch) / 2;
    let x0 = (w - cw) / 2;
    let mut out = Vec::with_capacity(ch * cw);
    for y in y0..y0 + ch {
        out.extend_from_slice(&img[y * w + x0..y * w + x0 + cw]);
    }
    out
}

/// How to turn a raw stack into model-ready `size × size` images in [0, 1].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preprocess {
    pub size: usize,
    /// Central crop (in input pixels) applied before resizing; `None` crops to a square.
    pub crop: Option<usize>,
    pub resample: Resample,
    pub norm: NormKind,
}

/// A prepared training set plus how it was made.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: ImageStack,
    pub normalisation: Normalisation,
    pub source: PathBuf,
    pub preprocess: Preprocess,
}

/// Crops, resizes and normalises a raw stack.
pub fn prepare(raw: &ImageStack, pp: &Preprocess, source: &Path) -> Result<Dataset, PriorError> {
    let side = pp.crop.unwrap_or(raw.h.min(raw.w));
    if side > raw.h || side > raw.w || side == 0 {
        return Err(data_err(
            source,
            format!("crop {side} does not fit images of {}×{}", raw.h, raw.w),
        ));
    }
    if pp.size < 8 {
        return Err(data_err(source, "model size must be at least 8"));
    }
    let s = pp.size;
    let mut out = ImageStack::new(raw.n, s, s, vec![0.0; raw.n * s * s]);
    for i in 0..raw.n {
        let c = center_crop(raw.image(i), raw.h, raw.w, side, side);
        let r = resize(&c, side, side, s, s, pp.resample);
        out.image_mut(i).copy_from_slice(&r);
    }
    let normalisation = match pp.norm {
        NormKind::PerImagePeak => {
            let mut peaks = Vec::with_capacity(out.n);
            for i in 0..out.n {
                let img = out.image_mut(i);
                let peak = img.iter().cloned().fold(0.0f32, f32::max);
                peaks.push(peak);
                let inv = if peak > 0.0 { 1.0 / peak } else { 0.0 };
                for v in img.iter_mut() {
                    *v = v.max(0.0) * inv;
                }
            }
            peaks.sort_by(|a, b| a.total_cmp(b));
            Normalisation::PerImagePeak {
                typical_peak: peaks.get(peaks.len() / 2).copied().unwrap_or(1.0) as f64,
            }
        }
        NormKind::GlobalMinMax => {
            let lo = out.data.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = out.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let scale = if hi > lo { (hi - lo) as f64 } else { 1.0 };
            for v in out.data.iter_mut() {
                *v = ((*v - lo) as f64 / scale) as f32;
            }
            Normalisation::Global {
                offset: lo as f64,
                scale,
            }
        }
        NormKind::NoiseRms => {
            let ms = out.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
                / out.data.len().max(1) as f64;
            if !(ms.is_finite() && ms > 0.0) {
                return Err(data_err(
                    source,
                    "noise cutouts are all zero (or not finite): no noise level to learn",
                ));
            }
            let rms = ms.sqrt();
            for v in out.data.iter_mut() {
                *v = (*v as f64 / rms) as f32;
            }
            Normalisation::NoiseRms { rms }
        }
    };
    Ok(Dataset {
        images: out,
        normalisation,
        source: source.to_path_buf(),
        preprocess: pp.clone(),
    })
}

/// Applies one of the 8 symmetries of the square (flips and 90° rotations) to a square image.
pub fn dihedral(img: &[f32], n: usize, k: u8) -> Vec<f32> {
    let mut out = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (sy, sx) = match k & 7 {
                0 => (y, x),
                1 => (x, n - 1 - y),
                2 => (n - 1 - y, n - 1 - x),
                3 => (n - 1 - x, y),
                4 => (y, n - 1 - x),
                5 => (n - 1 - y, x),
                6 => (x, y),
                _ => (n - 1 - x, n - 1 - y),
            };
            out[y * n + x] = img[sy * n + sx];
        }
    }
    out
}

/// `img` (h × w) moved by `dy` rows and `dx` columns, the pixels shifted in set to zero.
///
/// Zero fill rather than a roll: radio galaxies are centred on empty sky, so a border of
/// zeros is what a slightly off-centre cutout would show, while a roll would wrap emission
/// across the edge into a place no real image has it.
pub fn shift_zero(img: &[f32], h: usize, w: usize, dy: isize, dx: isize) -> Vec<f32> {
    let mut out = vec![0f32; h * w];
    let (hh, ww) = (h as isize, w as isize);
    if dy.abs() >= hh || dx.abs() >= ww {
        return out;
    }
    // Destination columns [x0, x1) read source columns [x0 − dx, x1 − dx).
    let (x0, x1) = (dx.max(0) as usize, (ww + dx.min(0)) as usize);
    let sx0 = (x0 as isize - dx) as usize;
    let len = x1 - x0;
    for y in dy.max(0)..(hh + dy.min(0)) {
        let sy = (y - dy) as usize;
        let y = y as usize;
        out[y * w + x0..y * w + x1].copy_from_slice(&img[sy * w + sx0..sy * w + sx0 + len]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let st = ImageStack::new(2, 3, 4, (0..24).map(|v| v as f32 * 0.5).collect());
        write_npy_f32(&p, &st).unwrap();
        assert_eq!(read_npy(&p).unwrap(), st);

        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 5);
        let bad = dir.path().join("trunc.npy");
        std::fs::write(&bad, &bytes).unwrap();
        let e = read_npy(&bad).unwrap_err().to_string();
        assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");

        let junk = dir.path().join("junk.npy");
        std::fs::write(&junk, b"hello world, not numpy").unwrap();
        let e = read_npy(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.npy") && e.contains("magic"), "{e}");
    }

    #[test]
    fn npy_u8() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2), }\n";
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0, 255, 7, 9]);
        let s = parse_npy(&b).unwrap();
        assert_eq!((s.n, s.h, s.w), (1, 2, 2));
        assert_eq!(s.data, vec![0.0, 255.0, 7.0, 9.0]);
    }

    #[test]
    fn resize_preserves_constant_and_mean() {
        let img: Vec<f32> = (0..150 * 150).map(|i| (i % 7) as f32).collect();
        let mean_in: f32 = img.iter().sum::<f32>() / img.len() as f32;
        let r = resize(&img, 150, 150, 64, 64, Resample::Area);
        let mean_out: f32 = r.iter().sum::<f32>() / r.len() as f32;
        assert!((mean_in - mean_out).abs() < 0.02, "{mean_in} {mean_out}");
        let c = vec![2.5f32; 20 * 20];
        for m in [Resample::Area, Resample::Bilinear] {
            for &(o, p) in &[(8, 8), (33, 33)] {
                let r = resize(&c, 20, 20, o, p, m);
                assert!(r.iter().all(|v| (v - 2.5).abs() < 1e-5));
            }
        }
    }

    #[test]
    fn dihedral_group() {
        let n = 5;
        let img: Vec<f32> = (0..25).map(|v| v as f32).collect();
        let mut seen = std::collections::HashSet::new();
        for k in 0..8u8 {
            let d = dihedral(&img, n, k);
            let mut s = d.clone();
            s.sort_by(|a, b| a.total_cmp(b));
            assert_eq!(s, img);
            seen.insert(d.iter().map(|v| *v as i32).collect::<Vec<_>>());
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn split_is_deterministic_disjoint_and_seeded() {
        let a = validation_split(1000, 0.1, 0).unwrap();
        assert_eq!(a, validation_split(1000, 0.1, 0).unwrap());
        assert_eq!(a.val_indices.len(), 100);
        assert!(a.val_indices.windows(2).all(|w| w[0] < w[1]));
        let tr = a.train_indices();
        assert_eq!(tr.len(), 900);
        let mut all: Vec<usize> = tr.iter().chain(&a.val_indices).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Spread over the whole stack, not a block at one end.
        assert!(a.val_indices[0] < 100 && *a.val_indices.last().unwrap() > 900);
        let b = validation_split(1000, 0.1, 1).unwrap();
        assert_ne!(a.val_indices, b.val_indices);
        assert!(validation_split(10, 0.0, 0).unwrap().val_indices.is_empty());
        assert_eq!(validation_split(5, 0.01, 0).unwrap().val_indices.len(), 1);
        assert!(validation_split(1, 0.5, 0).is_err());
        assert!(validation_split(10, 1.0, 0).is_err());
        assert!(validation_split(10, f64::NAN, 0).is_err());
    }

    #[test]
    fn shift_zero_moves_and_fills() {
        let (h, w) = (3, 4);
        let img: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        assert_eq!(shift_zero(&img, h, w, 0, 0), img);
        let s = shift_zero(&img, h, w, 1, -1);
        #[rustfmt::skip]
        let want = vec![
            0.0, 0.0, 0.0, 0.0,
            2.0, 3.0, 4.0, 0.0,
            6.0, 7.0, 8.0, 0.0,
        ];
        assert_eq!(s, want);
        assert!(shift_zero(&img, h, w, 3, 0).iter().all(|&v| v == 0.0));
        let sub = ImageStack::new(3, 1, 2, vec![0., 1., 2., 3., 4., 5.]).subset(&[2, 0]);
        assert_eq!((sub.n, sub.data), (2, vec![4., 5., 0., 1.]));
    }

    #[test]
    fn prepare_normalises() {
        let raw = ImageStack::new(2, 10, 12, (0..240).map(|v| v as f32).collect());
        let pp = Preprocess {
            size: 8,
            crop: None,
            resample: Resample::Area,
            norm: NormKind::PerImagePeak,
        };
        let d = prepare(&raw, &pp, Path::new("x.npy")).unwrap();
        assert_eq!((d.images.n, d.images.h, d.images.w), (2, 8, 8));
        for i in 0..2 {
            let m = d.images.image(i).iter().cloned().fold(0.0, f32::max);
            assert!((m - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn noise_rms_normalisation_keeps_zero_and_records_rms() {
        let raw = ImageStack::new(2, 8, 8, (0..128).map(|v| (v % 5) as f32 - 2.0).collect());
        let pp = Preprocess {
            size: 8,
            crop: Some(8),
            resample: Resample::Area,
            norm: NormKind::NoiseRms,
        };
        let d = prepare(&raw, &pp, Path::new("n.npy")).unwrap();
        let ms = raw.data.iter().map(|v| (v * v) as f64).sum::<f64>() / 128.0;
        assert_eq!(d.normalisation, Normalisation::NoiseRms { rms: ms.sqrt() });
        for (a, b) in d.images.data.iter().zip(&raw.data) {
            assert!((*a as f64 - *b as f64 / ms.sqrt()).abs() < 1e-6);
        }
        let zeros = ImageStack::new(1, 8, 8, vec![0.0; 64]);
        assert!(prepare(&zeros, &pp, Path::new("z.npy")).is_err());
    }

    #[test]
    fn fits_cube_reads_as_stack() {
        use fitsio::images::{ImageDescription, ImageType};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cube.fits");
        let data: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
        {
            let desc = ImageDescription {
                data_type: ImageType::Float,
                dimensions: &[2, 3, 4],
            };
            let mut f = fitsio::FitsFile::create(&p)
                .with_custom_primary(&desc)
                .open()
                .unwrap();
            let hdu = f.primary_hdu().unwrap();
            hdu.write_image(&mut f, &data).unwrap();
        }
        let s = read_images(&p).unwrap();
        assert_eq!((s.n, s.h, s.w), (2, 3, 4));
        assert_eq!(s.data, data);
        let e = read_images(&dir.path().join("x.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.txt"), "{e}");
    }
}
