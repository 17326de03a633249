//! Every command takes `VIS.uvfits` as it takes `VIS.ms`: `dirty` on the UVFITS copy of
//! TDEM0003 equals `dirty` on its MS copy pixel by pixel, the EHT M87 file images, and broken
//! UVFITS files fail with one clear message naming the file, leaving it byte-identical.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use interf_image::io::{read_image, write_image, SkyHeader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

fn eht() -> PathBuf {
    data("eht_m87_2017/SR1_M87_2017_096_lo_hops_netcal_StokesI.uvfits")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `dirty` of `vis` into `dir/name`; returns the dirty image and PSF planes.
fn dirty(vis: &Path, dir: &Path, name: &str, extra: &[&str]) -> (Vec<f64>, Vec<f64>) {
    let out = dir.join(name);
    let mut args = vec![
        "dirty",
        vis.to_str().unwrap(),
        "--name",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    ok(&args);
    let d = read_image(&dir.join(format!("{name}-dirty.fits"))).unwrap();
    let p = read_image(&dir.join(format!("{name}-psf.fits"))).unwrap();
    (d.plane().2, p.plane().2)
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let peak = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    let d = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    d / peak
}

#[test]
fn dirty_uvfits_equals_dirty_ms() {
    let tmp = tempfile::tempdir().unwrap();
    let uv = data("vla_tdem0003.uvfits");
    let before = std::fs::read(&uv).unwrap();
    for (tag, weight) in [
        ("natural", &["natural"][..]),
        ("briggs", &["briggs", "0"][..]),
    ] {
        let mut extra = vec!["--size", "128", "--scale", "0.4asec", "--weight"];
        extra.extend_from_slice(weight);
        let (dm, pm) = dirty(
            &data("vla_tdem0003.ms"),
            tmp.path(),
            &format!("ms_{tag}"),
            &extra,
        );
        let (du, pu) = dirty(&uv, tmp.path(), &format!("uv_{tag}"), &extra);
        let (rd, rp) = (rel_diff(&du, &dm), rel_diff(&pu, &pm));
        println!("TDEM0003 {tag}: dirty UVFITS vs MS max relative difference {rd:e}, PSF {rp:e}");
        assert!(rd <= 1e-6 && rp <= 1e-6, "{tag}: dirty {rd}, psf {rp}");
    }
    assert_eq!(
        before,
        std::fs::read(&uv).unwrap(),
        "the UVFITS file changed"
    );
}

#[test]
fn dirty_eht_m87() {
    let tmp = tempfile::tempdir().unwrap();
    let before = std::fs::read(eht()).unwrap();
    // 64 pixels of 2 µas: the 128 µas field the EHT images.
    let (d, p) = dirty(
        &eht(),
        tmp.path(),
        "m87",
        &[
            "--size",
            "64",
            "--scale",
            "0.002masec",
            "--weight",
            "natural",
        ],
    );
    assert!(d.iter().chain(&p).all(|x| x.is_finite()));
    let peak = p.iter().fold(f64::MIN, |m, &x| m.max(x));
    assert!((peak - 1.0).abs() < 1e-6, "PSF peak {peak}");
    assert!(d.iter().any(|&x| x != 0.0));
    let img = read_image(&tmp.path().join("m87-dirty.fits")).unwrap();
    assert_eq!(img.get_str("OBJECT"), Some("M87"));
    let f = img
        .get_f64("CRVAL3")
        .or_else(|| img.get_f64("CRVAL4"))
        .unwrap();
    assert!((f - 227.07e9).abs() < 1e8 || f == 1.0, "{f}");
    assert_eq!(
        before,
        std::fs::read(eht()).unwrap(),
        "the UVFITS file changed"
    );
}

/// A command that must fail: non-zero exit, a message naming `path`, no panic, the input
/// byte-identical, nothing written in `out_dir`.
fn fails(args: &[&str], path: &Path, out_dir: &Path, says: &str) {
    let before = std::fs::read(path).unwrap();
    let listed = |d: &Path| std::fs::read_dir(d).unwrap().count();
    let n_before = listed(out_dir);
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.to_lowercase().contains(says),
        "{args:?}: the message should name {} and say '{says}': {stderr}",
        path.display()
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(
        before,
        std::fs::read(path).unwrap(),
        "{} changed",
        path.display()
    );
    assert_eq!(n_before, listed(out_dir), "{args:?} wrote something");
}

#[test]
fn bad_uvfits_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("in");
    std::fs::create_dir(&d).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let name = out.join("x");
    let name = name.to_str().unwrap();
    let bytes = std::fs::read(data("vla_tdem0003.uvfits")).unwrap();

    let cut = d.join("cut.uvfits");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let text = d.join("notes.uvfits");
    std::fs::write(&text, b"SIMPLY not a FITS file\n").unwrap();
    let mut img = String::new();
    for c in [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        "NAXIS1  =                    2",
        "NAXIS2  =                    2",
        "END",
    ] {
        img.push_str(&format!("{c:<80}"));
    }
    let mut img = img.into_bytes();
    img.resize(2 * 2880, 0);
    let image = d.join("image.fits");
    std::fs::write(&image, &img).unwrap();

    for (file, says) in [
        (&cut, "truncated"),
        (&text, "neither a measurement set"),
        (&image, "not uvfits"),
    ] {
        let f = file.to_str().unwrap();
        for cmd in ["dirty", "clean"] {
            fails(&[cmd, f, "--name", name], file, &out, says);
        }
        fails(&["image", f, "--name", name], file, &out, says);
    }

    // simulate writes an MS copy of --like: a UVFITS template is refused up front.
    let truth = tmp.path().join("truth.fits");
    let mut img = vec![0.0f32; 32 * 32];
    img[16 * 32 + 16] = 1.0;
    let h = SkyHeader {
        ra_deg: 152.0,
        dec_deg: 7.5,
        cell_x_deg: 1.0 / 3600.0,
        cell_y_deg: 1.0 / 3600.0,
        freq_hz: 36.3e9,
        bandwidth_hz: 1e6,
        bunit: "JY/PIXEL".into(),
        ..Default::default()
    };
    write_image(&truth, &img, 32, 32, &h).unwrap();
    let uv = data("vla_tdem0003.uvfits");
    fails(
        &[
            "simulate",
            "--image",
            truth.to_str().unwrap(),
            "--like",
            uv.to_str().unwrap(),
            "--noise",
            "0.01",
            "--out",
            out.join("sim.ms").to_str().unwrap(),
        ],
        &uv,
        &out,
        "needs a measurement set",
    );
}
