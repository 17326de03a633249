//! Stokes I from the correlations of a Measurement Set, following WSClean.
//!
//! What WSClean does (3.x, `MSProvider::copyData` / `MSProvider::copyWeights` in
//! `msproviders/msprovider.cpp`, e.g. AlecThomson/wsclean commit 10cce835; its manual, section
//! "Polarizations and weights", says the same):
//! - it uses XX and YY when both exist, else RR and LL; `I = (A + B) / 2`;
//! - a Stokes I sample is dropped (weight 0, value 0) when EITHER correlation is flagged or
//!   either value is not finite: no "pseudo Stokes I" from the one unflagged hand;
//! - its weight is `4 · min(w_A, w_B)`, not the inverse-variance combination
//!   `4 / (1/w_A + 1/w_B)`.
//!
//! We copy the rule and the shape of the weight (`min`), so that weighting (natural, Briggs,
//! uniform) and hence dirty images agree with WSClean's. Only the overall scale differs: we
//! return `2 · min(w_A, w_B)`, which is exactly `1/σ_I²` when `w_A = w_B` (the usual case:
//! σ_I² = (σ_A² + σ_B²)/4 = σ²/2) and a conservative lower bound on it otherwise, so that the
//! weights can also serve the likelihood as inverse variances. A global factor cancels in every
//! normalised image, so images match WSClean's regardless.
//!
//! Beyond WSClean: with a single parallel hand (only XX, only RR, ...) that correlation is used
//! as Stokes I with its own weight (it is I when the source is unpolarised), and we also drop
//! samples whose weight is not finite or not positive and rows with FLAG_ROW set.

use num_complex::Complex;

use crate::types::Correlation;

impl Correlation {
    /// From a casacore `Stokes::StokesTypes` code as stored in `CORR_TYPE`.
    pub fn from_code(code: i32) -> Correlation {
        match code {
            5 => Correlation::RR,
            6 => Correlation::RL,
            7 => Correlation::LR,
            8 => Correlation::LL,
            9 => Correlation::XX,
            10 => Correlation::XY,
            11 => Correlation::YX,
            12 => Correlation::YY,
            c => Correlation::Other(c),
        }
    }

    pub fn is_parallel_hand(&self) -> bool {
        matches!(
            self,
            Correlation::RR | Correlation::LL | Correlation::XX | Correlation::YY
        )
    }
}

/// Which correlations make Stokes I.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StokesPlan {
    /// `I = (c[a] + c[b]) / 2`.
    Pair(usize, usize),
    /// `I = c[a]`.
    Single(usize),
}

impl StokesPlan {
    /// `None` when Stokes I cannot be formed (e.g. cross hands only).
    pub(crate) fn new(corr: &[Correlation]) -> Option<StokesPlan> {
        let find = |c: Correlation| corr.iter().position(|&x| x == c);
        if let (Some(a), Some(b)) = (find(Correlation::XX), find(Correlation::YY)) {
            return Some(StokesPlan::Pair(a, b));
        }
        if let (Some(a), Some(b)) = (find(Correlation::RR), find(Correlation::LL)) {
            return Some(StokesPlan::Pair(a, b));
        }
        let mut parallel = corr
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_parallel_hand());
        match (parallel.next(), parallel.next()) {
            (Some((a, _)), None) => Some(StokesPlan::Single(a)),
            _ => None,
        }
    }
}

/// Per-correlation weights of a block: one per (row, correlation) from WEIGHT or SIGMA, or one
/// per (row, channel, correlation) from WEIGHT_SPECTRUM.
pub(crate) enum BlockWeights<'a> {
    PerRow(&'a [f32]),
    PerChannel(&'a [f32]),
}

/// One block of rows of a single data description, as read from the table: arrays are row-major
/// `(row, channel, correlation)`.
pub(crate) struct Block<'a> {
    pub n_rows: usize,
    pub n_chan: usize,
    pub n_corr: usize,
    pub data: &'a [Complex<f32>],
    /// casacore Bool bytes.
    pub flag: &'a [u8],
    /// Empty when the MS has no FLAG_ROW column.
    pub flag_row: &'a [u8],
    pub weights: BlockWeights<'a>,
}

fn finite(c: Complex<f32>) -> bool {
    c.re.is_finite() && c.im.is_finite()
}

fn usable(w: f32) -> bool {
    w.is_finite() && w > 0.0
}

