//! The U-Net's ×2 resampling on the CPU: 2×2 average pooling and nearest-neighbour
//! upsampling, each the other's adjoint, as one parallel pass each way.
//!
//! candle runs `avg_pool2d` and the broadcast-and-copy upsampling on the calling thread only,
//! and the backward of a broadcast is a single-threaded `sum_keepdim`: together about a tenth
//! of a training step of the default prior on two cores, with the other core spinning.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::fast_conv::{f32_images, par_new};

/// `y[b, c, i, j] = scale · Σ x[b, c, 2i + di, 2j + dj]` over the 2×2 block (di, dj ∈ {0, 1}).
struct BlockSum2 {
    scale: f32,
}

/// `y[b, c, i, j] = scale · x[b, c, i / 2, j / 2]`.
struct Replicate2 {
    scale: f32,
}

impl CustomOp1 for BlockSum2 {
    fn name(&self) -> &'static str {
        "block-sum-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [b, c, h, w]) = f32_images(s, l, self.name())?;
        if h % 2 != 0 || w % 2 != 0 || h == 0 || w == 0 {
            candle_core::bail!("2×2 pooling needs even sides, at least 2, got {h}×{w}");
        }
        let (ho, wo) = (h / 2, w / 2);
        let scale = self.scale;
        let n = b * c * ho * wo;
        // SAFETY: every output element of each plane is written below.
        let y = unsafe {
            par_new(n, (b * c).max(1), |p, yp| {
                let xp = &x[p * h * w..(p + 1) * h * w];
                for (i, yr) in yp.chunks_exact_mut(wo).enumerate() {
                    let (r0, r1) = (&xp[2 * i * w..][..w], &xp[(2 * i + 1) * w..][..w]);
                    for (j, o) in yr.iter_mut().enumerate() {
                        *o = scale * ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]));
                    }
                }
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((b, c, ho, wo))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&Replicate2 { scale: self.scale })?,
        ))
    }
}

impl CustomOp1 for Replicate2 {
    fn name(&self) -> &'static str {
        "replicate-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [b, c, h, w]) = f32_images(s, l, self.name())?;
        if h == 0 || w == 0 {
            candle_core::bail!("×2 upsampling of an empty {h}×{w} image");
        }
        let scale = self.scale;
        let n = b * c * 4 * h * w;
        // SAFETY: every output element of each plane is written below.
        let y = unsafe {
            par_new(n, (b * c).max(1), |p, yp| {
                let xp = &x[p * h * w..(p + 1) * h * w];
                for (i, pair) in yp.chunks_exact_mut(4 * w).enumerate() {
                    let (r0, r1) = pair.split_at_mut(2 * w);
                    for (j, &v) in xp[i * w..(i + 1) * w].iter().enumerate() {
                        r0[2 * j] = scale * v;
                        r0[2 * j + 1] = scale * v;
                    }
                    r1.copy_from_slice(r0);
                }
            })
        };
        Ok((CpuStorage::F32(y), Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&BlockSum2 { scale: self.scale })?,
        ))
    }
}

fn fast(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !super::ops::stock_kernels()
}

/// 2×2 average pooling of (B, C, H, W), H and W even.
pub fn avg_pool2(x: &Tensor) -> Result<Tensor> {
    if fast(x) {
        x.contiguous()?.apply_op1(BlockSum2 { scale: 0.25 })
    } else {
        x.avg_pool2d(2)
    }
}

/// Nearest-neighbour ×2 upsampling of (B, C, H, W).
pub fn upsample2(x: &Tensor) -> Result<Tensor> {
    if fast(x) {
        return x.contiguous()?.apply_op1(Replicate2 { scale: 1.0 });
    }
    // A broadcast, whose backward (a sum) is exact even when the input is reused elsewhere.
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn input(shape: (usize, usize, usize, usize)) -> Var {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Outputs and input gradients against candle's stock ops, under a non-uniform loss weight.
    fn check(f: fn(&Tensor) -> Result<Tensor>, shape: (usize, usize, usize, usize)) {
        let x = input(shape);
        let y = f(x.as_tensor()).unwrap();
        super::super::ops::set_stock_kernels(true);
        let r = f(x.as_tensor()).unwrap();
        super::super::ops::set_stock_kernels(false);
        assert_eq!(y.dims(), r.dims());
        assert!(max_diff(&y, &r) < 1e-6);
        let w = (r.detach() * 0.7).unwrap().cos().unwrap();
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (r * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g.get(&x).unwrap(), gr.get(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn pooling_matches_candle_avg_pool2d() {
        check(avg_pool2, (3, 5, 8, 6));
        check(avg_pool2, (1, 1, 2, 2));
    }

    #[test]
    fn upsampling_matches_broadcast_copy() {
        check(upsample2, (3, 5, 4, 7));
        check(upsample2, (2, 1, 1, 1));
    }

    #[test]
    fn odd_sides_are_refused() {
        let x = input((1, 2, 5, 4));
        let e = avg_pool2(x.as_tensor()).unwrap_err().to_string();
        assert!(e.contains("even sides"), "{e}");
    }
}
