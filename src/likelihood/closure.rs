//! Closure quantities: the parts of the visibilities that station gains cannot change, as VLBI
//! imaging fits them (ehtim, Comrade.jl; Blackburn et al. 2020, ApJ 894, 31).
//!
//! - Closure phase of a triangle `(a, b, c)`: `arg(V_ab V_bc V_ca)`, free of station phases.
//! - Log closure amplitude of a quadrangle `(a, b, c, d)`: `ln |V_ab| |V_cd| / (|V_ac| |V_bd|)`,
//!   free of station amplitudes.
//!
//! At each time stamp only a non-redundant set is kept: with N stations and every baseline,
//! `(N−1)(N−2)/2` closure phases and `N(N−3)/2` log closure amplitudes. The set is chosen
//! greedily: a closure is kept when its coefficients over the baselines (±1 per baseline) are
//! linearly independent of those already kept, so a missing baseline costs only the closures
//! that need it. Variances are the linearised thermal ones, `Σ (σ/|V|)²` over the baselines of
//! the closure, with σ per real component.

use std::collections::BTreeMap;

use ms_io::VisChunk;
use num_complex::Complex;

/// One closure phase (radians) at one time stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosurePhase {
    pub time: f64,
    pub stations: [i32; 3],
    /// Visibility index (into the chunk's `rows × channels` layout) and sign of each baseline:
    /// `+1` when the visibility is `V_ab` as ordered in the triangle, `−1` when it is `V_ba`.
    pub terms: [(usize, i8); 3],
    pub value: f64,
    pub sigma: f64,
}

/// One log closure amplitude at one time stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct LogClosureAmplitude {
    pub time: f64,
    pub stations: [i32; 4],
    /// Visibility index and sign: `+1` in the numerator, `−1` in the denominator.
    pub terms: [(usize, i8); 4],
    pub value: f64,
    pub sigma: f64,
}

/// Greedy independence test over baseline-space vectors (modified Gram–Schmidt).
struct Basis {
    dim: usize,
    rows: Vec<Vec<f64>>,
}

impl Basis {
    fn new(dim: usize) -> Self {
        Basis {
            dim,
            rows: Vec::new(),
        }
    }

