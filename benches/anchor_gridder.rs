//! Anchor benchmark against ducc0 (see `benches/anchor_ducc0.py`, same data and settings):
//! times `ms2dirty` and `dirty2ms` (median of 3) on a real or simulated data set.
//!
//! Data: `ANCHOR_MS` (a Measurement Set, read through `ms_io`) or `ANCHOR_NPY` (a directory with
//! `uvw.npy`, `freq.npy`, `vis.npy`, `weight.npy`, as `anchor_ducc0.py --make` writes).
//! Settings: `ANCHOR_EPS` (1e-6), `ANCHOR_SIZE` (1024), `ANCHOR_SCALE_ASEC` (default 1/(3 u_max)),
//! `RAYON_NUM_THREADS`; `ANCHOR_SAVE=DIR` writes our dirty image to `DIR/ours_dirty.npy`.
//!
//! Prints `ours_ms2dirty_s <s>` and `ours_dirty2ms_s <s>`.

use interf_image::operator::{dirty2ms, ms2dirty, ImageGeometry, NufftOptions, WMode};
use num_complex::Complex;
use std::error::Error;
use std::path::Path;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn Error>>;

struct Data {
    uvw: Vec<[f64; 3]>,
    freq: Vec<f64>,
    vis: Vec<Complex<f32>>,
    weight: Vec<f32>,
}

/// A minimal .npy reader: little-endian f8/f4/c8, C order.
fn read_npy(path: &Path) -> Res<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(format!("{}: not a .npy file", path.display()).into());
    }
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes(bytes[8..12].try_into()?) as usize, 12)
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen])?;
    let field = |key: &str| -> Res<&str> {
        let i = header
            .find(key)
            .ok_or_else(|| format!("{}: no {key} in header", path.display()))?;
        Ok(header[i + key.len()..].trim_start_matches([':', ' ', '\'']))
    };
    let descr = field("'descr'")?;
    let descr = descr[..descr.find('\'').unwrap_or(0)].to_string();
    if field("'fortran_order'")?.starts_with("True") {
        return Err(format!("{}: Fortran order is not supported", path.display()).into());
    }
    let shape_s = field("'shape'")?;
    let shape_s = &shape_s
        [shape_s.find('(').ok_or("bad shape")? + 1..shape_s.find(')').ok_or("bad shape")?];
    let shape = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<usize>)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((descr, shape, bytes[start + hlen..].to_vec()))
}

fn f64s(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn load_npy(dir: &Path) -> Res<Data> {
    let (d, s, b) = read_npy(&dir.join("uvw.npy"))?;
    if d != "<f8" || s.len() != 2 || s[1] != 3 {
        return Err(format!("uvw.npy: want <f8 (n, 3), got {d} {s:?}").into());
    }
    let uvw = f64s(&b)
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    let (d, _, b) = read_npy(&dir.join("freq.npy"))?;
    if d != "<f8" {
        return Err(format!("freq.npy: want <f8, got {d}").into());
    }
    let freq = f64s(&b);
    let (d, _, b) = read_npy(&dir.join("vis.npy"))?;
    if d != "<c8" {
        return Err(format!("vis.npy: want <c8, got {d}").into());
    }
    let vis = f32s(&b)
        .chunks_exact(2)
        .map(|c| Complex::new(c[0], c[1]))
        .collect();
    let (d, _, b) = read_npy(&dir.join("weight.npy"))?;
    if d != "<f4" {
        return Err(format!("weight.npy: want <f4, got {d}").into());
    }
    Ok(Data {
        uvw,
        freq,
        vis,
        weight: f32s(&b),
    })
}

fn load_ms(path: &Path) -> Res<Data> {
    let v = ms_io::MeasurementSet::open(path)?.read(&ms_io::Selection::default())?;
    let freq = v.chunks.first().ok_or("no data in the MS")?.freq.clone();
    let mut d = Data {
        uvw: Vec::new(),
        freq,
        vis: Vec::new(),
        weight: Vec::new(),
    };
    for c in &v.chunks {
        if c.freq != d.freq {
            eprintln!(
                "skipping a chunk of spectral window {} (other frequencies)",
                c.spw
            );
            continue;
        }
        d.uvw.extend_from_slice(&c.uvw);
        d.vis.extend_from_slice(&c.vis);
        d.weight.extend_from_slice(&c.weight);
    }
    Ok(d)
}

fn write_npy(path: &Path, shape: [usize; 2], data: &[f64]) -> Res<()> {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape[0], shape[1]
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn median3(mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    let mut t = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[1])
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> Res<T> {
    match std::env::var(key) {
        Ok(s) => s
            .parse()
            .map_err(|_| format!("{key}={s} is not valid").into()),
        Err(_) => Ok(default),
    }
}

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let data = if let Ok(p) = std::env::var("ANCHOR_MS") {
        load_ms(Path::new(&p))?
    } else if let Ok(p) = std::env::var("ANCHOR_NPY") {
        load_npy(Path::new(&p))?
    } else {
        eprintln!("anchor_gridder: set ANCHOR_MS or ANCHOR_NPY; nothing to do");
        return Ok(());
    };
    let eps: f64 = env_or("ANCHOR_EPS", 1e-6)?;
    let size: usize = env_or("ANCHOR_SIZE", 1024)?;
    const C: f64 = 299_792_458.0;
    let pix = match std::env::var("ANCHOR_SCALE_ASEC") {
        Ok(s) => s.parse::<f64>()? / 3600.0 * std::f64::consts::PI / 180.0,
        Err(_) => {
            let fmax = data.freq.iter().cloned().fold(0.0, f64::max);
            let umax = data
                .uvw
                .iter()
                .map(|r| r[0].hypot(r[1]))
                .fold(0.0, f64::max)
                * fmax
                / C;
            1.0 / (3.0 * umax)
        }
    };
    let geom = ImageGeometry::new(size, size, pix, pix)?;
    let opts = NufftOptions {
        epsilon: eps,
        w_mode: WMode::Auto,
    };
    let info = interf_image::operator::Gridder::new(geom, &opts, {
        let fmax = data.freq.iter().cloned().fold(0.0, f64::max);
        data.uvw.iter().map(|r| r[2].abs()).fold(0.0, f64::max) * fmax / C
    })?
    .info()
    .clone();
    println!(
        "samples {}, size {size}, pixel {:.4} asec, threads {}; {info}",
        data.vis.len(),
        pix * 180.0 / std::f64::consts::PI * 3600.0,
        rayon::current_num_threads()
    );
    let mut dirty = Vec::new();
    let t_grid = median3(|| {
        dirty = ms2dirty(&geom, &data.uvw, &data.freq, &data.vis, &data.weight, &opts)?;
        Ok(())
    })?;
    let peak = dirty.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    let model: Vec<f64> = dirty.iter().map(|&x| x / peak).collect();
    let t_degrid = median3(|| {
        let v = dirty2ms(&geom, &data.uvw, &data.freq, &model, &opts)?;
        std::hint::black_box(v);
        Ok(())
    })?;
    println!("ours_ms2dirty_s {t_grid:.4}");
    println!("ours_dirty2ms_s {t_degrid:.4}");
    if let Ok(dir) = std::env::var("ANCHOR_SAVE") {
        std::fs::create_dir_all(&dir)?;
        write_npy(
            &Path::new(&dir).join("ours_dirty.npy"),
            [size, size],
            &dirty,
        )?;
    }
    Ok(())
}
