//! Bounded mutation fuzzing of the readers of user files (issue 18): the FITS reader, the
//! checkpoint loader (config.json + safetensors) and the lens JSON. Each starts from a valid
//! file and reads a few hundred seeded mutations of it; every read must return (Ok or a clear
//! error), never panic or abort (a huge NAXIS must not be allocated blindly). Seeded, so a
//! failure reproduces; a few seconds in all.

use std::path::Path;

use candle_core::Device;
use interf_image::io::read_image;
use interf_image::operator::lens::autolens::read_lens_file;
use interf_image::prior::ScoreModel;

mod fuzz_common;
use fuzz_common::Rng;

/// Byte-level mutations: flips, overwrites with interesting bytes, truncation, duplication.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len());
                v[i] = [0u8, 0xff, b'9', b'-', b' ', b'\'', b'='][rng.below(7)];
            }
            2 => {
                let n = rng.below(v.len());
                v.truncate(n);
            }
            3 => {
                let i = rng.below(v.len());
                let j = (i + rng.below(64)).min(v.len());
                let dup = v[i..j].to_vec();
                v.splice(i..i, dup);
            }
            _ => {
                let i = rng.below(v.len());
                v.remove(i);
            }
        }
    }
    v
}

/// Text-level mutations of numbers and keywords, which byte flips rarely hit meaningfully.
fn mutate_text(rng: &mut Rng, base: &str, words: &[&str]) -> String {
    let mut s = base.to_string();
    for _ in 0..1 + rng.below(3) {
        let w = words[rng.below(words.len())];
        let Some(at) = s.find(w) else { continue };
        let value = [
            "0",
            "-1",
            "1e308",
            "-1e308",
            "NaN",
            "1e12",
            "99999999999",
            "\"x\"",
            "[]",
            "null",
            "2147483648",
            "-0",
        ][rng.below(12)];
        // Replace the number after the keyword (up to the next separator).
        let start = at + w.len();
        let rest = &s[start..];
        let skip = rest
            .find(|c: char| c.is_ascii_digit() || c == '-' || c == 'T' || c == 'F')
            .unwrap_or(0);
        let len = rest[skip..]
            .find([',', '}', ' ', '\n', ']', '/'])
            .unwrap_or(rest.len() - skip);
        s.replace_range(start + skip..start + skip + len, value);
    }
    s
}

/// A valid FITS image: 16×16 f32 with a WCS, written by hand.
fn valid_fits() -> Vec<u8> {
    let mut h = String::new();
    let mut card = |k: &str, v: &str| h.push_str(&format!("{k:<8}= {v:>20}{:50}", ""));
    for (k, v) in [
        ("SIMPLE", "T"),
        ("BITPIX", "-32"),
        ("NAXIS", "2"),
        ("NAXIS1", "16"),
        ("NAXIS2", "16"),
        ("CRPIX1", "8.0"),
        ("CDELT1", "-0.001"),
        ("CRVAL1", "10.0"),
        ("BSCALE", "1.0"),
    ] {
        card(k, v);
    }
    h.push_str(&format!("{:<80}", "END"));
    while !h.len().is_multiple_of(2880) {
        h.push(' ');
    }
    let mut b = h.into_bytes();
    for i in 0..256 {
        b.extend((i as f32).to_be_bytes());
    }
    while !b.len().is_multiple_of(2880) {
        b.push(0);
    }
    b
}

#[test]
fn fits_reader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.fits");
    let base = valid_fits();
    std::fs::write(&path, &base).unwrap();
    assert!(read_image(&path).is_ok(), "the seed file must read");
    let header = String::from_utf8_lossy(&base[..2880]).to_string();
    let mut rng = Rng(0x5eed_f175);
    for i in 0..300 {
        let bytes = if i % 2 == 0 {
            mutate(&mut rng, &base)
        } else {
            let mut b = mutate_text(
                &mut rng,
                &header,
                &[
                    "BITPIX  = ",
                    "NAXIS   = ",
                    "NAXIS1  = ",
                    "NAXIS2  = ",
                    "BSCALE  = ",
                ],
            )
            .into_bytes();
            b.resize(2880, b' ');
            b.extend_from_slice(&base[2880..]);
            b
        };
        std::fs::write(&path, &bytes).unwrap();
        // Ok or Err: the property is that it returns at all.
        let _ = read_image(&path);
    }
}

#[test]
fn checkpoint_loader_never_panics() {
    let ck = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/learned_noise_corr16");
    let config = std::fs::read_to_string(ck.join("config.json")).unwrap();
    let weights = std::fs::read(ck.join("weights.safetensors")).unwrap();
    assert!(ScoreModel::from_bytes(config.as_bytes(), &weights, &Device::Cpu).is_ok());
    let keys = [
        "\"image_size\": ",
        "\"nf\": ",
        "\"sigma_min\": ",
        "\"sigma_max\": ",
        "\"t_eps\": ",
        "\"rms\": ",
        "\"num_res_blocks\": ",
        "\"fourier_scale\": ",
        "\"format_version\": ",
        "\"ch_mult\": [",
    ];
    let mut rng = Rng(0xc0ff_ee11);
    let mut accepted_bad_sde = Vec::new();
    for i in 0..200 {
        let (c, w) = if i % 3 == 0 {
            (config.clone(), mutate(&mut rng, &weights))
        } else {
            (mutate_text(&mut rng, &config, &keys), weights.clone())
        };
        if let Ok(m) = ScoreModel::from_bytes(c.as_bytes(), &w, &Device::Cpu) {
            // Whatever loads must define a usable diffusion: σ finite and positive.
            use interf_image::prior::sde::Sde;
            let sde = m.sde();
            let ok = [0.0, 0.5, 1.0].iter().all(|&t| {
                let s = sde.sigma(t);
                s.is_finite() && s > 0.0
            }) && sde.prior_std().is_finite();
            if !ok {
                accepted_bad_sde.push(c);
            }
        }
    }
    assert!(
        accepted_bad_sde.is_empty(),
        "configs loaded with an unusable SDE: {accepted_bad_sde:?}"
    );
}

#[test]
fn lens_json_reader_never_panics() {
    let tracer = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lensing/dataset_imaging_hst/tracer.json");
    let text = std::fs::read_to_string(&tracer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lens.json");
    let ours = r#"{"einstein_radius_arcsec": 1.2, "axis_ratio": 0.8, "angle_deg": 30,
        "centre_arcsec": [0.0, 0.1], "shear": {"gamma_1": 0.01, "gamma_2": -0.02}}"#;
    let mut rng = Rng(0x1e45_0001);
    for (base, keys) in [
        (
            text.as_str(),
            &[
                "\"einstein_radius\": ",
                "\"ell_comps\": [",
                "\"centre\": [",
                "\"gamma_1\": ",
            ][..],
        ),
        (
            ours,
            &[
                "\"einstein_radius_arcsec\": ",
                "\"axis_ratio\": ",
                "\"angle_deg\": ",
                "\"centre_arcsec\": [",
                "\"gamma_2\": ",
            ][..],
        ),
    ] {
        std::fs::write(&path, base).unwrap();
        for i in 0..150 {
            let t = if i % 2 == 0 {
                mutate_text(&mut rng, base, keys)
            } else {
                String::from_utf8_lossy(&mutate(&mut rng, base.as_bytes())).to_string()
            };
            std::fs::write(&path, t).unwrap();
            let _ = read_lens_file(&path);
        }
    }
}
