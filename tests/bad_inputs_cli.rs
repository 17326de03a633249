//! The regression suite of bad inputs (issue 18), table-driven: for every case the exit code,
//! no panic, a message that names the file or option and the problem, every input
//! byte-identical afterwards, and no leftover file.
//!
//! Inputs are small (the fixtures of tests/data, files written here into a temporary folder)
//! and every case fails before any heavy work, so the whole suite takes seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use num_complex::Complex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ms_3c273() -> PathBuf {
    root().join("tests/data/vla_3c273_xband.ms")
}

fn run_in(cwd: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

/// Every file under each of `paths` (a file or a folder) with its bytes.
fn snapshot(paths: &[&Path]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.exists() {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// What a case must do.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Non-zero exit, nothing written anywhere under the work folder.
    Fail,
    /// Exit 0 with a warning (outputs may be written; inputs still untouched).
    Warn,
}

struct Case {
    name: &'static str,
    /// Run from this folder.
    cwd: PathBuf,
    args: Vec<String>,
    expect: Expect,
    /// Each must appear in stderr (case-insensitive).
    says: Vec<&'static str>,
}

fn case(
    name: &'static str,
    cwd: &Path,
    args: &[&str],
    expect: Expect,
    says: &[&'static str],
) -> Case {
    Case {
        name,
        cwd: cwd.to_path_buf(),
        args: args.iter().map(|s| s.to_string()).collect(),
        expect,
        says: says.to_vec(),
    }
}

/// Runs every case; all problems are collected and reported together. `watched` are the
/// inputs outside `work` that must stay byte-identical; everything under `work` must too,
/// except new outputs of `Warn` cases.
fn run_cases(work: &Path, watched: &[&Path], cases: &[Case]) {
    let mut problems = Vec::new();
    for c in cases {
        let mut all: Vec<&Path> = watched.to_vec();
        all.push(work);
        let before = snapshot(&all);
        let out = run_in(&c.cwd, &c.args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let after = snapshot(&all);
        let code = out.status.code();
        match c.expect {
            Expect::Fail if out.status.success() => problems.push(format!(
                "{}: succeeded, should fail; stderr: {stderr}",
                c.name
            )),
            Expect::Warn if !out.status.success() => {
                problems.push(format!("{}: failed ({code:?}): {stderr}", c.name))
            }
            _ => {}
        }
        if code.is_none() || stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push(format!("{}: panicked or was killed: {stderr}", c.name));
        }
        let lower = stderr.to_lowercase();
        for s in &c.says {
            if !lower.contains(&s.to_lowercase()) {
                problems.push(format!("{}: stderr lacks {s:?}: {stderr}", c.name));
            }
        }
        for (p, bytes) in &before {
            match after.get(p) {
                Some(b) if b == bytes => {}
                Some(_) => problems.push(format!("{}: modified the input {}", c.name, p.display())),
                None => problems.push(format!("{}: removed the input {}", c.name, p.display())),
            }
        }
        if c.expect == Expect::Fail {
            let new: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
            if !new.is_empty() {
                problems.push(format!("{}: left files behind: {new:?}", c.name));
            }
        } else {
            // Outputs of a successful case are not inputs of the next.
            for p in after.keys().filter(|p| !before.contains_key(*p)) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// A minimal FITS file: `shape` in FITS order (NAXIS1 first), f32 big-endian.
fn write_fits(path: &Path, shape: &[usize], data: &[f32], cards: &[(&str, &str)]) {
    let mut h = String::new();
    let mut card = |k: &str, v: &str| h.push_str(&format!("{k:<8}= {v:>20}{:50}", ""));
    card("SIMPLE", "T");
    card("BITPIX", "-32");
    card("NAXIS", &shape.len().to_string());
    for (i, n) in shape.iter().enumerate() {
        card(&format!("NAXIS{}", i + 1), &n.to_string());
    }
    for (k, v) in cards {
        card(k, v);
    }
    h.push_str(&format!("{:<80}", "END"));
    while !h.len().is_multiple_of(2880) {
        h.push(' ');
    }
    let mut bytes = h.into_bytes();
    for v in data {
        bytes.extend(v.to_be_bytes());
    }
    while !bytes.len().is_multiple_of(2880) {
        bytes.push(0);
    }
    std::fs::write(path, bytes).unwrap();
}

/// A float32 .npy stack of shape (n, h, w).
fn write_npy(path: &Path, n: usize, h: usize, w: usize, data: &[f32]) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {h}, {w}), }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in data {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A deterministic pseudo-random image, so the inputs need no RNG crate.
fn noise_image(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 1000) as f32 / 1000.0
        })
        .collect()
}

#[test]
fn outputs_never_replace_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().canonicalize().unwrap();
    let work = d.join("D");
    std::fs::create_dir(&work).unwrap();
    let img = noise_image(32 * 32, 1);
    write_fits(&work.join("d-mean.fits"), &[32, 32], &img, &[]);
    write_fits(&work.join("d-data.fits"), &[32, 32], &img, &[]);
    let mut psf = vec![0.0f32; 9 * 9];
    psf[40] = 1.0;
    write_fits(&work.join("psf.fits"), &[9, 9], &psf, &[]);
    let lens = root().join("tests/data/lensing/dataset_imaging_hst");
    std::fs::copy(lens.join("data.fits"), work.join("l-mean.fits")).unwrap();
    std::fs::copy(lens.join("noise_map.fits"), work.join("noise.fits")).unwrap();
    std::fs::copy(lens.join("tracer.json"), work.join("l-summary.json")).unwrap();
    std::fs::copy(lens.join("tracer.json"), work.join("tracer.json")).unwrap();
    // A trained checkpoint (and so a prior) and training data.
    let ck = work.join("ck");
    copy_dir(&root().join("tests/data/learned_noise_corr16"), &ck);
    let two: Vec<f32> = [noise_image(16 * 16, 2), noise_image(16 * 16, 3)].concat();
    write_npy(&work.join("two.npy"), 2, 16, 16, &two);

    let w = &work;
    let abs_l = format!("{}/l", w.display());
    let ms = ms_3c273();
    let cases = vec![
        case(
            "denoise ./NAME-mean as input",
            w,
            &[
                "denoise",
                "--image",
                "./d-mean.fits",
                "--psf",
                "psf.fits",
                "--name",
                "d",
            ],
            Expect::Fail,
            &["would overwrite", "d-mean.fits"],
        ),
        case(
            "denoise --name ./d",
            w,
            &[
                "denoise",
                "--image",
                "d-data.fits",
                "--psf",
                "psf.fits",
                "--name",
                "./d",
            ],
            Expect::Fail,
            &["would overwrite", "d-data.fits"],
        ),
        case(
            "lens ../D/./ data, absolute --name",
            w,
            &[
                "lens",
                "--data",
                "../D/./l-mean.fits",
                "--noise",
                "noise.fits",
                "--lens",
                "tracer.json",
                "--name",
                &abs_l,
            ],
            Expect::Fail,
            &["would overwrite", "l-mean.fits"],
        ),
        case(
            "lens --lens is NAME-summary.json",
            &d,
            &[
                "lens",
                "--data",
                "D/noise.fits",
                "--noise",
                "D/noise.fits",
                "--lens",
                "D/l-summary.json",
                "--name",
                "D/l",
            ],
            Expect::Fail,
            &["would overwrite", "l-summary.json"],
        ),
        case(
            "prior train into a trained checkpoint",
            w,
            &[
                "prior", "train", "--data", "two.npy", "--size", "16", "--preset", "tiny", "--out",
                "ck", "--steps", "1",
            ],
            Expect::Fail,
            &["ck", "already exists", "--force"],
        ),
        case(
            "noise train into a trained checkpoint",
            w,
            &[
                "noise",
                "train",
                "--noise-cutouts",
                "two.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--out",
                "ck",
                "--steps",
                "1",
            ],
            Expect::Fail,
            &["ck", "already exists"],
        ),
        case(
            "prior sample over the prior's weights",
            w,
            &[
                "prior",
                "sample",
                "--prior",
                "ck",
                "--out",
                "ck/weights.safetensors",
                "--n",
                "1",
                "--steps",
                "2",
                "--quiet",
            ],
            Expect::Fail,
            &["weights.safetensors", "would overwrite"],
        ),
        case(
            "prior sample into the prior's folder",
            w,
            &[
                "prior",
                "sample",
                "--prior",
                "ck",
                "--out",
                "ck/samples.fits",
                "--n",
                "1",
                "--steps",
                "2",
                "--quiet",
            ],
            Expect::Fail,
            &["inside the input"],
        ),
        case(
            "prior sample into a missing folder",
            w,
            &[
                "prior",
                "sample",
                "--prior",
                "ck",
                "--out",
                "missing/s.fits",
                "--n",
                "1",
                "--steps",
                "2",
                "--quiet",
            ],
            Expect::Fail,
            &["missing", "does not exist"],
        ),
        case(
            "dirty --name inside the MS",
            w,
            &["dirty", s(&ms), "--name", &format!("{}/x", ms.display())],
            Expect::Fail,
            &["inside the input"],
        ),
        case(
            "dirty --name empty",
            w,
            &["dirty", s(&ms), "--name", ""],
            Expect::Fail,
            &["--name"],
        ),
    ];
    run_cases(&work, &[&ms], &cases);
}

#[test]
fn bad_options_and_data_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().canonicalize().unwrap();
    let w = &w;
    let ms = ms_3c273();
    let alma = root().join("tests/data/alma_x5707_1bl.ms");
    let img = noise_image(32 * 32, 1);
    write_fits(&w.join("img.fits"), &[32, 32], &img, &[]);
    write_fits(&w.join("oned.fits"), &[32], &img[..32], &[]);
    write_fits(
        &w.join("cube.fits"),
        &[32, 32, 2],
        &[img.clone(), img.clone()].concat(),
        &[],
    );
    let mut psf = vec![0.0f32; 9 * 9];
    psf[40] = 1.0;
    write_fits(&w.join("psf.fits"), &[9, 9], &psf, &[]);
    write_fits(&w.join("zero_psf.fits"), &[9, 9], &[0.0; 81], &[]);
    let lens = root().join("tests/data/lensing/dataset_imaging_hst");
    for f in ["data.fits", "noise_map.fits", "tracer.json"] {
        std::fs::copy(lens.join(f), w.join(f)).unwrap();
    }
    write_npy(&w.join("one.npy"), 1, 16, 16, &noise_image(256, 4));
    write_npy(&w.join("none.npy"), 0, 16, 16, &[]);
    write_npy(&w.join("zeros.npy"), 4, 16, 16, &[0.0; 4 * 256]);
    let two: Vec<f32> = [noise_image(256, 2), noise_image(256, 3)].concat();
    write_npy(&w.join("two.npy"), 2, 16, 16, &two);
    // A checkpoint whose config says sigma_max −1: sampling it would give NaN everywhere.
    let bad = w.join("bad_prior");
    copy_dir(&root().join("tests/data/learned_noise_corr16"), &bad);
    let cfg = std::fs::read_to_string(bad.join("config.json")).unwrap();
    std::fs::write(
        bad.join("config.json"),
        cfg.replace("\"sigma_max\": 10.0", "\"sigma_max\": -1.0"),
    )
    .unwrap();
    // Measurement Sets broken in one way each, from copies of the 3C 273 fixture.
    let n_rows = ms_io::MeasurementSet::open(&ms).unwrap().info().n_rows as u64;
    let all: Vec<u64> = (0..n_rows).collect();
    let broken = |name: &str, f: &dyn Fn(&mut ms_io::MsWriter)| {
        let p = w.join(name);
        ms_io::create_like(&ms, &p).unwrap();
        let mut wr = ms_io::MsWriter::open(&p).unwrap();
        f(&mut wr);
        wr.finish().unwrap();
        p
    };
    let ant999 = broken("ant999.ms", &|wr| wr.set_antenna1(&[5], 999).unwrap());
    let zero_uvw = broken("zero_uvw.ms", &|wr| wr.zero_uvw(&all).unwrap());
    let autos = broken("autos.ms", &|wr| {
        wr.make_autocorrelations(&all, Complex::new(1.0, 0.0))
            .unwrap()
    });

    let o = |n: &str| s(&w.join(n)).to_string();
    let out = o("out");
    let ms = s(&ms).to_string();
    let cases = vec![
        // Parse-time checks.
        case(
            "dirty --padding 1e6",
            w,
            &["dirty", &ms, "--padding", "1e6", "--name", &out],
            Expect::Fail,
            &["--padding"],
        ),
        case(
            "dirty rank filter -3",
            w,
            &[
                "dirty",
                &ms,
                "--weighting-rank-filter",
                "-3",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["--weighting-rank-filter"],
        ),
        case(
            "dirty rank filter size 0",
            w,
            &[
                "dirty",
                &ms,
                "--weighting-rank-filter-size",
                "0",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["--weighting-rank-filter-size", "at least 1"],
        ),
        case(
            "prior train --batch 0",
            w,
            &[
                "prior",
                "train",
                "--data",
                "two.npy",
                "--out",
                &o("p"),
                "--batch",
                "0",
            ],
            Expect::Fail,
            &["--batch", "at least 1"],
        ),
        case(
            "lens --supersample 0",
            w,
            &[
                "lens",
                "--data",
                "data.fits",
                "--noise",
                "noise_map.fits",
                "--lens",
                "tracer.json",
                "--supersample",
                "0",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["--supersample"],
        ),
        case(
            "validate --bootstrap 0",
            w,
            &[
                "validate",
                "--like",
                &ms,
                "--from-prior",
                "--noise",
                "1",
                "--bootstrap",
                "0",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["--bootstrap"],
        ),
        // Memory and sizes.
        case(
            "image --batch 100000",
            w,
            &[
                "image",
                &ms,
                "--samples",
                "100000",
                "--batch",
                "100000",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["memory", "--batch", "--max-memory"],
        ),
        case(
            "validate --batch 100000",
            w,
            &[
                "validate",
                "--like",
                &ms,
                "--from-prior",
                "--noise",
                "1",
                "--samples",
                "100000",
                "--batch",
                "100000",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["memory", "--batch", "--max-memory"],
        ),
        case(
            "dirty --size 100000",
            w,
            &["dirty", &ms, "--size", "100000", "--name", &out],
            Expect::Fail,
            &["memory", "--max-memory"],
        ),
        case(
            "lens --image-size 1000000",
            w,
            &[
                "lens",
                "--data",
                "data.fits",
                "--noise",
                "noise_map.fits",
                "--lens",
                "tracer.json",
                "--uv",
                "data.fits",
                "--image-size",
                "1000000",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["memory"],
        ),
        case(
            "clean pixels far below the resolution",
            w,
            &[
                "clean", &ms, "--size", "128", "--scale", "0.3masec", "--name", &out,
            ],
            Expect::Fail,
            &["resolution", "--scale"],
        ),
        case(
            "dirty --scale 1e-30asec",
            w,
            &["dirty", &ms, "--scale", "1e-30asec", "--name", &out],
            Expect::Fail,
            &["resolution", "--scale"],
        ),
        // Broken Measurement Sets.
        case(
            "ANTENNA1 = 999",
            w,
            &["dirty", s(&ant999), "--name", &out],
            Expect::Fail,
            &["ant999.ms", "ANTENNA1", "999"],
        ),
        case(
            "all-zero UVW",
            w,
            &["dirty", s(&zero_uvw), "--name", &out],
            Expect::Fail,
            &["zero_uvw.ms", "UVW is zero"],
        ),
        case(
            "all-zero UVW, clean",
            w,
            &["clean", s(&zero_uvw), "--name", &out],
            Expect::Fail,
            &["zero_uvw.ms", "UVW is zero"],
        ),
        case(
            "only autocorrelations",
            w,
            &["dirty", s(&autos), "--name", &out],
            Expect::Fail,
            &["autos.ms", "autocorrelation"],
        ),
        case(
            "ALMA field 0 holds no data",
            w,
            &[
                "dirty",
                s(&alma),
                "--field",
                "0",
                "--size",
                "64",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["field 0", "fields holding data: 2"],
        ),
        // Images of the wrong shape.
        case(
            "denoise 1-D image",
            w,
            &[
                "denoise",
                "--image",
                "oned.fits",
                "--psf",
                "psf.fits",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["oned.fits", "1-D"],
        ),
        case(
            "denoise cube PSF",
            w,
            &[
                "denoise",
                "--image",
                "img.fits",
                "--psf",
                "cube.fits",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["cube.fits", "2 planes"],
        ),
        case(
            "lens cube data",
            w,
            &[
                "lens",
                "--data",
                "cube.fits",
                "--noise",
                "cube.fits",
                "--lens",
                "tracer.json",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["cube.fits", "planes"],
        ),
        case(
            "lens zero PSF",
            w,
            &[
                "lens",
                "--data",
                "data.fits",
                "--noise",
                "noise_map.fits",
                "--psf",
                "zero_psf.fits",
                "--lens",
                "tracer.json",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["zero_psf.fits", "zero"],
        ),
        // Priors: training sets without spread, impossible SDEs, a corrupt checkpoint.
        case(
            "prior train on one image",
            w,
            &[
                "prior",
                "train",
                "--data",
                "one.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--val-fraction",
                "0",
                "--out",
                &o("p"),
                "--quiet",
            ],
            Expect::Fail,
            &["one.npy", "two different images"],
        ),
        case(
            "prior train on one image with a validation split",
            w,
            &[
                "prior",
                "train",
                "--data",
                "one.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--out",
                &o("p"),
                "--quiet",
            ],
            Expect::Fail,
            &["one.npy", "leaves", "none to train on"],
        ),
        case(
            "prior train on no image",
            w,
            &[
                "prior",
                "train",
                "--data",
                "none.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--out",
                &o("p"),
                "--quiet",
            ],
            Expect::Fail,
            &["none.npy"],
        ),
        case(
            "prior train on zero images",
            w,
            &[
                "prior",
                "train",
                "--data",
                "zeros.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--out",
                &o("p"),
                "--quiet",
            ],
            Expect::Fail,
            &["zeros.npy", "zero"],
        ),
        case(
            "prior train --sigma-max 0",
            w,
            &[
                "prior",
                "train",
                "--data",
                "two.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--sigma-max",
                "0",
                "--out",
                &o("p"),
                "--quiet",
            ],
            Expect::Fail,
            &["--sigma-max", "sigma_min < sigma_max"],
        ),
        case(
            "prior train --sigma-min 5 --sigma-max 1",
            w,
            &[
                "prior",
                "train",
                "--data",
                "two.npy",
                "--size",
                "16",
                "--preset",
                "tiny",
                "--sigma-min",
                "5",
                "--sigma-max",
                "1",
                "--out",
                &o("p"),
                "--quiet",
            ],
            Expect::Fail,
            &["--sigma-min", "sigma_max 1"],
        ),
        case(
            "prior with sigma_max -1",
            w,
            &[
                "prior",
                "sample",
                "--prior",
                s(&bad),
                "--out",
                &o("s.fits"),
                "--n",
                "1",
                "--steps",
                "2",
                "--quiet",
            ],
            Expect::Fail,
            &["config.json", "sigma_max -1"],
        ),
        // Results that do not fit: refused unless --allow-poor-fit.
        case(
            "image --steps 1",
            w,
            &[
                "image",
                &ms,
                "--samples",
                "2",
                "--steps",
                "1",
                "--batch",
                "2",
                "--name",
                &out,
            ],
            Expect::Fail,
            &[
                "reduced χ²",
                "--steps",
                "--allow-poor-fit",
                "nothing written",
            ],
        ),
        case(
            "validate --steps 1",
            w,
            &[
                "validate",
                "--like",
                &ms,
                "--from-prior",
                "--n",
                "2",
                "--samples",
                "2",
                "--steps",
                "1",
                "--noise",
                "5",
                "--name",
                &out,
            ],
            Expect::Fail,
            &["reduced χ²", "--allow-poor-fit"],
        ),
        case(
            "image --steps 1 --allow-poor-fit",
            w,
            &[
                "image",
                &ms,
                "--samples",
                "2",
                "--steps",
                "1",
                "--batch",
                "2",
                "--name",
                &out,
                "--allow-poor-fit",
            ],
            Expect::Warn,
            &["warning", "reduced χ²"],
        ),
        // Warnings, not errors.
        case(
            "--threads 2000",
            w,
            &[
                "dirty",
                &ms,
                "--size",
                "64",
                "--scale",
                "1asec",
                "--threads",
                "2000",
                "--name",
                &out,
            ],
            Expect::Warn,
            &["--threads 2000", "cores"],
        ),
        case(
            "ALMA default field is the one with data",
            w,
            &["dirty", s(&alma), "--size", "64", "--name", &out],
            Expect::Warn,
            &[],
        ),
    ];
    let watched: Vec<&Path> = vec![Path::new(&ms), &alma];
    run_cases(w, &watched, &cases);
}

/// CLEAN that diverges stops with a warning and the last sane model instead of writing 10²⁷ Jy.
/// The EHT's eight stations, uniformly weighted at 2 µas, diverge after a few hundred
/// iterations (381 in 5 major cycles when this test was written).
#[test]
fn diverging_clean_stops_with_a_warning() {
    let eht = root().join("tests/data/eht_m87_2017/SR1_M87_2017_096_lo_hops_netcal_StokesI.uvfits");
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("m87");
    let before = snapshot(&[&eht]);
    let out = run_in(
        tmp.path(),
        &[
            "clean",
            s(&eht),
            "--size",
            "128",
            "--scale",
            "2uasec",
            "--weight",
            "uniform",
            "--niter",
            "20000",
            "--mgain",
            "0.5",
            "--auto-threshold",
            "0",
            "--threshold",
            "0.0001",
            "--name",
            s(&name),
        ]
        .map(String::from),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("diverged"), "no warning: {stderr}");
    assert!(!stderr.contains("panicked"));
    assert_eq!(before, snapshot(&[&eht]), "the UVFITS file was modified");
    let model = interf_image::io::read_image(&tmp.path().join("m87-model.fits")).unwrap();
    let flux: f64 = model.data.iter().sum();
    let cleaned = model.data.iter().filter(|v| **v != 0.0).count();
    // M87 at 230 GHz is about 1 Jy; the kept model is the last major cycle before the rise.
    assert!(
        cleaned > 0,
        "no model kept: the case no longer diverges late"
    );
    assert!(
        flux.is_finite() && flux.abs() < 10.0,
        "model flux {flux} Jy"
    );
    let restored = interf_image::io::read_image(&tmp.path().join("m87-image.fits")).unwrap();
    assert!(restored.data.iter().all(|v| v.is_finite() && v.abs() < 1e3));
}

/// The row order of lens images is explicit: autolens files (PIXSCAX) are top row first, FITS
/// files bottom row first, and `--rows` says which whatever the header. The same pixels
/// without PIXSCAX, read with `--rows top-down`, give exactly what the autolens file gives.
#[test]
fn lens_row_order_is_explicit() {
    use interf_image::observe::Quiet;
    use interf_image::operator::lens::data::{read_imaging_rows, RowOrder};
    let dir = root().join("tests/data/lensing/dataset_imaging_hst");
    let (data, noise) = (dir.join("data.fits"), dir.join("noise_map.fits"));
    let auto = read_imaging_rows(&data, &noise, None, None, RowOrder::Auto, &Quiet).unwrap();
    let top = read_imaging_rows(&data, &noise, None, None, RowOrder::TopDown, &Quiet).unwrap();
    let fits = read_imaging_rows(&data, &noise, None, None, RowOrder::Fits, &Quiet).unwrap();
    assert_eq!(auto.data, top.data, "PIXSCAX means top row first");
    let (ny, nx) = (fits.grid.ny, fits.grid.nx);
    for y in [0, ny / 3, ny - 1] {
        assert_eq!(
            fits.data[y * nx..(y + 1) * nx],
            top.data[(ny - 1 - y) * nx..(ny - y) * nx]
        );
    }
    // The same pixels in a file without PIXSCAX.
    let tmp = tempfile::tempdir().unwrap();
    let strip = |src: &Path, dst: &Path| {
        let img = interf_image::io::read_image(src).unwrap();
        let (ny, nx, v) = img.plane();
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        write_fits(dst, &[nx, ny], &v, &[]);
    };
    let (d2, n2) = (tmp.path().join("d.fits"), tmp.path().join("n.fits"));
    strip(&data, &d2);
    strip(&noise, &n2);
    let plain = read_imaging_rows(&d2, &n2, None, Some(0.05), RowOrder::TopDown, &Quiet).unwrap();
    assert_eq!(plain.data, auto.data);
    assert_eq!(plain.grid.pixel_scale, auto.grid.pixel_scale);
}