/// Forms Stokes I; appends `n_rows × n_chan` values and weights. A sample that must not be used
/// gets weight exactly 0, and value 0 when its value is not finite.
pub(crate) fn combine(
    plan: StokesPlan,
    b: &Block,
    vis: &mut Vec<Complex<f32>>,
    weight: &mut Vec<f32>,
) {
    let (nc, np) = (b.n_chan, b.n_corr);
    vis.reserve(b.n_rows * nc);
    weight.reserve(b.n_rows * nc);
    for r in 0..b.n_rows {
        let row_flagged = b.flag_row.get(r).is_some_and(|&f| f != 0);
        for c in 0..nc {
            let base = (r * nc + c) * np;
            let w_of = |k: usize| match b.weights {
                BlockWeights::PerRow(w) => w[r * np + k],
                BlockWeights::PerChannel(w) => w[base + k],
            };
            let (v, w) = match plan {
                StokesPlan::Pair(ka, kb) => {
                    let (va, vb) = (b.data[base + ka], b.data[base + kb]);
                    let ok = b.flag[base + ka] == 0 && b.flag[base + kb] == 0;
                    let (wa, wb) = (w_of(ka), w_of(kb));
                    let w = if ok && finite(va) && finite(vb) && usable(wa) && usable(wb) {
                        2.0 * wa.min(wb)
                    } else {
                        0.0
                    };
                    ((va + vb) * 0.5, w)
                }
                StokesPlan::Single(ka) => {
                    let va = b.data[base + ka];
                    let wa = w_of(ka);
                    let ok = b.flag[base + ka] == 0 && finite(va) && usable(wa);
                    (va, if ok { wa } else { 0.0 })
                }
            };
            let w = if row_flagged || !w.is_finite() {
                0.0
            } else {
                w
            };
            vis.push(if finite(v) { v } else { Complex::new(0.0, 0.0) });
            weight.push(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Correlation::*;

    #[test]
    fn plans() {
        assert_eq!(
            StokesPlan::new(&[RR, RL, LR, LL]),
            Some(StokesPlan::Pair(0, 3))
        );
        assert_eq!(
            StokesPlan::new(&[XX, XY, YX, YY]),
            Some(StokesPlan::Pair(0, 3))
        );
        assert_eq!(StokesPlan::new(&[LL, RR]), Some(StokesPlan::Pair(1, 0)));
        assert_eq!(StokesPlan::new(&[YY]), Some(StokesPlan::Single(0)));
        assert_eq!(StokesPlan::new(&[RL, RR]), Some(StokesPlan::Single(1)));
        assert_eq!(StokesPlan::new(&[RL, LR]), None);
        assert_eq!(StokesPlan::new(&[XX, RR]), None);
        assert_eq!(StokesPlan::new(&[]), None);
        assert_eq!(StokesPlan::new(&[Other(1)]), None);
    }

    fn c(re: f32, im: f32) -> Complex<f32> {
        Complex::new(re, im)
    }

    #[test]
    fn pair_rules() {
        // 1 row, 5 channels, 2 correlations.
        let data = [
            c(1.0, 2.0),
            c(3.0, 4.0), // fine
            c(1.0, 0.0),
            c(1.0, 0.0), // B flagged
            c(f32::NAN, 0.0),
            c(1.0, 0.0), // A not finite
            c(2.0, 0.0),
            c(2.0, 0.0), // zero weight on B
            c(2.0, 0.0),
            c(4.0, 0.0), // unequal weights
        ];
        let flag = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let w = [1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 8.0];
        let b = Block {
            n_rows: 1,
            n_chan: 5,
            n_corr: 2,
            data: &data,
            flag: &flag,
            flag_row: &[0],
            weights: BlockWeights::PerChannel(&w),
        };
        let (mut v, mut wt) = (vec![], vec![]);
        combine(StokesPlan::Pair(0, 1), &b, &mut v, &mut wt);
        assert_eq!(v[0], c(2.0, 3.0));
        assert_eq!(wt, vec![2.0, 0.0, 0.0, 0.0, 4.0]);
        assert_eq!(v[2], c(0.0, 0.0));
        assert_eq!(v[1], c(1.0, 0.0));
        assert_eq!(v[4], c(3.0, 0.0));
    }

    #[test]
    fn flag_row_and_single() {
        let data = [c(1.0, 0.0), c(5.0, 0.0), c(2.0, 0.0), c(6.0, 0.0)];
        let flag = [0u8; 4];
        let w = [3.0, 1.0, 3.0, 1.0];
        let b = Block {
            n_rows: 2,
            n_chan: 1,
            n_corr: 2,
            data: &data,
            flag: &flag,
            flag_row: &[0, 1],
            weights: BlockWeights::PerRow(&w),
        };
        let (mut v, mut wt) = (vec![], vec![]);
        combine(StokesPlan::Single(0), &b, &mut v, &mut wt);
        assert_eq!(v, vec![c(1.0, 0.0), c(2.0, 0.0)]);
        assert_eq!(wt, vec![3.0, 0.0]);
    }
}
