//! What a job will need before it allocates (memory, a sensible field of view), and the
//! units its messages use.

use super::Result;

/// Bytes of memory the system can still give without swapping (`MemAvailable` of
/// /proc/meminfo), or `None` where it cannot be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes in a human unit, for messages.
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// Refuses a job whose largest buffers (`bytes`, an estimate made before anything is
/// allocated) exceed the memory available (or `max_memory` when given): an allocation that
/// fails aborts the process with no message that helps.
pub fn check_memory(bytes: f64, what: &str, max_memory: Option<u64>) -> Result<()> {
    check_memory_or(bytes, what, "make the image smaller", max_memory)
}

/// [`check_memory`] with the advice to give (`"lower --batch"`, …) when the job is refused.
pub fn check_memory_or(
    bytes: f64,
    what: &str,
    advice: &str,
    max_memory: Option<u64>,
) -> Result<()> {
    let (limit, whence) = match max_memory {
        Some(m) => (Some(m), "--max-memory"),
        None => (available_memory(), "available memory (MemAvailable)"),
    };
    if let Some(limit) = limit {
        if bytes > limit as f64 {
            input_error!(
                "{what} needs about {} of memory, more than the {} of {whence}: {advice}, or \
                 give --max-memory to allow more",
                human_bytes(bytes),
                human_bytes(limit as f64)
            );
        }
    }
    Ok(())
}

/// Refuses a network batch of `batch` images whose activations (one pass of the score network
/// of `cfg`, with its gradient when `backward`: DPS, training) would not fit in memory, before
/// the sampler allocates anything; the message says to lower `--batch`.
pub fn check_network_batch(
    cfg: &crate::prior::UNetConfig,
    batch: usize,
    backward: bool,
    max_memory: Option<u64>,
) -> Result<()> {
    check_memory_or(
        cfg.activation_bytes(batch, backward),
        &format!(
            "a network batch of {batch} images of {s}×{s} pixels ({pass} pass, --batch {batch})",
            s = cfg.image_size,
            pass = if backward {
                "forward and backward"
            } else {
                "forward"
            }
        ),
        "lower --batch",
        max_memory,
    )
}

/// Estimate of the largest buffers of gridding an `nx × ny` image (dirty and PSF, or CLEAN):
/// two uv grids of complex f64 at twice the image size (the NUFFT's oversampling), a handful
/// of f64 and f32 images, and the weighting grid (padding² × the image, f64).
pub fn gridding_memory(nx: usize, ny: usize, padding: f64, images: usize) -> f64 {
    let px = nx as f64 * ny as f64;
    px * (2.0 * 4.0 * 16.0 + images as f64 * 8.0 + 8.0 * padding * padding)
}

/// An angle (radians) in the unit that suits it: µas, mas, ″, ′ or °, four significant digits
/// (VLBI pixels of 50 µas printed as "0.000″" said nothing).
pub fn format_angle(rad: f64) -> String {
    let deg = rad.to_degrees();
    let a = deg.abs();
    if a == 0.0 {
        // An offset of nothing needs no unit hunt ("0 µas" read oddly for the phase centre).
        return "0″".into();
    }
    let (v, unit) = if !a.is_finite() || a >= 1.0 {
        (deg, "°")
    } else if a >= 1.0 / 60.0 {
        (deg * 60.0, "′")
    } else if a >= 1.0 / 3600.0 {
        (deg * 3600.0, "″")
    } else if a >= 1e-3 / 3600.0 {
        (deg * 3.6e6, " mas")
    } else {
        (deg * 3.6e9, " µas")
    };
    format!("{}{unit}", significant(v, 4))
}

/// `v` with `digits` significant digits, without an exponent.
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - mag).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Refuses an image smaller than half the resolution of the data (1 / longest baseline):
/// every pixel would then see nearly the same value (a constant image), and CLEAN's beam
/// would be wider than the image.
pub fn check_field_of_view(nx: usize, ny: usize, scale: f64, longest: f64) -> Result<()> {
    let fov = scale * nx.max(ny) as f64;
    let resolution = 1.0 / longest;
    if fov < 0.5 * resolution {
        input_error!(
            "the image spans {} ({}×{} pixels of {}), less than half the resolution of the \
             data ({}, 1/longest baseline): every pixel would hold the same value; use a \
             larger --scale or --size",
            format_angle(fov),
            nx,
            ny,
            format_angle(scale),
            format_angle(resolution)
        );
    }
    Ok(())
}
