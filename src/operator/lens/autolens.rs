//! Lens descriptions from JSON: our own small format, or an autolens `tracer.json`.
//!
//! Our format (units in the names; angles counter-clockwise from +x, x to the right/west,
//! y up/north):
//!
//! ```json
//! { "einstein_radius_arcsec": 1.6, "axis_ratio": 0.9, "angle_deg": 45.0,
//!   "centre_arcsec": [0.0, 0.0], "shear": { "gamma_1": 0.05, "gamma_2": 0.05 } }
//! ```
//!
//! autolens' conventions, translated here: centres are `(y, x)`; `ell_comps = (ε_y, ε_x)` with
//! `q = (1−|ε|)/(1+|ε|)`, `φ = ½ atan2(ε_y, ε_x)`; `Isothermal.einstein_radius` is the
//! intermediate-axis radius ([`super::sie`] uses the same normalisation).

use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use super::profiles::{Core, LightProfile};
use super::sie::{axis_ratio_and_angle, ExternalShear, MassModel, Sie};

#[derive(Debug, Error)]
pub enum LensFileError {
    // The cause is the error's source: `{:#}` prints it once, after the path.
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: {msg}")]
    Content { path: String, msg: String },
}

/// A lens system: the mass, and what is known of the light.
#[derive(Clone, Debug, PartialEq)]
pub struct LensSystem {
    pub mass: MassModel,
    /// Light of the lens galaxy (in the data; subtract it before fitting the source).
    pub lens_light: Vec<LightProfile>,
    /// The true source, when the file knows it (simulations).
    pub source_light: Vec<LightProfile>,
}

/// Reads our format or an autolens `tracer.json` (told apart by its `class_path`).
pub fn read_lens_file(path: &Path) -> Result<LensSystem, LensFileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LensFileError::Io {
        path: p.clone(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|source| LensFileError::Json {
        path: p.clone(),
        source,
    })?;
    let sys = if v.get("class_path").is_some() {
        from_autolens(&v)
    } else {
        from_simple(&v)
    }
    .map_err(|msg| LensFileError::Content {
        path: p.clone(),
        msg,
    })?;
    sys.mass
        .validate()
        .map_err(|msg| LensFileError::Content { path: p, msg })?;
    Ok(sys)
}

fn num(v: &Value, key: &str) -> Result<f64, String> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("missing or non-numeric \"{key}\""))
}

fn pair(v: &Value, key: &str) -> Result<[f64; 2], String> {
    let a = v.get(key).ok_or_else(|| format!("missing \"{key}\""))?;
    // autolens wraps tuples as {"type": "tuple", "values": [..]}.
    let arr = a.get("values").unwrap_or(a);
    match arr
        .as_array()
        .map(|x| x.iter().map(Value::as_f64).collect::<Vec<_>>())
    {
        Some(x) if x.len() == 2 && x.iter().all(Option::is_some) => {
            Ok([x[0].unwrap(), x[1].unwrap()])
        }
        _ => Err(format!("\"{key}\" must be a pair of numbers")),
    }
}

pub fn from_simple(v: &Value) -> Result<LensSystem, String> {
    let centre = match v.get("centre_arcsec") {
        None => [0.0, 0.0],
        Some(_) => pair(v, "centre_arcsec")?,
    };
    let shear = match v.get("shear") {
        None => ExternalShear::default(),
        Some(s) => ExternalShear {
            gamma_1: num(s, "gamma_1")?,
            gamma_2: num(s, "gamma_2")?,
        },
    };
    Ok(LensSystem {
        mass: MassModel {
            sie: Sie {
                einstein_radius: num(v, "einstein_radius_arcsec")?,
                axis_ratio: num(v, "axis_ratio")?,
                angle_deg: num(v, "angle_deg")?,
                centre,
            },
            shear,
        },
        lens_light: Vec::new(),
        source_light: Vec::new(),
    })
}

fn class(v: &Value) -> &str {
    v.get("class_path").and_then(Value::as_str).unwrap_or("")
}

fn light(v: &Value) -> Result<LightProfile, String> {
    let a = &v["arguments"];
    let [cy, cx] = pair(a, "centre")?;
    let (q, angle) = match a.get("ell_comps") {
        Some(_) => axis_ratio_and_angle(pair(a, "ell_comps")?),
        None => (1.0, 0.0),
    };
    let c = class(v);
    let core = if c.ends_with("SersicCore") || c.ends_with("SersicCoreSph") {
        Some(Core {
            radius_break: num(a, "radius_break")?,
            gamma: num(a, "gamma")?,
            alpha: num(a, "alpha")?,
        })
    } else if c.ends_with(".Sersic") || c.ends_with(".SersicSph") {
        None
    } else {
        return Err(format!(
            "unsupported light profile {c} (Sersic and SersicCore are)"
        ));
    };
    Ok(LightProfile {
        centre: [cx, cy],
        axis_ratio: q,
        angle_deg: angle,
        intensity: num(a, "intensity")?,
        effective_radius: num(a, "effective_radius")?,
        sersic_index: num(a, "sersic_index")?,
        core,
    })
}

