//! The posterior report end to end on a synthetic sky: files, links, PNG validity, orientation
//! of the sky plot and errors.

use std::path::Path;

use interf_image::report::image_plot::{
    render_sky_image_rgb, Colormap, SkyImage, Stretch, SKY_SIZE,
};
use interf_image::report::posterior::{write_report, PosteriorReport, ReportError};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

struct Synth {
    ny: usize,
    nx: usize,
    dirty: Vec<f32>,
    mean: Vec<f32>,
    std: Vec<f32>,
    samples: Vec<f32>,
    resid: Vec<f32>,
    chi2: Vec<f64>,
    uv: Vec<f64>,
    damp: Vec<f32>,
    mamp: Vec<f32>,
}

fn synth() -> Synth {
    let (ny, nx, ns) = (48usize, 64usize, 8usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // An elongated Gaussian blob off the centre, so orientation mistakes would show.
    let blob = |ix: usize, iy: usize| {
        let (x, y) = (ix as f32 - 40.0, iy as f32 - 30.0);
        0.02 * (-(x * x / 30.0 + y * y / 8.0)).exp()
    };
    let mean: Vec<f32> = (0..ny * nx).map(|i| blob(i % nx, i / nx)).collect();
    let std: Vec<f32> = mean.iter().map(|m| 2e-4 + 0.1 * m).collect();
    let mut samples = Vec::with_capacity(ns * ny * nx);
    for _ in 0..ns {
        for (m, s) in mean.iter().zip(&std) {
            let z: f32 = rng.sample(StandardNormal);
            samples.push(m + s * z);
        }
    }
    let dirty: Vec<f32> = mean.iter().map(|m| 20.0 * m).collect();
    let resid: Vec<f32> = (0..ny * nx)
        .map(|_| 1e-3 * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let chi2: Vec<f64> = (0..ns).map(|_| 1.05 + 0.03 * rng.random::<f64>()).collect();
    let nvis = 30_000;
    let uv: Vec<f64> = (0..nvis).map(|_| 2e5 * rng.random::<f64>()).collect();
    let mamp: Vec<f32> = uv.iter().map(|u| (0.5 * (-u / 6e4).exp()) as f32).collect();
    let damp: Vec<f32> = mamp
        .iter()
        .map(|m| (m + 0.02 * rng.sample::<f32, _>(StandardNormal)).abs())
        .collect();
    Synth {
        ny,
        nx,
        dirty,
        mean,
        std,
        samples,
        resid,
        chi2,
        uv,
        damp,
        mamp,
    }
}

fn report(s: &Synth) -> PosteriorReport<'_> {
    PosteriorReport {
        title: "synthetic.ms — posterior (8 samples, CLA)".into(),
        ny: s.ny,
        nx: s.nx,
        pixel_asec: 0.5,
        dirty: &s.dirty,
        mean: &s.mean,
        std: &s.std,
        samples: &s.samples,
        n_samples: 8,
        residual_dirty: &s.resid,
        clean_image: Some(&s.dirty),
        chi2: &s.chi2,
        chi2_mean: 1.02,
        chi2_clean: Some(1.5),
        beam_significance: None,
        uv_dist: &s.uv,
        data_amp: &s.damp,
        model_amp: &s.mamp,
        summary: vec![
            ("time".into(), "12.3 s".into()),
            ("total flux".into(), "0.51 Jy".into()),
            (
                "options".into(),
                "--size 64 --scale 0.5asec <seed=1>".into(),
            ),
        ],
    }
}

/// Width and height from a PNG's IHDR, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() > 33, "{} too short", path.display());
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR");
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

fn linked_srcs(html: &str) -> Vec<String> {
    html.split("src=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

#[test]
fn report_writes_html_and_every_linked_png() {
    let s = synth();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("synthetic");
    let html_path = write_report(prefix.to_str().unwrap(), &report(&s)).unwrap();
    assert_eq!(html_path, dir.path().join("synthetic-report.html"));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("synthetic.ms — posterior"));
    assert!(html.contains("&lt;seed=1&gt;"), "summary is escaped");
    assert!(html.contains("How to read this"));
    assert!(!html.contains("http") && !html.contains("<script"));

    let srcs = linked_srcs(&html);
    for what in [
        "dirty",
        "mean",
        "clean",
        "std",
        "significance",
        "sample1",
        "sample4",
        "residual",
        "chi2",
        "uvamp",
    ] {
        let want = format!("synthetic-report-{what}.png");
        assert!(srcs.contains(&want), "{want} not linked in {srcs:?}");
    }
    assert!(
        !srcs.iter().any(|s| s.contains("sample5")),
        "only four samples"
    );
    for src in &srcs {
        assert!(!src.contains('/'), "links are relative to the page: {src}");
        let (w, h) = png_size(&dir.path().join(src));
        assert!(
            (300..=800).contains(&w) && (300..=800).contains(&h),
            "{src}: {w}×{h}"
        );
    }
    // Nothing temporary left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
    assert_eq!(names.len(), srcs.len() + 1);

    // To look at the figures: REPORT_DEMO_DIR=/some/dir cargo test --test report_posterior
    if let Ok(d) = std::env::var("REPORT_DEMO_DIR") {
        let p = Path::new(&d).join("synthetic");
        write_report(p.to_str().unwrap(), &report(&s)).unwrap();
    }
}

#[test]
fn report_without_clean_and_with_few_samples() {
    let s = synth();
    let dir = tempfile::tempdir().unwrap();
    let mut r = report(&s);
    r.clean_image = None;
    r.n_samples = 2;
    r.chi2 = &s.chi2[..2];
    let html =
        std::fs::read_to_string(write_report(dir.path().join("x").to_str().unwrap(), &r).unwrap())
            .unwrap();
    let srcs = linked_srcs(&html);
    assert!(srcs.contains(&"x-report-sample2.png".to_string()));
    assert!(!srcs
        .iter()
        .any(|s| s.contains("sample3") || s.contains("clean")));
    for src in &srcs {
        png_size(&dir.path().join(src));
    }
}

#[test]
fn sky_plot_puts_pixel_ix_max_iy_0_bottom_right() {
    let (ny, nx) = (32usize, 40usize);
    let mut d = vec![0f32; ny * nx];
    d[nx - 1] = 1.0; // ix = nx − 1 (most negative ΔRA: west, right), iy = 0 (south, bottom)
    let img = SkyImage {
        data: &d,
        ny,
        nx,
        pixel_asec: 1.0,
        title: "delta",
        unit: "Jy/pixel",
        cmap: Colormap::Inferno,
        range: None,
        contours: &[],
        stretch: Stretch::Linear,
    };
    let (w, _) = SKY_SIZE;
    let (buf, a) = render_sky_image_rgb(&img, SKY_SIZE).unwrap();
    assert!(a.w > 100 && a.h > 100);
    // Square sky pixels.
    let (ppx, ppy) = (a.w as f64 / nx as f64, a.h as f64 / ny as f64);
    assert!((ppx - ppy).abs() < 0.2, "{ppx} vs {ppy}");
    let (mut best, mut at) = (0u32, (0i32, 0i32));
    for y in a.y..a.y + a.h as i32 {
        for x in a.x..a.x + a.w as i32 {
            let p = ((y as u32 * w + x as u32) * 3) as usize;
            let v = buf[p] as u32 + buf[p + 1] as u32 + buf[p + 2] as u32;
            if v > best {
                (best, at) = (v, (x, y));
            }
        }
    }
    let (fx, fy) = (
        (at.0 - a.x) as f64 / a.w as f64,
        (at.1 - a.y) as f64 / a.h as f64,
    );
    assert!(
        fx > 0.5 && fy > 0.5,
        "brightest at {fx:.2}, {fy:.2} of the image area"
    );
    // And it is exactly the last column and bottom row of the raster.
    assert!(
        fx > 1.0 - 1.5 / nx as f64 && fy > 1.0 - 1.5 / ny as f64,
        "{fx} {fy}"
    );
}

#[test]
fn bad_output_dir_is_a_clear_error() {
    let s = synth();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("no/such/dir/x");
    let e = write_report(prefix.to_str().unwrap(), &report(&s)).unwrap_err();
    assert!(matches!(e, ReportError::NoDir { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("no/such/dir") && msg.contains("does not exist"),
        "{msg}"
    );

    // A file where the directory should be.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = write_report(file.join("x").to_str().unwrap(), &report(&s)).unwrap_err();
    assert!(e.to_string().contains("plain"), "{e}");
}

#[test]
fn mismatched_inputs_are_rejected() {
    let s = synth();
    let dir = tempfile::tempdir().unwrap();
    let mut r = report(&s);
    r.std = &s.std[1..];
    let e = write_report(dir.path().join("x").to_str().unwrap(), &r).unwrap_err();
    assert!(e.to_string().contains("std has"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
