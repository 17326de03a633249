//! FITS round trips, headers against hand-computed values and against WSClean's own file, and
//! the error messages users see. (The WCS was also checked once against astropy, outside CI.)

use std::path::{Path, PathBuf};

use super::*;

const ARCSEC: f64 = 1.0 / 3600.0;

fn test_data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn reference() -> PathBuf {
    test_data("reference/3c273_natural-dirty.fits")
}

fn header_3c273() -> SkyHeader {
    SkyHeader {
        ra_deg: -172.722069066844,
        dec_deg: 2.05239553424764,
        cell_x_deg: 0.5 * ARCSEC,
        cell_y_deg: 0.5 * ARCSEC,
        freq_hz: 8.085e9,
        bandwidth_hz: 5e7,
        bunit: "JY/BEAM".into(),
        beam: Some(Beam {
            major_deg: 3.18 * ARCSEC,
            minor_deg: 3.06 * ARCSEC,
            pa_deg: 142.6,
        }),
        date_obs: Some("1989-06-27T01:03:19.9".into()),
        telescope: Some("VLA".into()),
        object: Some("3C273".into()),
        observer: Some("AO88".into()),
        extra: vec![
            ("WEIGHT".into(), HeaderValue::Str("natural".into())),
            ("EPSILON".into(), HeaderValue::F64(1e-6)),
            ("NSAMPLES".into(), HeaderValue::I64(16)),
            ("WSTACK".into(), HeaderValue::Bool(true)),
            (
                "HISTORY".into(),
                HeaderValue::Str("interf-image dirty x.ms".into()),
            ),
        ],
    }
}

/// Pixel value = 1000·iy + ix, so any transposition or flip shows.
fn ramp(ny: usize, nx: usize) -> Vec<f32> {
    (0..ny * nx)
        .map(|i| (1000 * (i / nx) + i % nx) as f32)
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn image_round_trips_pixels_in_row_major_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ramp.fits");
    let (ny, nx) = (3, 5);
    write_image(&path, &ramp(ny, nx), ny, nx, &header_3c273()).unwrap();

    let img = read_image(&path).unwrap();
    assert_eq!(img.shape, vec![1, 1, ny, nx]);
    assert_eq!(img.hdu, 0);
    let (py, px, plane) = img.plane();
    assert_eq!((py, px), (ny, nx));
    let expected: Vec<f64> = ramp(ny, nx).iter().map(|&v| v as f64).collect();
    assert_eq!(plane, expected);
    // Pixel [iy=2][ix=4]: last row, last column.
    assert_eq!(plane[2 * nx + 4], 2004.0);
}