pub fn from_autolens(v: &Value) -> Result<LensSystem, String> {
    let galaxies = v["arguments"]["galaxies"]["values"]
        .as_array()
        .ok_or("no galaxies list in the tracer")?;
    let z = |g: &Value| g["arguments"]["redshift"].as_f64().unwrap_or(0.0);
    let mut gals: Vec<&Value> = galaxies.iter().collect();
    gals.sort_by(|a, b| z(a).total_cmp(&z(b)));
    if gals.len() != 2 {
        return Err(format!(
            "expected a lens and a source galaxy, found {} galaxies",
            gals.len()
        ));
    }
    let (lens, src) = (&gals[0]["arguments"], &gals[1]["arguments"]);
    let mut sie = None;
    let mut shear = ExternalShear::default();
    let mut lens_light = Vec::new();
    for (key, comp) in lens.as_object().into_iter().flatten() {
        let c = class(comp);
        if c.ends_with(".Isothermal") || c.ends_with(".IsothermalSph") {
            let a = &comp["arguments"];
            let [cy, cx] = pair(a, "centre")?;
            let (q, angle) = match a.get("ell_comps") {
                Some(_) => axis_ratio_and_angle(pair(a, "ell_comps")?),
                None => (1.0, 0.0),
            };
            sie = Some(Sie {
                einstein_radius: num(a, "einstein_radius")?,
                axis_ratio: q,
                angle_deg: angle,
                centre: [cx, cy],
            });
        } else if c.ends_with(".ExternalShear") {
            let a = &comp["arguments"];
            shear = ExternalShear {
                gamma_1: num(a, "gamma_1")?,
                gamma_2: num(a, "gamma_2")?,
            };
        } else if c.contains(".light.") {
            lens_light.push(light(comp)?);
        } else if comp.get("class_path").is_some() {
            return Err(format!(
                "unsupported lens component \"{key}\" ({c}): Isothermal, ExternalShear and \
                 Sersic light are"
            ));
        }
    }
    let sie = sie.ok_or("the lens galaxy has no Isothermal mass profile")?;
    let mut source_light = Vec::new();
    for (_, comp) in src.as_object().into_iter().flatten() {
        if class(comp).contains(".light.") {
            source_light.push(light(comp)?);
        }
    }
    Ok(LensSystem {
        mass: MassModel { sie, shear },
        lens_light,
        source_light,
    })
}

/// Sum of profiles on an image grid, each pixel the mean of an adaptive sub-grid (fine near a
/// profile's centre, where a Sersic is steep), so that pixel-integrated light is modelled.
pub fn render_light(
    profiles: &[LightProfile],
    grid: &super::ImageGrid,
    pad: usize,
) -> (Vec<f64>, usize, usize) {
    use rayon::prelude::*;
    let (ny, nx) = (grid.ny + 2 * pad, grid.nx + 2 * pad);
    let img = (0..ny * nx)
        .into_par_iter()
        .map(|p| {
            let (iy, ix) = ((p / nx) as f64 - pad as f64, (p % nx) as f64 - pad as f64);
            let (x, y) = grid.xy(iy, ix);
            profiles
                .iter()
                .map(|lp| {
                    let r = (x - lp.centre[0]).hypot(y - lp.centre[1]);
                    let s = super::profiles::adaptive_subsampling(r / lp.effective_radius);
                    lp.pixel_mean(x, y, grid.pixel_scale, s)
                })
                .sum()
        })
        .collect();
    (img, ny, nx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hst_tracer() {
        let p = Path::new("tests/data/lensing/dataset_imaging_hst/tracer.json");
        // Never a silent pass: the lensing sets (MIT, autolens_profiling) are committed under
        // tests/data/lensing (see tests/data/README.md).
        assert!(
            p.exists(),
            "{} is missing: it belongs to the repository (tests/data/README.md says where it comes from)",
            p.display()
        );
        let s = read_lens_file(p).unwrap();
        assert!((s.mass.sie.einstein_radius - 1.6).abs() < 1e-12);
        assert!((s.mass.sie.axis_ratio - 0.9).abs() < 1e-9);
        assert!((s.mass.sie.angle_deg - 45.0).abs() < 1e-9);
        assert_eq!(s.mass.shear.gamma_1, 0.05);
        assert_eq!(s.lens_light.len(), 1);
        assert!(s.lens_light[0].core.is_none());
        assert_eq!(s.source_light.len(), 1);
        assert!(s.source_light[0].core.is_some());
    }

    #[test]
    fn simple_format_and_errors() {
        let v: Value = serde_json::from_str(
            r#"{"einstein_radius_arcsec": 1.2, "axis_ratio": 0.7, "angle_deg": 10,
                "centre_arcsec": [0.1, -0.2], "shear": {"gamma_1": 0.01, "gamma_2": 0.02}}"#,
        )
        .unwrap();
        let s = from_simple(&v).unwrap();
        assert_eq!(s.mass.sie.centre, [0.1, -0.2]);
        assert_eq!(s.mass.shear.gamma_2, 0.02);
        let bad: Value = serde_json::from_str(r#"{"axis_ratio": 0.7, "angle_deg": 0}"#).unwrap();
        assert!(from_simple(&bad)
            .unwrap_err()
            .contains("einstein_radius_arcsec"));
    }
}
