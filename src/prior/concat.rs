//! Concatenation along channels (the U-Net's skip connections) on the CPU, and its backward,
//! as parallel copies.
//!
//! candle's `cat` along a non-leading dimension copies on the calling thread, and its backward
//! adds a strided view of the gradient into a fresh zeroed tensor for each input.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::fast_conv::{f32_images, par_new};

/// `[a, b]` along dimension 1 of (B, C, H, W) tensors.
struct ChannelCat;

/// Channels `start .. start + len` of a (B, C, H, W) tensor, as a new contiguous tensor.
struct ChannelRange {
    start: usize,
    len: usize,
}

impl CustomOp2 for ChannelCat {
    fn name(&self) -> &'static str {
        "channel-cat"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, [b, ca, h, w]) = f32_images(s1, l1, "channel concatenation: first input")?;
        let (x, [b2, cb, h2, w2]) = f32_images(s2, l2, "channel concatenation: second input")?;
        if (b, h, w) != (b2, h2, w2) {
            candle_core::bail!(
                "channel concatenation: shapes {:?} and {:?} differ outside dimension 1",
                l1.shape(),
                l2.shape()
            );
        }
        let (na, nb) = (ca * h * w, cb * h * w);
        // SAFETY: both parts of each image's block are written.
        let y = unsafe {
            par_new(b * (na + nb), b.max(1), |i, yi| {
                yi[..na].copy_from_slice(&a[i * na..][..na]);
                yi[na..].copy_from_slice(&x[i * nb..][..nb]);
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((b, ca + cb, h, w))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (ca, c) = (a.dim(1)?, grad.dim(1)?);
        let grad = grad.contiguous()?;
        let part = |start, len| grad.apply_op1_no_bwd(&ChannelRange { start, len });
        Ok((Some(part(0, ca)?), Some(part(ca, c - ca)?)))
    }
}

impl CustomOp1 for ChannelRange {
    fn name(&self) -> &'static str {
        "channel-range"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [b, c, h, w]) = f32_images(s, l, "channel range: input")?;
        if self.start + self.len > c {
            candle_core::bail!(
                "channel range {}..{} of {c} channels",
                self.start,
                self.start + self.len
            );
        }
        let (hw, n) = (h * w, self.len * h * w);
        // SAFETY: each image's block is written whole.
        let y = unsafe {
            par_new(b * n, b.max(1), |i, yi| {
                yi.copy_from_slice(&x[(i * c + self.start) * hw..][..n]);
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((b, self.len, h, w))))
    }
}

/// `[a, b]` along the channels of (B, C, H, W) tensors.
pub fn cat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let fast = a.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && a.rank() == 4
        && !super::ops::stock_kernels();
    if fast {
        a.contiguous()?.apply_op2(&b.contiguous()?, ChannelCat)
    } else {
        Tensor::cat(&[a, b], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn var(shape: (usize, usize, usize, usize), k: usize) -> Var {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * k % 101) as f32) / 50.0 - 1.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn matches_candle_cat_forward_and_backward() {
        let (a, b) = (var((3, 2, 4, 5), 37), var((3, 5, 4, 5), 13));
        let y = cat_channels(&a, &b).unwrap();
        let r = Tensor::cat(&[a.as_tensor(), b.as_tensor()], 1).unwrap();
        assert_eq!(y.dims(), r.dims());
        let d: Vec<f32> = (&y - &r).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(d.iter().all(|&v| v == 0.0));
        let w = (r.detach() * 0.3).unwrap().sin().unwrap();
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (r * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            let d = (g.get(v).unwrap() - gr.get(v).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0);
        }
    }

    #[test]
    fn mismatched_images_are_refused() {
        let (a, b) = (var((3, 2, 4, 5), 37), var((3, 5, 4, 6), 13));
        let e = cat_channels(&a, &b).unwrap_err().to_string();
        assert!(e.contains("differ outside dimension 1"), "{e}");
    }
}