#[test]
fn header_keywords_match_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.fits");
    let (ny, nx) = (6, 9);
    write_image(&path, &ramp(ny, nx), ny, nx, &header_3c273()).unwrap();
    let img = read_image(&path).unwrap();

    assert_eq!(img.get_bool("SIMPLE"), Some(true));
    assert_eq!(img.get_i64("BITPIX"), Some(-32));
    assert_eq!(img.get_i64("NAXIS"), Some(4));
    assert_eq!(img.get_i64("NAXIS1"), Some(9));
    assert_eq!(img.get_i64("NAXIS2"), Some(6));
    assert_eq!(img.get_i64("NAXIS3"), Some(1));
    assert_eq!(img.get_i64("NAXIS4"), Some(1));
    assert_eq!(img.get_f64("BSCALE"), Some(1.0));
    assert_eq!(img.get_f64("BZERO"), Some(0.0));
    assert_eq!(img.get_str("BUNIT"), Some("JY/BEAM"));
    assert_eq!(img.get_str("BTYPE"), Some("Intensity"));
    assert_eq!(img.get_f64("EQUINOX"), Some(2000.0));
    assert_eq!(img.get_str("RADESYS"), Some("FK5"));
    assert_eq!(img.get_str("ORIGIN"), Some("interf-image"));
    assert_eq!(img.get_str("IIVERSIO"), Some(env!("CARGO_PKG_VERSION")));
    assert!(img.get_str("DATE").is_some());
    assert_eq!(img.get_str("TELESCOP"), Some("VLA"));
    assert_eq!(img.get_str("OBSERVER"), Some("AO88"));
    assert_eq!(img.get_str("OBJECT"), Some("3C273"));
    assert_eq!(img.get_str("DATE-OBS"), Some("1989-06-27T01:03:19.9"));
    // astropy's value for this DATE-OBS (its `datfix`): 47704.043981.
    let mjd = img.get_f64("MJD-OBS").unwrap();
    assert!((mjd - 47704.043981).abs() < 1e-6, "MJD-OBS {mjd}");
    assert_eq!(img.get_str("SPECSYS"), Some("TOPOCENT"));
    assert!(img.get("EXTNAME").is_none());

    let close = |key: &str, want: f64| {
        let got = img.get_f64(key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            (got - want).abs() <= 1e-14 * want.abs().max(1.0),
            "{key} = {got}, want {want}"
        );
    };
    close("BMAJ", 3.18 / 3600.0);
    close("BMIN", 3.06 / 3600.0);
    close("BPA", 142.6);
    // RA in [0, 360) although the header said -172.72.
    assert_eq!(img.get_str("CTYPE1"), Some("RA---SIN"));
    close("CRVAL1", 360.0 - 172.722069066844);
    close("CRPIX1", 5.0); // 9/2 + 1, integer division: 0-based pixel 4 is the centre
    close("CDELT1", -0.5 / 3600.0);
    assert_eq!(img.get_str("CUNIT1"), Some("deg"));
    assert_eq!(img.get_str("CTYPE2"), Some("DEC--SIN"));
    close("CRVAL2", 2.05239553424764);
    close("CRPIX2", 4.0); // 6/2 + 1
    close("CDELT2", 0.5 / 3600.0);
    assert_eq!(img.get_str("CUNIT2"), Some("deg"));
    assert_eq!(img.get_str("CTYPE3"), Some("FREQ"));
    close("CRPIX3", 1.0);
    close("CRVAL3", 8.085e9);
    close("CDELT3", 5e7);
    assert_eq!(img.get_str("CUNIT3"), Some("Hz"));
    assert_eq!(img.get_str("CTYPE4"), Some("STOKES"));
    close("CRPIX4", 1.0);
    close("CRVAL4", 1.0);
    close("CDELT4", 1.0);

    assert_eq!(img.get_str("WEIGHT"), Some("natural"));
    assert_eq!(img.get_value("EPSILON"), Some(HeaderValue::F64(1e-6)));
    assert_eq!(img.get_value("NSAMPLES"), Some(HeaderValue::I64(16)));
    assert_eq!(img.get_value("WSTACK"), Some(HeaderValue::Bool(true)));
    assert_eq!(img.get("HISTORY"), Some("interf-image dirty x.ms"));
}

#[test]
fn sky_header_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.fits");
    let mut header = header_3c273();
    let long = "interf-image sample --prior galaxies.safetensors --epsilon 1e-6 --seed 7 \
                --weight briggs 0 /data/very/long/path/to/observation.ms";
    header
        .extra
        .push(("CMDLINE".into(), HeaderValue::Str(long.into())));
    write_image(&path, &ramp(4, 4), 4, 4, &header).unwrap();

    let back = read_image(&path).unwrap().sky_header().unwrap();
    let mut want = header.clone();
    want.ra_deg = header.ra_deg.rem_euclid(360.0);
    let rel = |a: f64, b: f64| (a - b).abs() <= 1e-14 * b.abs().max(1e-300);
    assert!(rel(back.ra_deg, want.ra_deg));
    assert!(rel(back.dec_deg, want.dec_deg));
    assert!(rel(back.cell_x_deg, want.cell_x_deg));
    assert!(rel(back.cell_y_deg, want.cell_y_deg));
    // The remaining fields went through 15-digit text exactly.
    want.ra_deg = back.ra_deg;
    want.dec_deg = back.dec_deg;
    want.cell_x_deg = back.cell_x_deg;
    want.cell_y_deg = back.cell_y_deg;
    let b = back.beam.unwrap();
    assert!(rel(b.major_deg, 3.18 * ARCSEC) && rel(b.minor_deg, 3.06 * ARCSEC));
    want.beam = back.beam;
    assert_eq!(back, want);
}

