//! Our dirty images and PSF of 3C 273 against WSClean's (the reference FITS files in
//! `tests/data/reference`, made with `wsclean -size 512 512 -scale 0.5asec -niter 0
//! -use-wgridder -no-small-inversion`).

use std::path::PathBuf;
use std::sync::OnceLock;

use interf_image::imaging::{make_dirty_and_psf, DirtyProducts, ImagingOptions, Weighting};
use interf_image::io::read_image;
use interf_image::operator::nufft::NufftOptions;
use interf_image::operator::ImageGeometry;
use ms_io::{MeasurementSet, Selection, VisChunk};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chunks() -> &'static [VisChunk] {
    static CHUNKS: OnceLock<Vec<VisChunk>> = OnceLock::new();
    CHUNKS.get_or_init(|| {
        let ms = MeasurementSet::open(root().join("tests/data/vla_3c273_xband.ms")).unwrap();
        ms.read(&Selection::default()).unwrap().chunks
    })
}

fn image(weighting: Weighting) -> DirtyProducts {
    let asec = (1.0f64 / 3600.0).to_radians();
    let geom = ImageGeometry::new(512, 512, 0.5 * asec, 0.5 * asec).unwrap();
    let mut opts = ImagingOptions::new(geom, weighting);
    opts.nufft = NufftOptions {
        epsilon: 1e-6,
        ..Default::default()
    };
    make_dirty_and_psf(chunks(), &opts).unwrap()
}

fn reference(name: &str) -> Vec<f64> {
    let path = root().join("tests/data/reference").join(name);
    let fits = read_image(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (ny, nx, plane) = fits.plane();
    assert_eq!((ny, nx), (512, 512));
    plane
}

/// Relative L2 difference, peak pixel and peak ratio against the reference.
fn compare(ours: &[f32], reference: &[f64], what: &str) {
    let num: f64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b).powi(2))
        .sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    let rel = (num / den).sqrt();
    let argmax = |v: &mut dyn Iterator<Item = f64>| {
        v.enumerate()
            .fold((0, f64::MIN), |a, (i, x)| if x > a.1 { (i, x) } else { a })
    };
    let (ip, peak) = argmax(&mut ours.iter().map(|&v| v as f64));
    let (ir, rpeak) = argmax(&mut reference.iter().copied());
    eprintln!(
        "{what}: relative L2 {rel:.2e}, peak {peak:.5} at ({}, {}), reference {rpeak:.5} at ({}, {})",
        ip / 512,
        ip % 512,
        ir / 512,
        ir % 512
    );
    assert!(
        rel <= 1e-3,
        "{what}: relative L2 difference {rel:.3e} > 1e-3"
    );
    assert_eq!(
        (ip / 512, ip % 512),
        (256, 256),
        "{what}: peak not at the phase centre"
    );
    assert!(
        (peak / rpeak - 1.0).abs() <= 1e-3,
        "{what}: peak {peak} vs WSClean {rpeak}"
    );
}

#[test]
fn natural_dirty_matches_wsclean() {
    let p = image(Weighting::Natural);
    compare(
        &p.dirty,
        &reference("3c273_natural-dirty.fits"),
        "natural dirty",
    );
}

#[test]
fn uniform_dirty_matches_wsclean() {
    let p = image(Weighting::Uniform);
    compare(
        &p.dirty,
        &reference("3c273_uniform-dirty.fits"),
        "uniform dirty",
    );
}

#[test]
fn briggs0_dirty_and_psf_match_wsclean() {
    let p = image(Weighting::Briggs(0.0));
    compare(
        &p.dirty,
        &reference("3c273_briggs0-dirty.fits"),
        "Briggs 0 dirty",
    );
    compare(&p.psf, &reference("3c273_clean-psf.fits"), "Briggs 0 PSF");
    assert_eq!(p.psf[256 * 512 + 256], 1.0, "the PSF peaks at exactly 1");
}
