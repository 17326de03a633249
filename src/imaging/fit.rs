//! How well a sky model explains the visibilities: the reduced χ² that `image` prints for its
//! posterior and `clean` for its model, with one noise estimate, so the two sit side by side.

use ms_io::VisChunk;

use super::ImagingError;
use crate::operator::{ForwardOperator, ImageGeometry, Nufft, NufftOptions};

/// `Σ |V − A x|² / σ²` over every usable visibility (weight > 0) of `chunks`, per real datum,
/// with `σ² = noise_factor / w` per real component (`noise_factor` 1 trusts the weights).
/// `image` in Jy/pixel at `geometry`.
pub fn reduced_chi2(
    chunks: &[VisChunk],
    geometry: &ImageGeometry,
    image: &[f32],
    noise_factor: f64,
    nufft: &NufftOptions,
) -> Result<f64, ImagingError> {
    let (mut chi2, mut n) = (0.0f64, 0usize);
    for c in chunks {
        let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
        if !mask.iter().any(|&m| m) {
            continue;
        }
        let op = Nufft::new(*geometry, &c.uvw, &c.freq, Some(&mask), nufft)?;
        let (c2, model) = chunk_chi2(&op, c, noise_factor, image);
        chi2 += c2;
        n += model.len();
    }
    if n == 0 {
        return Err(ImagingError::AllZeroWeight);
    }
    Ok(chi2 / n as f64)
}

/// χ² (not reduced) of `image` against the usable visibilities of one chunk through `op` (the
/// NUFFT of those visibilities, masked to weight > 0), and the model visibilities `[re, im, …]`.
pub fn chunk_chi2<A: ForwardOperator + ?Sized>(
    op: &A,
    c: &VisChunk,
    noise_factor: f64,
    image: &[f32],
) -> (f64, Vec<f32>) {
    let mut model = vec![0.0f32; op.data_len()];
    op.forward(image, &mut model);
    let mut chi2 = 0.0;
    for ((v, &w), m) in c
        .vis
        .iter()
        .zip(&c.weight)
        .filter(|(_, &w)| w > 0.0)
        .zip(model.chunks(2))
    {
        let var = noise_factor / w as f64;
        chi2 += ((v.re - m[0]) as f64).powi(2) / var + ((v.im - m[1]) as f64).powi(2) / var;
    }
    (chi2, model)
}