#[test]
fn wcs_agrees_with_hand_computed_sin_projection() {
    let h = header_3c273();
    let w = SkyWcs::new(&h, 512, 512);
    assert_eq!((w.crpix1, w.crpix2), (257.0, 257.0));
    let (ra, dec) = w.pixel_to_world(256.0, 256.0).unwrap();
    assert!((ra - 187.277930933156).abs() < 1e-12 && (dec - h.dec_deg).abs() < 1e-12);

    // One pixel to the right is one cell west: RA drops by cell / cos(dec) to first order.
    let (ra1, dec1) = w.pixel_to_world(257.0, 256.0).unwrap();
    let expect = 0.5 * ARCSEC / h.dec_deg.to_radians().cos();
    assert!((ra - ra1 - expect).abs() < 1e-6 * expect, "{}", ra - ra1);
    assert!((dec1 - dec).abs() < 1e-9);

    // At the pole SIN is easy to do by hand: an offset of r radians of (l, m) is dec = acos(r).
    let polar = SkyHeader {
        dec_deg: 90.0,
        cell_x_deg: 1.0,
        cell_y_deg: 1.0,
        ..h.clone()
    };
    let wp = SkyWcs::new(&polar, 100, 100);
    let (_, d) = wp.pixel_to_world(50.0, 50.0 + 30.0).unwrap();
    assert!(
        (d - 30f64.to_radians().acos().to_degrees()).abs() < 1e-10,
        "{d}"
    );

    for (ix, iy) in [(0.0, 0.0), (511.0, 3.0), (100.5, 400.25)] {
        let (ra, dec) = w.pixel_to_world(ix, iy).unwrap();
        let (x, y) = w.world_to_pixel(ra, dec).unwrap();
        assert!(
            (x - ix).abs() < 1e-7 && (y - iy).abs() < 1e-7,
            "{ix},{iy} -> {x},{y}"
        );
    }
}

#[test]
fn reads_wsclean_reference_image() {
    let img = read_image(&reference()).unwrap();
    assert_eq!(img.shape, vec![1, 1, 512, 512]);
    let ra = img.get_f64("CRVAL1").unwrap().rem_euclid(360.0);
    assert!((ra - 187.2779).abs() < 1e-4, "{ra}");
    assert_eq!(img.get_f64("CRPIX1"), Some(257.0));
    assert!((img.get_f64("CDELT1").unwrap() + 0.5 / 3600.0).abs() < 1e-15);
    let (ny, nx, plane) = img.plane();
    let (imax, vmax) =
        plane
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
    assert_eq!((imax / nx, imax % nx), (256, 256));
    assert_eq!((ny, nx), (512, 512));
    assert!((vmax - 29.78).abs() < 0.01, "{vmax}");

    // HISTORY holds WSClean's command line over two cards; quotes are decoded.
    assert!(img.get("HISTORY").unwrap().starts_with("wsclean -j 2"));
    let sky = img.sky_header().unwrap();
    assert!((sky.ra_deg - 187.2779).abs() < 1e-4);
    assert!(sky.beam.is_none(), "BMAJ = 0 means no beam");
    assert_eq!(sky.freq_hz, 8.085e9);
    assert_eq!(sky.telescope.as_deref(), Some("VLA"));
    let w = img.wcs().unwrap();
    let (r, d) = w.pixel_to_world(256.0, 256.0).unwrap();
    assert!((r - sky.ra_deg).abs() < 1e-12 && (d - sky.dec_deg).abs() < 1e-12);
}

#[test]
fn writes_the_keywords_wsclean_writes_with_the_same_wcs() {
    let wsc = read_image(&reference()).unwrap();
    let sky = wsc.sky_header().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.fits");
    write_image(&path, &vec![0.0; 512 * 512], 512, 512, &sky).unwrap();
    let ours = read_image(&path).unwrap();

    for (key, _) in &wsc.header {
        // WSC* are WSClean's own provenance; ours carries them as `extra` from `sky`. BMAJ = 0
        // on a dirty image means "no beam", which we leave out.
        if key.starts_with("WSC") || matches!(key.as_str(), "BMAJ" | "BMIN" | "BPA") {
            continue;
        }
        assert!(ours.get(key).is_some(), "{key} missing from our header");
    }
    for key in [
        "CRPIX1", "CDELT1", "CRVAL2", "CRPIX2", "CDELT2", "CRVAL3", "CDELT3", "CRVAL4",
    ] {
        assert_eq!(ours.get_f64(key), wsc.get_f64(key), "{key}");
    }
    let ra = |i: &FitsImage| i.get_f64("CRVAL1").unwrap().rem_euclid(360.0);
    assert!((ra(&ours) - ra(&wsc)).abs() < 1e-12);
    for key in [
        "CTYPE1", "CTYPE2", "CTYPE3", "CTYPE4", "CUNIT1", "BUNIT", "DATE-OBS",
    ] {
        assert_eq!(ours.get_str(key), wsc.get_str(key), "{key}");
    }
    let (wo, ww) = (ours.wcs().unwrap(), wsc.wcs().unwrap());
    for (ix, iy) in [(0.0, 0.0), (256.0, 256.0), (511.0, 100.0)] {
        let (a, b) = (
            wo.pixel_to_world(ix, iy).unwrap(),
            ww.pixel_to_world(ix, iy).unwrap(),
        );
        assert!((a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12);
    }
}

#[test]
fn cube_of_samples_keeps_frequency_in_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.fits");
    let (n, ny, nx) = (3, 4, 5);
    let planes: Vec<f32> = (0..n * ny * nx).map(|i| i as f32).collect();
    let h = header_3c273();
    write_cube(&path, &planes, n, ny, nx, &h, CubeAxis::Sample).unwrap();
    let img = read_image(&path).unwrap();
    assert_eq!(img.shape, vec![1, n, ny, nx]);
    assert_eq!(img.data[2 * ny * nx + 7], (2 * ny * nx + 7) as f64);
    assert_eq!(img.get_str("CTYPE3"), Some("SAMPLE"));
    assert_eq!(img.get_f64("CRVAL3"), Some(0.0));
    assert_eq!(img.get_f64("CDELT3"), Some(1.0));
    assert_eq!(img.get_str("CTYPE4"), Some("STOKES"));
    let sky = img.sky_header().unwrap();
    assert_eq!((sky.freq_hz, sky.bandwidth_hz), (h.freq_hz, h.bandwidth_hz));
    assert_eq!(
        img.plane().2,
        planes[..ny * nx]
            .iter()
            .map(|&v| v as f64)
            .collect::<Vec<_>>()
    );
}

