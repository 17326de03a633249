//! The lensed-source report: `NAME-report.html` with PNGs beside it: data, lensed model of the
//! posterior mean, residuals, source mean, source std, the true source when known, and samples.

use std::path::{Path, PathBuf};

use super::html::{self, Figure};
use super::image_plot::{self, Colormap, SkyImage, Stretch};
use super::plot_util::{ensure_font, image_grid};
use super::posterior::ReportError;

pub struct LensReport<'a> {
    pub title: String,
    pub image_ny: usize,
    pub image_nx: usize,
    pub image_pixel_asec: f64,
    /// Lens-light-subtracted data (images) or the dirty image (visibilities).
    pub data: &'a [f32],
    /// Lensed posterior mean.
    pub model: &'a [f32],
    /// Residual/σ (images; NaN outside the fitted pixels) or residual dirty image.
    pub residual: &'a [f32],
    pub residual_label: &'a str,
    pub data_unit: &'a str,
    pub source_side: usize,
    pub source_pixel_asec: f64,
    pub mean: &'a [f32],
    pub std: &'a [f32],
    /// `[k][iy][ix]`.
    pub samples: &'a [f32],
    pub n_samples: usize,
    pub truth: Option<&'a [f32]>,
    pub summary: Vec<(String, String)>,
}

fn tmp_of(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.png"))
}

fn finish(tmp: &Path, path: &Path, res: Result<(), String>) -> Result<(), ReportError> {
    if let Err(msg) = res {
        let _ = std::fs::remove_file(tmp);
        return Err(ReportError::Plot {
            path: path.to_path_buf(),
            msg,
        });
    }
    std::fs::rename(tmp, path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the report; returns the HTML path.
pub fn write_lens_report(prefix: &str, r: &LensReport) -> Result<PathBuf, ReportError> {
    let (iy, ix, s) = (r.image_ny, r.image_nx, r.source_side);
    for (what, got, want) in [
        ("data", r.data.len(), iy * ix),
        ("model", r.model.len(), iy * ix),
        ("residual", r.residual.len(), iy * ix),
        ("mean", r.mean.len(), s * s),
        ("std", r.std.len(), s * s),
        ("samples", r.samples.len(), r.n_samples * s * s),
    ] {
        if got != want {
            return Err(ReportError::Input(format!(
                "{what}: {got} values, expected {want}"
            )));
        }
    }
    let base = Path::new(prefix);
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(ReportError::NoDir {
            dir,
            prefix: prefix.into(),
        });
    }
    let stem = base
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ReportError::Input(format!("bad prefix {prefix:?}")))?
        .to_string();
    ensure_font();
    let mut figs = Vec::new();
    let sky = |what: &str,
               title: &str,
               data: &[f32],
               ny: usize,
               nx: usize,
               pix: f64,
               unit: &str,
               cmap: Colormap,
               caption: &str,
               figs: &mut Vec<Figure>|
     -> Result<(), ReportError> {
        let file = format!("{stem}-report-{what}.png");
        let path = dir.join(&file);
        let tmp = tmp_of(&path);
        let img = SkyImage {
            data,
            ny,
            nx,
            pixel_asec: pix,
            title,
            unit,
            cmap,
            range: None,
            contours: &[],
            stretch: Stretch::Linear,
        };
        let res = image_plot::write_sky_image_png(&tmp, &img, image_plot::sky_canvas(ny, nx))
            .map_err(|e| e.0);
        finish(&tmp, &path, res)?;
        figs.push(Figure {
            src: file,
            alt: title.into(),
            caption: caption.into(),
        });
        Ok(())
    };
    let pi = r.image_pixel_asec;
    let ps = r.source_pixel_asec;
    sky(
        "data",
        "Data",
        r.data,
        iy,
        ix,
        pi,
        r.data_unit,
        Colormap::Inferno,
        "The data the source is fitted to (images: after subtracting the known lens light).",
        &mut figs,
    )?;
    sky(
        "model",
        "Lensed posterior mean",
        r.model,
        iy,
        ix,
        pi,
        r.data_unit,
        Colormap::Inferno,
        "The posterior mean source sent through the lens (and PSF).",
        &mut figs,
    )?;
    sky(
        "residual",
        "Residual",
        r.residual,
        iy,
        ix,
        pi,
        "",
        Colormap::Diverging,
        r.residual_label,
        &mut figs,
    )?;
    sky(
        "mean",
        "Source: posterior mean",
        r.mean,
        s,
        s,
        ps,
        r.data_unit,
        Colormap::Inferno,
        "Source plane; axes are arcsec offsets from the source-grid centre.",
        &mut figs,
    )?;
    sky(
        "std",
        "Source: posterior std",
        r.std,
        s,
        s,
        ps,
        r.data_unit,
        Colormap::Viridis,
        "Per-pixel posterior standard deviation over the samples.",
        &mut figs,
    )?;
    if let Some(t) = r.truth {
        sky(
            "truth",
            "Source: truth",
            t,
            s,
            s,
            ps,
            r.data_unit,
            Colormap::Inferno,
            "The true source from the lens file, pixel-averaged on the source grid.",
            &mut figs,
        )?;
    }
    let k = r.n_samples.min(8);
    let planes: Vec<&[f32]> = (0..k)
        .map(|i| &r.samples[i * s * s..(i + 1) * s * s])
        .collect();
    let file = format!("{stem}-report-samples.png");
    let path = dir.join(&file);
    let tmp = tmp_of(&path);
    let res = image_grid(&tmp, &planes, s, s, 4, 3, None).map_err(|e| e.0);
    finish(&tmp, &path, res)?;
    figs.push(Figure {
        src: file,
        alt: "samples".into(),
        caption: format!("The first {k} posterior samples of the source."),
    });
    let howto = "<ul><li>The source is reconstructed on its own grid in the source plane; the \
        lens model is held fixed.</li><li>The residual should look like noise: structure along \
        the arcs means the source or the lens model is off.</li><li>Where the std is large the \
        data say little: regions no ray reaches show the prior alone.</li></ul>";
    let page = html::page(&r.title, &r.summary, &figs, howto);
    let hp = dir.join(format!("{stem}-report.html"));
    let tmp = hp.with_file_name(format!(".{stem}-report.html.tmp"));
    std::fs::write(&tmp, page).map_err(|source| ReportError::Io {
        path: hp.clone(),
        source,
    })?;
    finish(&tmp, &hp, Ok(()))?;
    Ok(hp)
}
