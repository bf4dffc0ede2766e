//! Banzhaf power in weighted voting games.
//!
//! The game `[quota; w1..wn]`: a coalition wins when its total weight reaches `quota`. Voter i
//! *swings* for a coalition S of the others when S loses and S ∪ {i} wins. The raw Banzhaf index
//! is the share of the 2^(n−1) coalitions of the others for which i swings; the normalised index
//! divides by the sum over all voters.
//!
//! Algorithms (weights and quota are integers: tally units of 1e-9):
//! - `exact_dp`: divide weights by their GCD; when the scaled total is ≤ 65,536 and n ≤ 127,
//!   count coalitions per total weight with a generating-function DP (O(n·W)), then remove each
//!   distinct weight from the polynomial (O(W)) and sum the counts in [quota − wᵢ, quota).
//! - `exact_enumeration`: otherwise, for n ≤ 20, meet in the middle: the other voters are split
//!   in two halves, each half's 2^(n/2) subset sums are sorted and the pairs whose sum falls in
//!   [quota − wᵢ, quota) are counted with two pointers.
//! - `monte_carlo` (above 20 voters when the DP does not apply): `samples` coalitions drawn
//!   uniformly (each voter in with probability ½) from a fixed seed; one draw estimates every
//!   voter (S \ {i} is uniform over the others' coalitions). Standard error √(p(1−p)/samples).

use crate::util::SplitMix64;

/// Exact algorithms are used up to this many voters (the DP also beyond, when it applies).
pub const EXACT_MAX_VOTERS: usize = 20;
/// Coalitions drawn by the Monte-Carlo estimate.
pub const MONTE_CARLO_SAMPLES: u32 = 8192;
const DP_MAX_SCALED_TOTAL: i128 = 1 << 16;
const DP_MAX_VOTERS: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAlgorithm {
    ExactDp,
    ExactEnumeration,
    MonteCarlo,
}