#[test]
fn cube_of_sub_bands_steps_by_the_bandwidth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfs.fits");
    let h = header_3c273();
    write_cube(&path, &[0.0; 2 * 3 * 3], 2, 3, 3, &h, CubeAxis::Frequency).unwrap();
    let img = read_image(&path).unwrap();
    assert_eq!(img.shape, vec![1, 2, 3, 3]);
    assert_eq!(img.get_str("CTYPE3"), Some("FREQ"));
    assert_eq!(img.get_f64("CDELT3"), Some(5e7));
}

#[test]
fn overwrites_atomically_and_leaves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.fits");
    let bystander = dir.path().join("notes.txt");
    std::fs::write(&bystander, "keep me").unwrap();
    let h = header_3c273();
    write_image(&path, &[1.0; 4], 2, 2, &h).unwrap();
    write_image(&path, &[2.0; 4], 2, 2, &h).unwrap();
    assert_eq!(read_image(&path).unwrap().data, vec![2.0; 4]);

    // A rejected write keeps the previous file whole.
    let bad = SkyHeader {
        cell_x_deg: -1.0,
        ..h.clone()
    };
    assert!(write_image(&path, &[3.0; 4], 2, 2, &bad).is_err());
    assert_eq!(read_image(&path).unwrap().data, vec![2.0; 4]);
    assert_eq!(files_in(dir.path()), vec!["notes.txt", "out.fits"]);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "keep me");

    #[cfg(unix)]
    {
        // The temporary file is 0600; the product must be readable like any other output.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(mode & 0o044, 0, "mode {mode:o}");
    }
}

