//! Vectorisable element-wise kernels for the CPU ops of this crate, compiled twice: for the
//! baseline x86-64 target (SSE2) and for AVX2 + FMA, picked at run time.
//!
//! The crate is built for baseline x86-64, so without this the loops of the fused ops would
//! use 4-wide SSE2 only. Nothing here asks for fused multiply-adds (Rust never contracts
//! `a * b + c` on its own), so both versions give bit-identical results: the choice of
//! instruction set cannot change an output.
//!
//! Reductions keep several independent partial sums (lanes) so that the compiler may
//! vectorise them; a strict left-to-right sum is one dependent add per element, several
//! times slower, and no more accurate than the blocked sums below (which are carried to f64
//! every [`BLOCK`] elements).

/// Whether the AVX2 + FMA versions may run here (cached by `std`).
#[inline]
pub(crate) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled for AVX2 + FMA as well as for the baseline and
/// dispatched at run time. The body must be safe code; arguments are plain types or
/// references (elided lifetimes).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if $crate::prior::simd::avx2() {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Independent partial sums per reduction (two AVX2 registers of f32).
const LANES: usize = 16;
/// Elements summed in f32 before the partial sums are carried into an f64 total.
pub(crate) const BLOCK: usize = 1024;

/// `Σ f(i)` over `0..n` by lanes, in f32 within blocks of [`BLOCK`] and f64 across them.
#[inline(always)]
pub(crate) fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut total = 0f64;
    let mut b0 = 0;
    while b0 < n {
        let b1 = (b0 + BLOCK).min(n);
        let mut acc = [0f32; LANES];
        let mut i = b0;
        while i + LANES <= b1 {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += f(i + j);
            }
            i += LANES;
        }
        let mut s = 0f32;
        while i < b1 {
            s += f(i);
            i += 1;
        }
        for a in acc {
            s += a;
        }
        total += s as f64;
        b0 = b1;
    }
    total
}

/// `eˣ` to about one ulp (Cephes' `expf`: a degree-7 polynomial on `x − n ln 2` and an
/// exponent shift), branch-free so that loops over it vectorise; libm's `expf` is a call per
/// element. Arguments are clamped to [−87, 88], where the result is a normal f32.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `x − n ln 2` is exact to f32 precision.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    // 2ⁿ from the integer n = bits(t) − bits(MAGIC), n + 127 ∈ [1, 254].
    let e = (t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) as u32;
    p * f32::from_bits(e << 23)
}

/// `1 / (1 + e⁻ˣ)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        fn sum_squares(x: &[f32]) -> f64 {
            lane_sum(x.len(), |i| x[i] * x[i])
        }
    }

    /// Against f64 libm over the whole clamped range, and at the edges of the reduction.
    #[test]
    fn exp_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            let ulp = (want as f32).to_bits() as i64 - (got as f32).to_bits() as i64;
            worst = worst.max(ulp.abs() as f64);
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
        for v in [-30.0f32, -1.0, 0.0, 0.5, 20.0] {
            let s = sigmoid(v) as f64;
            let want = 1.0 / (1.0 + (-v as f64).exp());
            assert!(
                (s - want).abs() <= 2e-7 * want,
                "sigmoid({v}) = {s} vs {want}"
            );
        }
    }

    /// Blocked lane sums against an f64 sum, lengths around the lane and block sizes, and the
    /// same result from the baseline and the dispatched (AVX2 where present) versions.
    #[test]
    fn lane_sum_matches_f64_and_both_versions_agree() {
        for n in [0, 1, 15, 16, 17, 1023, 1024, 1025, 5000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
                .collect();
            let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let got = sum_squares(&x);
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1.0),
                "n {n}: {got} vs {want}"
            );
            let base = lane_sum(x.len(), |i| x[i] * x[i]);
            assert_eq!(got.to_bits(), base.to_bits(), "n {n}");
        }
    }
}