    /// Adds `v` when it is independent of the basis; returns whether it was.
    fn try_add(&mut self, mut v: Vec<f64>) -> bool {
        if self.rows.len() >= self.dim {
            return false;
        }
        for b in &self.rows {
            let p: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n < 1e-9 {
            return false;
        }
        v.iter_mut().for_each(|x| *x /= n);
        self.rows.push(v);
        true
    }
}

/// The usable visibilities of one time stamp on channel `ch`: per baseline (a < b), the index
/// and whether it is stored as `V_ab` (`true`) or `V_ba`.
type Snapshot = BTreeMap<(i32, i32), (usize, bool)>;

fn snapshots(c: &VisChunk, ch: usize) -> Vec<(f64, Snapshot)> {
    let mut by_time: BTreeMap<u64, (f64, Snapshot)> = BTreeMap::new();
    let nc = c.n_chan();
    for r in 0..c.n_rows() {
        let (a, b) = (c.antenna1[r], c.antenna2[r]);
        let k = r * nc + ch;
        if a == b || c.weight[k] <= 0.0 || c.vis[k].norm() == 0.0 {
            continue;
        }
        let key = if a < b { (a, b) } else { (b, a) };
        by_time
            .entry(c.time[r].to_bits())
            .or_insert_with(|| (c.time[r], Snapshot::new()))
            .1
            .insert(key, (k, a < b));
    }
    by_time.into_values().collect()
}

/// `σ/|V|` per real component of visibility `k` with `σ² = noise_factor / w`.
fn rel_sigma(c: &VisChunk, k: usize, noise_factor: f64) -> f64 {
    (noise_factor / c.weight[k] as f64).sqrt() / c.vis[k].norm() as f64
}

/// `(index, sign)` of baseline `(p, q)` taken in the order p → q.
fn oriented(s: &Snapshot, p: i32, q: i32) -> Option<(usize, i8)> {
    let key = if p < q { (p, q) } else { (q, p) };
    s.get(&key).map(|&(k, stored_pq)| {
        let as_pq = stored_pq == (p < q);
        (k, if as_pq { 1 } else { -1 })
    })
}

/// The stations of a snapshot, the best-connected first (the reference of the closure set).
fn stations(s: &Snapshot) -> (Vec<i32>, BTreeMap<(i32, i32), usize>) {
    let mut count: BTreeMap<i32, usize> = BTreeMap::new();
    for &(a, b) in s.keys() {
        *count.entry(a).or_default() += 1;
        *count.entry(b).or_default() += 1;
    }
    let mut st: Vec<i32> = count.keys().copied().collect();
    st.sort_by_key(|a| std::cmp::Reverse(count[a]));
    let col = s.keys().enumerate().map(|(i, &k)| (k, i)).collect();
    (st, col)
}

/// Non-redundant closure phases of channel `ch`, σ² per real component `noise_factor / w`.
pub fn closure_phases(c: &VisChunk, ch: usize, noise_factor: f64) -> Vec<ClosurePhase> {
    let mut out = Vec::new();
    for (time, s) in snapshots(c, ch) {
        let (st, col) = stations(&s);
        let mut basis = Basis::new(s.len());
        // Triangles through the reference station first, then the rest.
        for i in 0..st.len() {
            for j in i + 1..st.len() {
                for k in j + 1..st.len() {
                    let (a, b, d) = (st[i], st[j], st[k]);
                    let (Some(t1), Some(t2), Some(t3)) =
                        (oriented(&s, a, b), oriented(&s, b, d), oriented(&s, d, a))
                    else {
                        continue;
                    };
                    let mut v = vec![0.0; s.len()];
                    for (p, q, t) in [(a, b, t1), (b, d, t2), (d, a, t3)] {
                        let key = if p < q { (p, q) } else { (q, p) };
                        v[col[&key]] = t.1 as f64;
                    }
                    if !basis.try_add(v) {
                        continue;
                    }
                    let prod: Complex<f64> = [t1, t2, t3]
                        .iter()
                        .map(|&(k, sgn)| {
                            let z = Complex::new(c.vis[k].re as f64, c.vis[k].im as f64);
                            if sgn > 0 {
                                z
                            } else {
                                z.conj()
                            }
                        })
                        .product();
                    let sigma = [t1, t2, t3]
                        .iter()
                        .map(|&(k, _)| rel_sigma(c, k, noise_factor).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    out.push(ClosurePhase {
                        time,
                        stations: [a, b, d],
                        terms: [t1, t2, t3],
                        value: prod.arg(),
                        sigma,
                    });
                }
            }
        }
    }
    out
}

/// Non-redundant log closure amplitudes of channel `ch`.
pub fn log_closure_amplitudes(
    c: &VisChunk,
    ch: usize,
    noise_factor: f64,
) -> Vec<LogClosureAmplitude> {
    let mut out = Vec::new();
    for (time, s) in snapshots(c, ch) {
        let (st, col) = stations(&s);
        let mut basis = Basis::new(s.len());
        let n = st.len();
        for i in 0..n {
            for j in i + 1..n {
                for k in j + 1..n {
                    for l in k + 1..n {
                        // The three pairings of four stations: ab·cd / (ac·bd) and its kin.
                        let (a, b, cc, d) = (st[i], st[j], st[k], st[l]);
                        for [p, q, r, t] in [[a, b, cc, d], [a, cc, b, d], [a, d, b, cc]] {
                            let terms = [
                                (oriented(&s, p, q), 1i8),
                                (oriented(&s, r, t), 1),
                                (oriented(&s, p, r), -1),
                                (oriented(&s, q, t), -1),
                            ];
                            if terms.iter().any(|(x, _)| x.is_none()) {
                                continue;
                            }
                            let mut v = vec![0.0; s.len()];
                            for ((x, y), sgn) in
                                [((p, q), 1.0), ((r, t), 1.0), ((p, r), -1.0), ((q, t), -1.0)]
                            {
                                let key = if x < y { (x, y) } else { (y, x) };
                                v[col[&key]] = sgn;
                            }
                            if !basis.try_add(v) {
                                continue;
                            }
                            let terms = terms.map(|(x, sgn)| (x.expect("checked").0, sgn));
                            let value = terms
                                .iter()
                                .map(|&(k, sgn)| sgn as f64 * (c.vis[k].norm() as f64).ln())
                                .sum();
                            let sigma = terms
                                .iter()
                                .map(|&(k, _)| rel_sigma(c, k, noise_factor).powi(2))
                                .sum::<f64>()
                                .sqrt();
                            out.push(LogClosureAmplitude {
                                time,
                                stations: [p, q, r, t],
                                terms,
                                value,
                                sigma,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// `n` stations, `times` snapshots, every baseline, random sky visibilities; some rows
    /// stored as (b, a) to exercise the orientation.
    fn observation(n: i32, times: usize, seed: u64) -> VisChunk {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut c = VisChunk {
            freq: vec![1e9],
            ..Default::default()
        };
        for t in 0..times {
            for a in 0..n {
                for b in a + 1..n {
                    let flip = rng.random_bool(0.3);
                    let v = Complex::from_polar(
                        rng.random_range(0.5f32..5.0),
                        rng.random_range(-3.0f32..3.0),
                    );
                    c.uvw.push([0.0; 3]);
                    c.antenna1.push(if flip { b } else { a });
                    c.antenna2.push(if flip { a } else { b });
                    c.time.push(100.0 * t as f64);
                    // V_ba = conj(V_ab).
                    c.vis.push(if flip { v.conj() } else { v });
                    c.weight.push(rng.random_range(10.0f32..100.0));
                }
            }
        }
        c
    }

    /// Applies station gains: V_ab ← g_a conj(g_b) V_ab for each stored orientation.
    fn corrupt(c: &mut VisChunk, seed: u64, phase_only: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut gains: BTreeMap<(u64, i32), Complex<f32>> = BTreeMap::new();
        for r in 0..c.n_rows() {
            let mut g = |a: i32| {
                *gains.entry((c.time[r].to_bits(), a)).or_insert_with(|| {
                    let amp = if phase_only {
                        1.0
                    } else {
                        rng.random_range(0.5f32..2.0)
                    };
                    Complex::from_polar(amp, rng.random_range(-3.1f32..3.1))
                })
            };
            let (ga, gb) = (g(c.antenna1[r]), g(c.antenna2[r]));
            c.vis[r] *= ga * gb.conj();
        }
    }

    #[test]
    fn counts_match_the_non_redundant_formulas() {
        for n in [3, 4, 5, 7, 10] {
            let c = observation(n, 3, n as u64);
            let n = n as usize;
            assert_eq!(closure_phases(&c, 0, 1.0).len(), 3 * (n - 1) * (n - 2) / 2);
            assert_eq!(
                log_closure_amplitudes(&c, 0, 1.0).len(),
                3 * n * (n - 3) / 2
            );
        }
        // One baseline missing at 6 stations: 14 baselines, so 14 − 5 closure phases (the
        // station phases less one) and 14 − 6 log closure amplitudes.
        let mut c = observation(6, 1, 9);
        let r = (0..c.n_rows())
            .find(|&r| {
                c.antenna1[r].min(c.antenna2[r]) == 1 && c.antenna1[r].max(c.antenna2[r]) == 4
            })
            .unwrap();
        c.weight[r] = 0.0;
        assert_eq!(closure_phases(&c, 0, 1.0).len(), 10 - 1);
        assert_eq!(log_closure_amplitudes(&c, 0, 1.0).len(), 9 - 1);
    }

    #[test]
    fn closure_phases_ignore_station_phases_and_amplitudes_ignore_gains() {
        let c = observation(8, 4, 1);
        let mut g = c.clone();
        corrupt(&mut g, 2, false);
        let (p0, p1) = (closure_phases(&c, 0, 1.0), closure_phases(&g, 0, 1.0));
        assert_eq!(p0.len(), p1.len());
        for (a, b) in p0.iter().zip(&p1) {
            let d = (a.value - b.value + std::f64::consts::PI)
                .rem_euclid(2.0 * std::f64::consts::PI)
                - std::f64::consts::PI;
            assert!(d.abs() < 1e-4, "closure phase moved by {d}");
        }
        let (l0, l1) = (
            log_closure_amplitudes(&c, 0, 1.0),
            log_closure_amplitudes(&g, 0, 1.0),
        );
        assert_eq!(l0.len(), l1.len());
        for (a, b) in l0.iter().zip(&l1) {
            assert!(
                (a.value - b.value).abs() < 1e-4,
                "{} vs {}",
                a.value,
                b.value
            );
        }
        // Not trivially invariant: the visibilities' own phases and amplitudes did change.
        assert!(c
            .vis
            .iter()
            .zip(&g.vis)
            .any(|(a, b)| (a.arg() - b.arg()).abs() > 0.1));
    }

    #[test]
    fn values_and_variances_by_hand() {
        let c = observation(4, 1, 5);
        let v = |p: i32, q: i32| {
            let r = (0..c.n_rows())
                .find(|&r| {
                    (c.antenna1[r], c.antenna2[r]) == (p, q)
                        || (c.antenna1[r], c.antenna2[r]) == (q, p)
                })
                .unwrap();
            let z = Complex::new(c.vis[r].re as f64, c.vis[r].im as f64);
            let s = (2.0 / c.weight[r] as f64).sqrt() / z.norm();
            (if c.antenna1[r] == p { z } else { z.conj() }, s)
        };
        let cp = &closure_phases(&c, 0, 2.0)[0];
        let [a, b, d] = cp.stations;
        let ((x, sx), (y, sy), (z, sz)) = (v(a, b), v(b, d), v(d, a));
        let d_phase = ((x * y * z).arg() - cp.value).abs();
        assert!(d_phase < 1e-9, "{d_phase}");
        assert!((cp.sigma / (sx * sx + sy * sy + sz * sz).sqrt() - 1.0).abs() < 1e-6);
        let la = &log_closure_amplitudes(&c, 0, 2.0)[0];
        let [p, q, r, t] = la.stations;
        let expect = v(p, q).0.norm().ln() + v(r, t).0.norm().ln()
            - v(p, r).0.norm().ln()
            - v(q, t).0.norm().ln();
        assert!((la.value - expect).abs() < 1e-6, "{} vs {expect}", la.value);
    }
}

/// `χ²` of an image against closure phases and log closure amplitudes through an operator
/// whose data are `[re, im]` per visibility in the chunk's `rows × channels` order (a NUFFT
/// built without a mask), and the gradient of `log L = −χ²/2` with respect to the image.
/// Closure phases enter through their wrapped difference, so a 2π jump costs nothing.
pub struct ClosureLikelihood<A> {
    op: A,
    phases: Vec<ClosurePhase>,
    amplitudes: Vec<LogClosureAmplitude>,
    /// `Γ_k`: a visibility's variance per unit variance of every pixel (the operator's
    /// `diag(A Aᵀ)` on its real part), for the widening at a noisy diffusion state.
    gamma: Vec<f64>,
    /// Closures are blind to the total flux: a Gaussian constraint on `Σ x`, `(total, σ)` in
    /// image units, as VLBI imagers add one (ehtim's `flux`/`zbl` term).
    total_flux: Option<(f64, f64)>,
    noise_scale: f64,
}

impl<A: crate::operator::ForwardOperator> ClosureLikelihood<A> {
    pub fn new(
        op: A,
        phases: Vec<ClosurePhase>,
        amplitudes: Vec<LogClosureAmplitude>,
    ) -> Result<Self, super::LikelihoodError> {
        let n_vis = op.data_len() / 2;
        let worst = phases
            .iter()
            .flat_map(|c| c.terms.iter().map(|t| t.0))
            .chain(amplitudes.iter().flat_map(|c| c.terms.iter().map(|t| t.0)))
            .max();
        if let Some(k) = worst.filter(|&k| k >= n_vis) {
            return Err(super::LikelihoodError::Length {
                what: "closure visibilities (the operator must cover every visibility)",
                expected: n_vis,
                got: k + 1,
            });
        }
        let diag = op.diag_aat();
        let gamma = (0..n_vis).map(|k| diag[2 * k] as f64).collect();
        Ok(ClosureLikelihood {
            op,
            phases,
            amplitudes,
            gamma,
            total_flux: None,
            noise_scale: f64::INFINITY,
        })
    }

    /// Adds a Gaussian constraint `Σ x ~ N(total, σ²)` (image units).
    pub fn with_total_flux(mut self, total: f64, sigma: f64) -> Self {
        self.total_flux = Some((total, sigma));
        self
    }

    /// The image-domain noise scale the sampler carries the diffusion down to (see
    /// [`LikelihoodScore::data_noise_scale`]); unknown (∞) by default.
    pub fn with_noise_scale(mut self, scale: f64) -> Self {
        self.noise_scale = scale;
        self
    }

    /// Closure phases and log closure amplitudes held.
    pub fn counts(&self) -> (usize, usize) {
        (self.phases.len(), self.amplitudes.len())
    }

    pub fn n_closures(&self) -> usize {
        self.phases.len() + self.amplitudes.len()
    }

    /// `χ²`, and `∂ log L / ∂x` into `grad` (overwritten).
    pub fn chi2_and_gradient(&self, x: &[f32], grad: &mut [f32]) -> f64 {
        self.widened_chi2_and_gradient(x, 0.0, grad)
    }

    /// [`Self::chi2_and_gradient`] with every pixel uncertain by `r` (image units, as DPS's
    /// denoised estimate is): each visibility's variance grows by `r² Γ_k`, and the closures'
    /// linearised variances by `r² Γ_k / |V_k|²` per term, as the convolved approximation
    /// widens the Gaussian likelihood. The total-flux term is widened by `r² N`. The
    /// variances are held fixed in the gradient (their dependence on `|V_k|` is not
    /// differentiated), as for the linearised variances at `r = 0`.
    pub fn widened_chi2_and_gradient(&self, x: &[f32], r: f64, grad: &mut [f32]) -> f64 {
        let r2 = r * r;
        let mut data = vec![0.0f32; self.op.data_len()];
        self.op.forward(x, &mut data);
        let v = |k: usize| Complex::new(data[2 * k] as f64, data[2 * k + 1] as f64);
        let mut g = vec![0.0f32; data.len()];
        let mut chi2 = 0.0;
        let pi = std::f64::consts::PI;
        for c in &self.phases {
            let model: f64 = c.terms.iter().map(|&(k, s)| s as f64 * v(k).arg()).sum();
            let s2 = c.sigma * c.sigma + r2 * self.widening(&c.terms, &v);
            let r = (c.value - model + pi).rem_euclid(2.0 * pi) - pi;
            chi2 += r * r / s2;
            // d log L / d model = r/σ²; d arg z / d(re, im) = (−im, re)/|z|².
            let f = r / s2;
            for &(k, s) in &c.terms {
                let z = v(k);
                let n2 = z.norm_sqr().max(1e-300);
                g[2 * k] += (f * s as f64 * -z.im / n2) as f32;
                g[2 * k + 1] += (f * s as f64 * z.re / n2) as f32;
            }
        }
        for c in &self.amplitudes {
            let model: f64 = c
                .terms
                .iter()
                .map(|&(k, s)| s as f64 * v(k).norm().max(1e-300).ln())
                .sum();
            let s2 = c.sigma * c.sigma + r2 * self.widening(&c.terms, &v);
            let r = c.value - model;
            chi2 += r * r / s2;
            // d ln|z| / d(re, im) = (re, im)/|z|².
            let f = r / s2;
            for &(k, s) in &c.terms {
                let z = v(k);
                let n2 = z.norm_sqr().max(1e-300);
                g[2 * k] += (f * s as f64 * z.re / n2) as f32;
                g[2 * k + 1] += (f * s as f64 * z.im / n2) as f32;
            }
        }
        self.op.adjoint(&g, grad);
        if let Some((total, sigma)) = self.total_flux {
            let s2 = sigma * sigma + r2 * x.len() as f64;
            let d = total - x.iter().map(|&p| p as f64).sum::<f64>();
            chi2 += d * d / s2;
            grad.iter_mut().for_each(|g| *g += (d / s2) as f32);
        }
        chi2
    }

    /// `Σ Γ_k / |V_k|²` over a closure's terms: its linearised variance per unit pixel variance.
    fn widening(&self, terms: &[(usize, i8)], v: &impl Fn(usize) -> Complex<f64>) -> f64 {
        terms
            .iter()
            .map(|&(k, _)| self.gamma[k] / v(k).norm_sqr().max(1e-300))
            .sum()
    }

    pub fn reduced_chi2(&self, x: &[f32]) -> f64 {
        let mut grad = vec![0.0f32; x.len()];
        let flux = self.total_flux.map(|(t, s)| {
            let d = t - x.iter().map(|&p| p as f64).sum::<f64>();
            d * d / (s * s)
        });
        (self.chi2_and_gradient(x, &mut grad) - flux.unwrap_or(0.0))
            / self.n_closures().max(1) as f64
    }
}

/// The closure likelihood at a diffusion state `x_t = μ_t x + σ_t z`: evaluated at `x_t/μ_t`
/// with every pixel uncertain by `σ_t/μ_t` (the convolved approximation's widening, applied
/// to the linearised closures). DPS calls it at its denoised estimate with `μ = 1`.
impl<A: crate::operator::ForwardOperator + Sync> super::LikelihoodScore for ClosureLikelihood<A> {
    fn image_shape(&self) -> [usize; 2] {
        self.op.image_shape()
    }

    fn score_t(
        &self,
        x_t: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grad: &mut [f32],
    ) -> Result<(), super::LikelihoodError> {
        let mu = mu_t.max(f32::MIN_POSITIVE);
        let x: Vec<f32> = x_t.iter().map(|&v| v / mu).collect();
        self.widened_chi2_and_gradient(&x, (sigma_t / mu) as f64, grad);
        grad.iter_mut().for_each(|g| *g /= mu);
        Ok(())
    }

    fn data_noise_scale(&self) -> f64 {
        self.noise_scale
    }

    fn reduced_chi2(&self, x: &[f32]) -> f64 {
        ClosureLikelihood::reduced_chi2(self, x)
    }
}

#[cfg(test)]
mod likelihood_tests {
    use super::*;
    use crate::operator::{ForwardOperator, ImageGeometry, Nufft, NufftOptions};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Seven stations on an east-west-ish array, 6 snapshots of earth rotation; the data are
    /// the NUFFT of a known sky, corrupted by station gains.
    fn setup() -> (Nufft, VisChunk, Vec<f32>) {
        let mut rng = StdRng::seed_from_u64(11);
        let pos: Vec<[f64; 2]> = (0..7)
            .map(|_| [rng.random_range(-3e3..3e3), rng.random_range(-2e3..2e3)])
            .collect();
        let mut c = VisChunk {
            freq: vec![1.4e9],
            ..Default::default()
        };
        for t in 0..6 {
            let h = 0.3 * t as f64;
            for a in 0..7 {
                for b in a + 1..7 {
                    let (dx, dy) = (pos[b][0] - pos[a][0], pos[b][1] - pos[a][1]);
                    c.uvw.push([
                        dx * h.cos() - dy * h.sin(),
                        dx * h.sin() + dy * h.cos(),
                        0.0,
                    ]);
                    c.antenna1.push(a as i32);
                    c.antenna2.push(b as i32);
                    c.time.push(60.0 * t as f64);
                    c.weight.push(50.0);
                }
            }
        }
        let g = ImageGeometry::new(16, 16, 2e-5, 2e-5).unwrap();
        let op = Nufft::new(g, &c.uvw, &c.freq, None, &NufftOptions::default()).unwrap();
        let mut sky = vec![0.0f32; 256];
        sky[8 * 16 + 8] = 3.0;
        sky[5 * 16 + 10] = 1.5;
        sky[11 * 16 + 4] = 0.8;
        let mut d = vec![0.0f32; op.data_len()];
        op.forward(&sky, &mut d);
        c.vis = d.chunks(2).map(|p| Complex::new(p[0], p[1])).collect();
        // Station gains per snapshot: closures must not see them.
        let gains: Vec<Complex<f32>> = (0..42)
            .map(|_| {
                Complex::from_polar(
                    rng.random_range(0.7f32..1.4),
                    rng.random_range(-3.0f32..3.0),
                )
            })
            .collect();
        for r in 0..c.n_rows() {
            let t = (c.time[r] / 60.0) as usize;
            let (a, b) = (c.antenna1[r] as usize, c.antenna2[r] as usize);
            c.vis[r] *= gains[t * 7 + a] * gains[t * 7 + b].conj();
        }
        (op, c, sky)
    }

    #[test]
    fn the_true_sky_fits_gain_corrupted_data_exactly() {
        let (op, c, sky) = setup();
        let lik = ClosureLikelihood::new(
            &op,
            closure_phases(&c, 0, 1.0),
            log_closure_amplitudes(&c, 0, 1.0),
        )
        .unwrap();
        assert_eq!(lik.n_closures(), 6 * (15 + 14));
        let at_truth = lik.reduced_chi2(&sky);
        let mut other = sky.clone();
        other[5 * 16 + 10] = 0.5;
        let elsewhere = lik.reduced_chi2(&other);
        assert!(at_truth < 1e-4, "χ² {at_truth} at the true sky");
        assert!(
            elsewhere > 100.0 * at_truth.max(1e-6),
            "χ² {elsewhere} at a wrong sky"
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (op, c, sky) = setup();
        let lik = ClosureLikelihood::new(
            &op,
            closure_phases(&c, 0, 1.0),
            log_closure_amplitudes(&c, 0, 1.0),
        )
        .unwrap();
        // Away from the truth, with some emission everywhere so no visibility vanishes.
        let mut rng = StdRng::seed_from_u64(3);
        let x: Vec<f32> = sky
            .iter()
            .map(|&v| v + rng.random_range(0.0f32..0.2))
            .collect();
        let mut grad = vec![0.0f32; 256];
        lik.chi2_and_gradient(&x, &mut grad);
        let mut scratch = vec![0.0f32; 256];
        for &p in &[8 * 16 + 8, 5 * 16 + 10, 3 * 16 + 3, 12 * 16 + 13] {
            let h = 1e-3f32;
            let (mut up, mut down) = (x.clone(), x.clone());
            up[p] += h;
            down[p] -= h;
            let fd = -(lik.chi2_and_gradient(&up, &mut scratch)
                - lik.chi2_and_gradient(&down, &mut scratch))
                / (2.0 * 2.0 * h as f64);
            let rel = (grad[p] as f64 - fd).abs() / fd.abs().max(1.0);
            assert!(
                rel < 2e-2,
                "pixel {p}: gradient {} vs finite differences {fd}",
                grad[p]
            );
        }
        assert!(ClosureLikelihood::new(&op, closure_phases(&c, 0, 1.0), vec![]).is_ok());
    }

    /// The total-flux term: its gradient against finite differences, and it fixes the scale
    /// the closures leave free (a brighter copy of the truth fits the closures exactly).
    #[test]
    fn total_flux_term_pins_the_scale() {
        let (op, c, sky) = setup();
        let total: f64 = sky.iter().map(|&v| v as f64).sum();
        let lik = ClosureLikelihood::new(
            &op,
            closure_phases(&c, 0, 1.0),
            log_closure_amplitudes(&c, 0, 1.0),
        )
        .unwrap()
        .with_total_flux(total, 0.01 * total);
        let brighter: Vec<f32> = sky.iter().map(|&v| 1.2 * v).collect();
        let mut g = vec![0.0f32; 256];
        let chi_truth = lik.chi2_and_gradient(&sky, &mut g);
        let chi_bright = lik.chi2_and_gradient(&brighter, &mut g);
        assert!(chi_truth < 1e-3, "{chi_truth}");
        // (0.2 total / 0.01 total)² = 400.
        assert!((chi_bright - 400.0).abs() < 1.0, "{chi_bright}");
        // The reduced χ² is the closures' alone.
        assert!(lik.reduced_chi2(&brighter) < 1e-4);
        let mut scratch = vec![0.0f32; 256];
        let p = 3 * 16 + 3;
        let h = 1e-3f32;
        let (mut up, mut down) = (brighter.clone(), brighter.clone());
        up[p] += h;
        down[p] -= h;
        let fd = -(lik.chi2_and_gradient(&up, &mut scratch)
            - lik.chi2_and_gradient(&down, &mut scratch))
            / (4.0 * h as f64);
        assert!(
            (g[p] as f64 - fd).abs() < 1e-2 * fd.abs().max(1.0),
            "{} vs {fd}",
            g[p]
        );
    }

    /// As a sampler's likelihood: at `σ_t = 0` the score is the exact gradient, at `x_t = μ x`
    /// it is the gradient at `x` over `μ`, and a noisy state widens the closures (smaller χ²,
    /// a smaller pull).
    #[test]
    fn score_at_a_diffusion_state() {
        use crate::likelihood::LikelihoodScore;
        let (op, c, sky) = setup();
        let lik = ClosureLikelihood::new(
            &op,
            closure_phases(&c, 0, 1.0),
            log_closure_amplitudes(&c, 0, 1.0),
        )
        .unwrap();
        let x: Vec<f32> = sky.iter().map(|&v| v + 0.1).collect();
        let mut exact = vec![0.0f32; 256];
        lik.chi2_and_gradient(&x, &mut exact);
        let mut g = vec![0.0f32; 256];
        lik.score_t(&x, 1.0, 0.0, &mut g).unwrap();
        assert_eq!(g, exact);
        let x_t: Vec<f32> = x.iter().map(|&v| 2.0 * v).collect();
        lik.score_t(&x_t, 2.0, 0.0, &mut g).unwrap();
        for (a, b) in g.iter().zip(&exact) {
            assert!(
                (a - b / 2.0).abs() <= 1e-4 * b.abs().max(1.0),
                "{a} vs {}",
                b / 2.0
            );
        }
        let mut wide = vec![0.0f32; 256];
        let chi_wide = lik.widened_chi2_and_gradient(&x, 0.05, &mut wide);
        let chi = lik.chi2_and_gradient(&x, &mut g);
        assert!(chi_wide < chi, "{chi_wide} vs {chi}");
        let norm = |v: &[f32]| v.iter().map(|a| (a * a) as f64).sum::<f64>().sqrt();
        assert!(norm(&wide) < norm(&exact));
    }
}
