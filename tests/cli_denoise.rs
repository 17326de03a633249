//! `interf-image denoise` end to end on the real HST COSMOS cutout (scarlet) with the built-in
//! prior (few samples and steps), and its errors on bad inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use interf_image::io::{read_image, write_image, SkyHeader};

fn hst(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hst")
        .join(name)
}

fn denoise(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .arg("denoise")
        .args(args)
        .output()
        .unwrap()
}

fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn cosmos_cutout_products_and_residuals() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("cosmos");
    let image = hst("cosmos_cut_hst.fits");
    let out = denoise(&[
        "--image",
        image.to_str().unwrap(),
        "--psf",
        hst("cosmos_psf_hst.fits").to_str().unwrap(),
        "--samples",
        "2",
        "--batch",
        "2",
        "--steps",
        "60",
        "--seed",
        "3",
        "--name",
        name.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [
        "samples",
        "mean",
        "std",
        "data",
        "prediction",
        "residual",
        "residual-sigma",
    ] {
        assert!(tmp.path().join(format!("cosmos-{s}.fits")).is_file(), "{s}");
    }
    let html = std::fs::read_to_string(tmp.path().join("cosmos-report.html")).unwrap();
    for png in [
        "data",
        "mean",
        "std",
        "significance",
        "sample1",
        "sample2",
        "residual-sigma",
        "residual-hist",
    ] {
        let f = format!("cosmos-report-{png}.png");
        assert!(tmp.path().join(&f).is_file(), "{f}");
        assert!(html.contains(&f), "{f} not linked");
    }

    let samples = read_image(&tmp.path().join("cosmos-samples.fits")).unwrap();
    assert_eq!(samples.shape, vec![1, 2, 64, 64]);

    // The data product is the input's pixels at the recorded cutout offset.
    let input = read_image(&image).unwrap();
    let (iny, inx, pix) = input.plane();
    assert_eq!((iny, inx), (250, 250));
    let data = read_image(&tmp.path().join("cosmos-data.fits")).unwrap();
    let (dy, dx, d) = data.plane();
    assert_eq!((dy, dx), (56, 56));
    let (y0, x0) = (
        data.get_i64("CUTY0").unwrap() as usize,
        data.get_i64("CUTX0").unwrap() as usize,
    );
    for (wy, wx) in [(0, 0), (10, 33), (55, 55)] {
        assert_eq!(d[wy * dx + wx], pix[(y0 + wy) * inx + x0 + wx]);
    }
    // WCS from the input's PC matrix: 8.333e-6 deg pixels; the reference pixel (28, 28) of the
    // cutout at the input's TAN position (CRPIX 24454.5, 19513; CRVAL 150.1163213, 2.200973097).
    assert!((data.get_f64("CDELT2").unwrap() - 8.333333e-6).abs() < 1e-11);
    assert!((data.get_f64("CDELT1").unwrap() + 8.333333e-6).abs() < 1e-11);
    let (xi, eta) = (
        -8.333333e-6 * ((x0 + 28) as f64 + 1.0 - 24454.5),
        8.333333e-6 * ((y0 + 28) as f64 + 1.0 - 19513.0),
    );
    // Gnomonic projection as a rotation: the tangent-plane point (ξ, η, 1), normalised, in the
    // frame whose z axis points at the tangent point, east along x, north along y.
    let (a0, d0) = (150.1163213f64.to_radians(), 2.200973097f64.to_radians());
    let (xi, eta) = (xi.to_radians(), eta.to_radians());
    let r = (1.0 + xi * xi + eta * eta).sqrt();
    let (u, v, w) = (xi / r, eta / r, 1.0 / r);
    let east = [-a0.sin(), a0.cos(), 0.0];
    let north = [-d0.sin() * a0.cos(), -d0.sin() * a0.sin(), d0.cos()];
    let centre = [d0.cos() * a0.cos(), d0.cos() * a0.sin(), d0.sin()];
    let p: Vec<f64> = (0..3)
        .map(|i| u * east[i] + v * north[i] + w * centre[i])
        .collect();
    let ra = p[1].atan2(p[0]).to_degrees().rem_euclid(360.0);
    let dec = p[2].asin().to_degrees();
    // 1e-8° = 0.04 mas, a thousandth of a pixel.
    assert!((data.get_f64("CRVAL1").unwrap() - ra).abs() < 1e-8);
    assert!((data.get_f64("CRVAL2").unwrap() - dec).abs() < 1e-8);

    // residual/σ: finite, centred, of roughly unit spread (few steps: a loose bound).
    let rs = read_image(&tmp.path().join("cosmos-residual-sigma.fits")).unwrap();
    let (_, _, r) = rs.plane();
    let n = r.len() as f64;
    let mean = r.iter().sum::<f64>() / n;
    let std = (r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(r.iter().all(|v| v.is_finite()));
    assert!(mean.abs() < 0.5, "mean residual/σ {mean}");
    assert!((0.7..1.6).contains(&std), "std residual/σ {std}");
    // The residual is data − prediction, pixel by pixel.
    let pred = read_image(&tmp.path().join("cosmos-prediction.fits")).unwrap();
    let res = read_image(&tmp.path().join("cosmos-residual.fits")).unwrap();
    let (_, _, p) = pred.plane();
    let (_, _, q) = res.plane();
    for k in [0, 1000, 3000] {
        assert!((d[k] - p[k] - q[k]).abs() < 1e-3 * (1.0 + d[k].abs()));
    }
}

fn write_plain(path: &Path, ny: usize, nx: usize, v: &[f32]) {
    let h = SkyHeader {
        ra_deg: 150.0,
        dec_deg: 2.0,
        cell_x_deg: 1e-5,
        cell_y_deg: 1e-5,
        freq_hz: 1.0,
        bandwidth_hz: 1.0,
        ..Default::default()
    };
    write_image(path, v, ny, nx, &h).unwrap();
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let image = hst("cosmos_cut_hst.fits");
    let psf = hst("cosmos_psf_hst.fits");
    let zero_psf = dir.join("zero_psf.fits");
    write_plain(&zero_psf, 5, 5, &[0.0; 25]);
    let nan_image = dir.join("nan.fits");
    write_plain(&nan_image, 40, 40, &[f32::NAN; 1600]);
    let missing = dir.join("no_such_psf.fits");
    let name = dir.join("out");
    let n = name.to_str().unwrap();
    let cases: [(&Path, &Path, &str); 3] = [
        (&image, &missing, "no such file"),
        (&image, &zero_psf, "sum"),
        (&nan_image, &psf, "no finite pixel"),
    ];
    for (img, p, want) in cases {
        let out = denoise(&[
            "--image",
            img.to_str().unwrap(),
            "--psf",
            p.to_str().unwrap(),
            "--steps",
            "2",
            "--samples",
            "1",
            "--name",
            n,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{img:?} {p:?} should fail");
        assert!(err.contains(want), "expected '{want}' in: {err}");
        // The message names the offending file.
        let culprit = if want == "no finite pixel" { img } else { p };
        assert!(
            err.contains(culprit.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        assert!(files_with_prefix(dir, "out").is_empty());
    }
}

#[test]
fn binned_field_with_dps() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("b2");
    let image = hst("cosmos_cut_hst.fits");
    let out = denoise(&[
        "--image",
        image.to_str().unwrap(),
        "--psf",
        hst("cosmos_psf_hst.fits").to_str().unwrap(),
        "--bin",
        "2",
        "--method",
        "dps",
        "--samples",
        "1",
        "--steps",
        "4",
        "--name",
        name.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let input = read_image(&image).unwrap();
    let (_, inx, pix) = input.plane();
    let data = read_image(&tmp.path().join("b2-data.fits")).unwrap();
    let (_, dx, d) = data.plane();
    assert_eq!(data.get_i64("BINNING"), Some(2));
    assert!((data.get_f64("CDELT2").unwrap() - 2.0 * 8.333333e-6).abs() < 1e-11);
    let (y0, x0) = (
        data.get_i64("CUTY0").unwrap() as usize,
        data.get_i64("CUTX0").unwrap() as usize,
    );
    // A binned pixel is the sum of its 2×2 input pixels.
    for (wy, wx) in [(0, 0), (17, 40), (55, 55)] {
        let (iy, ix) = (2 * (y0 + wy), 2 * (x0 + wx));
        let want: f64 = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(a, b)| pix[(iy + a) * inx + ix + b])
            .sum();
        assert!((d[wy * dx + wx] - want).abs() < 1e-4 * (1.0 + want.abs()));
    }
    let mean = read_image(&tmp.path().join("b2-mean.fits")).unwrap();
    assert!(mean.plane().2.iter().all(|v| v.is_finite()));
}