#[test]
fn reads_integer_images_with_scaling_and_extensions() {
    use fitsio::images::{ImageDescription, ImageType};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int.fits");
    {
        let mut f = fitsio::FitsFile::create(&path).open().unwrap();
        let desc = ImageDescription {
            data_type: ImageType::Short,
            dimensions: &[2, 3],
        };
        let hdu = f.create_image("EXT", &desc).unwrap();
        hdu.write_key(&mut f, "BSCALE", 0.5).unwrap();
        hdu.write_key(&mut f, "BZERO", 10.0).unwrap();
        hdu.write_image(&mut f, &[0i16, 2, 4, 6, 8, 10]).unwrap();
    }
    // The empty primary is skipped, as astropy's getdata does.
    let img = read_image(&path).unwrap();
    assert_eq!(img.hdu, 1);
    assert_eq!(img.shape, vec![2, 3]);
    assert_eq!(img.data, vec![10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
    assert_eq!(img.plane(), (2, 3, img.data.clone()));
    let err = read_hdu(&path, 0).unwrap_err();
    assert!(matches!(err, FitsError::NoImage { .. }), "{err}");
}

#[test]
fn reads_every_hdu_of_the_cosmos_stamps() {
    let path = test_data("cosmos_hst/real_galaxy_images_23.5_n1.fits");
    assert_eq!(read_image(&path).unwrap().shape, vec![234, 233]);
    let stamp = read_hdu(&path, 1).unwrap();
    assert_eq!(stamp.shape, vec![138, 137]);
    assert_eq!(stamp.plane().0, 138);
    let err = read_hdu(&path, 10).unwrap_err();
    assert!(
        matches!(err, FitsError::NoSuchHdu { count: 10, .. }),
        "{err}"
    );
}

#[test]
fn bad_inputs_give_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let named = |err: FitsError, path: &Path| {
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        msg
    };

    let missing = dir.path().join("nope.fits");
    let err = read_image(&missing).unwrap_err();
    assert!(matches!(err, FitsError::NotFound { .. }));
    assert!(named(err, &missing).contains("no such file"));

    let text = dir.path().join("notes.fits");
    std::fs::write(&text, "hello, not a FITS file").unwrap();
    let msg = named(read_image(&text).unwrap_err(), &text);
    assert!(msg.contains("not a FITS file"), "{msg}");

    let empty = dir.path().join("empty.fits");
    std::fs::write(&empty, "").unwrap();
    assert!(named(read_image(&empty).unwrap_err(), &empty).contains("empty"));

    let no_image = dir.path().join("header-only.fits");
    drop(fitsio::FitsFile::create(&no_image).open().unwrap());
    let err = read_image(&no_image).unwrap_err();
    assert!(matches!(err, FitsError::NoImage { .. }));
    assert!(named(err, &no_image).contains("no image"));

    let msg = named(read_image(dir.path()).unwrap_err(), dir.path());
    assert!(msg.contains("directory"), "{msg}");

    let nowhere = dir.path().join("missing-dir/out.fits");
    let err = write_image(&nowhere, &[0.0; 4], 2, 2, &header_3c273()).unwrap_err();
    assert!(matches!(err, FitsError::NoOutputDir { .. }));
    assert!(named(err, &nowhere).contains("does not exist"));

    let out = dir.path().join("out.fits");
    let msg = named(
        write_image(&out, &[0.0; 5], 2, 2, &header_3c273()).unwrap_err(),
        &out,
    );
    assert!(msg.contains("5 pixels given"), "{msg}");
    let mut h = header_3c273();
    h.extra.push(("CRVAL1".into(), HeaderValue::F64(1.0)));
    let msg = named(write_image(&out, &[0.0; 4], 2, 2, &h).unwrap_err(), &out);
    assert!(msg.contains("CRVAL1"), "{msg}");
    assert!(!out.exists());
}

/// Writes the files that `src/io/astropy_check.py` compares with astropy (manual, outside CI):
/// `INTERF_IO_CHECK_DIR=/tmp/x cargo test --lib io::tests::astropy_files -- --ignored`.
#[test]
#[ignore]
fn astropy_files() {
    let dir = PathBuf::from(std::env::var("INTERF_IO_CHECK_DIR").expect("INTERF_IO_CHECK_DIR"));
    let wsc = read_image(&reference()).unwrap();
    let (ny, nx, plane) = wsc.plane();
    let pixels: Vec<f32> = plane.iter().map(|&v| v as f32).collect();
    let mut sky = wsc.sky_header().unwrap();
    sky.beam = Some(Beam {
        major_deg: 3.18 * ARCSEC,
        minor_deg: 3.06 * ARCSEC,
        pa_deg: 142.6,
    });
    let long = "interf-image sample --prior galaxies.safetensors --epsilon 1e-6 --seed 7 \
                --weight briggs 0 /data/very/long/path/to/observation.ms";
    sky.extra
        .push(("CMDLINE".into(), HeaderValue::Str(long.into())));
    write_image(&dir.join("ours-3c273.fits"), &pixels, ny, nx, &sky).unwrap();
    let cube: Vec<f32> = (0..3).flat_map(|_| pixels.iter().copied()).collect();
    write_cube(
        &dir.join("ours-samples.fits"),
        &cube,
        3,
        ny,
        nx,
        &sky,
        CubeAxis::Sample,
    )
    .unwrap();
    let wcs = SkyWcs::new(&sky, ny, nx);
    let lines: Vec<String> = [
        (0.0, 0.0),
        (256.0, 256.0),
        (511.0, 0.0),
        (100.0, 400.0),
        (511.0, 511.0),
    ]
    .iter()
    .map(|&(x, y)| {
        let (ra, dec) = wcs.pixel_to_world(x, y).unwrap();
        format!("{x} {y} {ra:.15} {dec:.15}")
    })
    .collect();
    std::fs::write(dir.join("ours-wcs.txt"), lines.join("\n") + "\n").unwrap();
}