impl PowerAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAlgorithm::ExactDp => "exact_dp",
            PowerAlgorithm::ExactEnumeration => "exact_enumeration",
            PowerAlgorithm::MonteCarlo => "monte_carlo",
        }
    }

    pub fn estimated(self) -> bool {
        self == PowerAlgorithm::MonteCarlo
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Power {
    /// Raw Banzhaf index (swing probability) per voter.
    pub raw: Vec<f64>,
    /// `raw / Σ raw` (all zero when nobody can swing).
    pub normalized: Vec<f64>,
    pub algorithm: PowerAlgorithm,
    /// Monte Carlo only.
    pub samples: u32,
    /// Largest standard error of a raw index (0 when exact).
    pub standard_error: f64,
}

fn normalize(raw: &[f64]) -> Vec<f64> {
    let sum: f64 = raw.iter().sum();
    if sum > 0.0 {
        raw.iter().map(|r| r / sum).collect()
    } else {
        vec![0.0; raw.len()]
    }
}

/// Banzhaf power with the algorithm chosen as the module doc says. Negative weights count as 0.
pub fn banzhaf(weights: &[i128], quota: i128, seed: u64) -> Power {
    let weights: Vec<i128> = weights.iter().map(|w| (*w).max(0)).collect();
    if let Some(raw) = banzhaf_dp(&weights, quota) {
        return exact(raw, PowerAlgorithm::ExactDp);
    }
    if weights.len() <= EXACT_MAX_VOTERS
        && let Some(raw) = banzhaf_enumeration(&weights, quota)
    {
        return exact(raw, PowerAlgorithm::ExactEnumeration);
    }
    banzhaf_monte_carlo(&weights, quota, MONTE_CARLO_SAMPLES, seed)
}

fn exact(raw: Vec<f64>, algorithm: PowerAlgorithm) -> Power {
    Power {
        normalized: normalize(&raw),
        raw,
        algorithm,
        samples: 0,
        standard_error: 0.0,
    }
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Exact raw indices by the generating-function DP, or `None` when the scaled weights are too
/// large (or there are too many voters for exact counts).
pub fn banzhaf_dp(weights: &[i128], quota: i128) -> Option<Vec<f64>> {
    let n = weights.len();
    if n == 0 {
        return Some(Vec::new());
    }
    if n > DP_MAX_VOTERS {
        return None;
    }
    let g = weights
        .iter()
        .filter(|w| **w > 0)
        .fold(0, |g, w| gcd(g, *w));
    if g == 0 {
        return Some(vec![0.0; n]); // every weight is zero: nobody can swing
    }
    let scaled: Vec<usize> = weights
        .iter()
        .map(|w| usize::try_from((*w).max(0) / g).ok())
        .collect::<Option<_>>()?;
    let total: i128 = weights
        .iter()
        .fold(0i128, |t, w| t.saturating_add((*w).max(0) / g));
    if total > DP_MAX_SCALED_TOTAL {
        return None;
    }
    let total = total as usize;
    // Smallest scaled coalition weight s with s·g ≥ quota.
    let q = if quota <= 0 {
        0
    } else {
        quota.saturating_add(g - 1) / g
    };
    if q == 0 || q > total as i128 {
        // Everyone wins already (even the empty coalition) or nobody can win: no swings.
        return Some(vec![0.0; n]);
    }
    let q = q as usize;
    // counts[x] = number of coalitions of all voters with scaled weight x.
    let mut counts = vec![0u128; total + 1];
    counts[0] = 1;
    let mut running = 0usize;
    for &w in &scaled {
        running += w;
        if w == 0 {
            counts[..=running].iter_mut().for_each(|c| *c *= 2);
            continue;
        }
        for x in (w..=running).rev() {
            counts[x] += counts[x - w];
        }
    }
    let denom = 2f64.powi(n as i32 - 1);
    let mut raw = vec![0.0; n];
    let mut without = vec![0u128; total + 1];
    let mut done: Vec<(usize, f64)> = Vec::new();
    for (i, &w) in scaled.iter().enumerate() {
        if w == 0 {
            continue;
        }
        if let Some((_, r)) = done.iter().find(|(dw, _)| *dw == w) {
            raw[i] = *r;
            continue;
        }
        // Divide the polynomial by (1 + x^w): coalitions of the others.
        for x in 0..=total {
            without[x] = if x >= w {
                counts[x] - without[x - w]
            } else {
                counts[x]
            };
        }
        let lo = q.saturating_sub(w);
        let swings: u128 = without[lo..q].iter().sum();
        let r = swings as f64 / denom;
        raw[i] = r;
        done.push((w, r));
    }
    Some(raw)
}

/// Sorted sums of every subset of `ws`.
fn subset_sums(ws: &[i128]) -> Vec<i128> {
    let mut sums = vec![0i128];
    for &w in ws {
        let shifted: Vec<i128> = sums.iter().map(|s| s.saturating_add(w)).collect();
        let mut merged = Vec::with_capacity(sums.len() * 2);
        let (mut a, mut b) = (0, 0);
        while a < sums.len() || b < shifted.len() {
            if b == shifted.len() || (a < sums.len() && sums[a] <= shifted[b]) {
                merged.push(sums[a]);
                a += 1;
            } else {
                merged.push(shifted[b]);
                b += 1;
            }
        }
        sums = merged;
    }
    sums
}

/// Number of pairs (a, b) from sorted `xs`, `ys` with a + b ≤ limit.
fn pairs_at_most(xs: &[i128], ys: &[i128], limit: i128) -> u64 {
    let mut count = 0u64;
    let mut j = ys.len();
    for &x in xs {
        while j > 0 && x.saturating_add(ys[j - 1]) > limit {
            j -= 1;
        }
        count += j as u64;
    }
    count
}

/// Exact raw indices by meet-in-the-middle enumeration (cost n·2^(n/2); [`banzhaf`] uses it up
/// to 20 voters). `None` above 40 voters.
pub fn banzhaf_enumeration(weights: &[i128], quota: i128) -> Option<Vec<f64>> {
    let n = weights.len();
    let mut raw = vec![0.0; n];
    if n > 40 {
        return None;
    }
    if n == 0 {
        return Some(raw);
    }
    let denom = 2f64.powi(n as i32 - 1);
    let mut done: Vec<(i128, f64)> = Vec::new();
    let mut others = Vec::with_capacity(n);
    for i in 0..n {
        let w = weights[i].max(0);
        if w == 0 {
            continue;
        }
        if let Some((_, r)) = done.iter().find(|(dw, _)| *dw == w) {
            raw[i] = *r;
            continue;
        }
        others.clear();
        others.extend(
            weights
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, w)| (*w).max(0)),
        );
        let (a, b) = others.split_at(others.len() / 2);
        let (sa, sb) = (subset_sums(a), subset_sums(b));
        // Swing: quota − w ≤ w(S) ≤ quota − 1.
        let hi = quota.saturating_sub(1);
        let lo = quota.saturating_sub(w);
        let swings = pairs_at_most(&sa, &sb, hi) - pairs_at_most(&sa, &sb, lo.saturating_sub(1));
        let r = swings as f64 / denom;
        raw[i] = r;
        done.push((w, r));
    }
    Some(raw)
}

