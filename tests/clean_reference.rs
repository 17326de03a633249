//! Our CLEAN of 3C 273 against WSClean's (`tests/data/reference/3c273_clean-*.fits`, made by
//! `wsclean -weight briggs 0 -size 512 512 -scale 0.5asec -niter 5000 -mgain 0.8
//! -auto-threshold 3 -use-wgridder -no-small-inversion`), and our beam fit on WSClean's own PSF.

use std::path::PathBuf;

use interf_image::imaging::{
    clean, fit_beam, CleanOptions, ImagingOptions, PixelBeam, StopReason, Weighting,
};
use interf_image::io::{read_image, FitsImage};
use interf_image::operator::nufft::NufftOptions;
use interf_image::operator::ImageGeometry;
use ms_io::{MeasurementSet, Selection};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference(name: &str) -> FitsImage {
    let path = root().join("tests/data/reference").join(name);
    read_image(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn asec() -> f64 {
    (1.0f64 / 3600.0).to_radians()
}

/// Root mean square over every pixel: how both residuals are measured.
fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

fn pa_diff_deg(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(180.0);
    d.min(180.0 - d)
}

fn header_beam(img: &FitsImage) -> (f64, f64, f64) {
    (
        img.get_f64("BMAJ").unwrap() * 3600.0,
        img.get_f64("BMIN").unwrap() * 3600.0,
        img.get_f64("BPA").unwrap(),
    )
}

#[test]
fn beam_fit_on_wsclean_psf_matches_its_header() {
    let psf = reference("3c273_clean-psf.fits");
    let (ny, nx, plane) = psf.plane();
    let plane: Vec<f32> = plane.iter().map(|&v| v as f32).collect();
    let (bmaj, bmin, bpa) = header_beam(&psf);
    // The starting width (WSClean's: the theoretical beam 1/max uv, 4.6 pixels here) only sets
    // the first box; the box grows until it holds 8× the fitted major axis.
    let b = fit_beam(&plane, nx, ny, 4.6).unwrap().to_beam(0.5 * asec());
    eprintln!(
        "fit to WSClean's PSF: {:.4}″ × {:.4}″ PA {:.2}°; header {bmaj:.4}″ × {bmin:.4}″ PA {bpa:.2}°",
        b.major_deg * 3600.0,
        b.minor_deg * 3600.0,
        b.pa_deg
    );
    // WSClean's header keeps ~15 digits; its GSL solver stops at 1e-7 relative steps.
    assert!((b.major_deg * 3600.0 / bmaj - 1.0).abs() < 1e-5);
    assert!((b.minor_deg * 3600.0 / bmin - 1.0).abs() < 1e-5);
    assert!((b.pa_deg - bpa).abs() < 1e-3, "BPA {} vs {bpa}", b.pa_deg);
}

#[test]
fn clean_3c273_matches_wsclean() {
    let ms = MeasurementSet::open(root().join("tests/data/vla_3c273_xband.ms")).unwrap();
    let chunks = ms.read(&Selection::default()).unwrap().chunks;
    let geom = ImageGeometry::new(512, 512, 0.5 * asec(), 0.5 * asec()).unwrap();
    let mut opts = ImagingOptions::new(geom, Weighting::Briggs(0.0));
    opts.nufft = NufftOptions {
        epsilon: 1e-6,
        ..Default::default()
    };
    let copts = CleanOptions {
        niter: 5000,
        gain: 0.1,
        mgain: 0.8,
        threshold: 0.0,
        auto_threshold: Some(3.0),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let r = clean(&chunks, &opts, &copts).unwrap();
    let elapsed = t.elapsed().as_secs_f64();

    let image = reference("3c273_clean-image.fits");
    let (_, _, ref_image) = image.plane();
    let (_, _, ref_resid) = reference("3c273_clean-residual.fits").plane();
    let ref_peak = ref_image.iter().cloned().fold(f64::MIN, f64::max);
    let (bmaj, bmin, bpa) = header_beam(&image);
    let ours_resid: Vec<f64> = r.residual.iter().map(|&v| v as f64).collect();
    let (rms_ours, rms_ref) = (rms(&ours_resid), rms(&ref_resid));
    let b = &r.beam;
    eprintln!(
        "CLEAN: {} iterations, {} major cycles ({}), {elapsed:.1} s\n  restored peak {:.4} \
         (WSClean {ref_peak:.4}) Jy/beam\n  beam {:.4}″ × {:.4}″ PA {:.2}° (WSClean {bmaj:.4}″ × \
         {bmin:.4}″ PA {bpa:.2}°)\n  residual rms {rms_ours:.3e} (WSClean {rms_ref:.3e}) Jy/beam, \
         MAD σ {:.3e}",
        r.iterations,
        r.major_cycles,
        r.stop,
        r.restored_peak,
        b.major_deg * 3600.0,
        b.minor_deg * 3600.0,
        b.pa_deg,
        r.residual_sigma
    );
    assert_eq!(r.stop, StopReason::Threshold);
    assert!(
        (r.restored_peak / ref_peak - 1.0).abs() < 0.01,
        "restored peak {} vs {ref_peak}",
        r.restored_peak
    );
    let peak_at = r
        .restored
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
        .0;
    assert_eq!((peak_at / 512, peak_at % 512), (256, 256));
    assert!((b.major_deg * 3600.0 / bmaj - 1.0).abs() < 0.05);
    assert!((b.minor_deg * 3600.0 / bmin - 1.0).abs() < 0.05);
    assert!(
        pa_diff_deg(b.pa_deg, bpa) < 0.05 * bpa.abs(),
        "BPA {} vs {bpa}",
        b.pa_deg
    );
    assert!(
        (rms_ours / rms_ref - 1.0).abs() < 0.2,
        "residual rms {rms_ours} vs WSClean {rms_ref}"
    );
    // Consistency: restored = model ⊛ beam + residual, the beam's peak is 1.
    let pb = PixelBeam::from_beam(&r.beam, 0.5 * asec());
    assert!((pb.major - r.pixel_beam.major).abs() < 1e-9);
    let model_flux: f64 = r.model.iter().map(|&v| v as f64).sum();
    eprintln!("  model flux {model_flux:.3} Jy");
}