/// Monte-Carlo estimate from `samples` uniformly drawn coalitions (fixed `seed`).
pub fn banzhaf_monte_carlo(weights: &[i128], quota: i128, samples: u32, seed: u64) -> Power {
    let n = weights.len();
    let samples = samples.max(1);
    let mut rng = SplitMix64::new(seed);
    let mut swings = vec![0u32; n];
    let mut member = vec![false; n];
    for _ in 0..samples {
        let mut total: i128 = 0;
        let mut bits = 0u64;
        for (i, &w) in weights.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            let inside = bits & 1 == 1;
            bits >>= 1;
            member[i] = inside;
            if inside {
                total = total.saturating_add(w.max(0));
            }
        }
        for (i, &w) in weights.iter().enumerate() {
            let w = w.max(0);
            let rest = if member[i] {
                total.saturating_sub(w)
            } else {
                total
            };
            if rest < quota && rest.saturating_add(w) >= quota {
                swings[i] += 1;
            }
        }
    }
    let raw: Vec<f64> = swings.iter().map(|s| *s as f64 / samples as f64).collect();
    let standard_error = raw
        .iter()
        .map(|p| (p * (1.0 - p) / samples as f64).sqrt())
        .fold(0.0, f64::max);
    Power {
        normalized: normalize(&raw),
        raw,
        algorithm: PowerAlgorithm::MonteCarlo,
        samples,
        standard_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_game_4_3_2_1_quota_6() {
        // [6; 4, 3, 2, 1], by hand. Voter i swings for S ⊆ others when 6 − wᵢ ≤ w(S) ≤ 5.
        // A(4): w(S) ∈ [2,5]: {B}, {C}, {B,C}, {B,D}, {C,D} → 5 of 8.
        // B(3): w(S) ∈ [3,5]: {A}, {A,D}, {C,D} → 3.   C(2): w(S) ∈ [4,5]: {A}, {A,D}, {B,D} → 3.
        // D(1): w(S) = 5: {B,C} → 1.   Normalised: 5/12, 3/12, 3/12, 1/12.
        let raw = banzhaf_dp(&[4, 3, 2, 1], 6).unwrap();
        let expect = [5.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0];
        for (r, e) in raw.iter().zip(expect) {
            assert!((r - e).abs() < 1e-12, "{raw:?}");
        }
        let en = banzhaf_enumeration(&[4, 3, 2, 1], 6).unwrap();
        assert_eq!(raw, en);
        let p = banzhaf(&[4, 3, 2, 1], 6, 1);
        assert!((p.normalized[0] - 5.0 / 12.0).abs() < 1e-12);
        assert!((p.normalized.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn dummy_and_dictator() {
        // [3; 3, 1, 1]: the first voter alone decides; the others never swing.
        let raw = banzhaf_dp(&[3, 1, 1], 3).unwrap();
        assert_eq!(raw, vec![1.0, 0.0, 0.0]);
        // Scaled weights (GCD 10^9) give the same answer.
        let u = 1_000_000_000;
        assert_eq!(banzhaf_dp(&[3 * u, u, u], 3 * u).unwrap(), raw);
    }

    #[test]
    fn equal_weights_are_symmetric() {
        let raw = banzhaf_dp(&[1; 5], 3).unwrap();
        // C(4, 2) / 2^4 = 6/16.
        assert!(raw.iter().all(|r| (*r - 6.0 / 16.0).abs() < 1e-12));
    }

    #[test]
    fn irrational_weights_use_enumeration_and_match_brute_force() {
        let ws: Vec<i128> = (0..9).map(|i| 333_333_333 + 7_919 * i * i).collect();
        let total: i128 = ws.iter().sum();
        let quota = total / 2 + 1;
        let p = banzhaf(&ws, quota, 1);
        assert_eq!(p.algorithm, PowerAlgorithm::ExactEnumeration);
        // Brute force over all 2^9 coalitions.
        let n = ws.len();
        let mut brute = vec![0u32; n];
        for mask in 0u32..(1 << n) {
            let w: i128 = (0..n).filter(|i| mask >> i & 1 == 1).map(|i| ws[i]).sum();
            for i in 0..n {
                if mask >> i & 1 == 0 && w < quota && w + ws[i] >= quota {
                    brute[i] += 1;
                }
            }
        }
        for (r, b) in p.raw.iter().zip(&brute) {
            assert!((r - *b as f64 / 256.0).abs() < 1e-12);
        }
    }

    #[test]
    fn monte_carlo_agrees_with_exact_at_twenty_voters() {
        let ws: Vec<i128> = (0..20).map(|i| 1_000 + 137 * ((i * 7) % 11)).collect();
        let total: i128 = ws.iter().sum();
        let quota = total * 3 / 5;
        let exact = banzhaf_enumeration(&ws, quota).unwrap();
        let mc = banzhaf_monte_carlo(&ws, quota, 20_000, 42);
        assert_eq!(mc.algorithm, PowerAlgorithm::MonteCarlo);
        for (e, m) in exact.iter().zip(&mc.raw) {
            // 4 standard errors of a proportion near 0.2 at 20k samples ≈ 0.012.
            assert!((e - m).abs() < 0.015, "exact {e} vs mc {m}");
        }
        let en = normalize(&exact);
        for (e, m) in en.iter().zip(&mc.normalized) {
            assert!((e - m).abs() < 0.01, "exact {e} vs mc {m}");
        }
    }

    #[test]
    fn degenerate_games() {
        assert_eq!(banzhaf_dp(&[], 1).unwrap(), Vec::<f64>::new());
        assert_eq!(banzhaf_dp(&[0, 0], 1).unwrap(), vec![0.0, 0.0]);
        assert_eq!(banzhaf_dp(&[1, 1], 5).unwrap(), vec![0.0, 0.0]); // nobody can win
        assert_eq!(banzhaf_dp(&[1, 1], 0).unwrap(), vec![0.0, 0.0]); // everyone wins
        let p = banzhaf(&[0, 0], 1, 0);
        assert_eq!(p.normalized, vec![0.0, 0.0]);
    }
}
