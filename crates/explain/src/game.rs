//! The debate's votes as a game over candidate indices, for fast "what if this vote changed"
//! questions. Every decision goes through the core rule's own pieces
//! (`rank_order`, `top_reaches_consensus`) on exact fixed-point sums, so a hypothetical here
//! agrees with `aragora_core::consensus::decide` on the same modified votes (the tests check it
//! on thousands of random debates). Reported counterfactuals are still recounted with the core.

use std::cmp::Ordering;

use aragora_core::consensus::{
    Sums, VoteUnits, effective_threshold, rank_order, share, share_meets, top_reaches_consensus,
};
use aragora_core::debate::{ConsensusConfig, ConsensusMode};

#[derive(Debug, Clone, Copy)]
pub struct GameVote {
    pub cand: usize,
    pub units: VoteUnits,
}

/// The discrete outcome: who wins (candidate index) and whether consensus is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disc {
    pub winner: Option<usize>,
    pub reached: bool,
}

pub struct Game<'a> {
    pub config: &'a ConsensusConfig,
    pub cands: &'a [&'a str],
    pub votes: Vec<GameVote>,
    pub base: Vec<Sums>,
    /// Candidates with at least one vote, in ranking order (winner first).
    pub order: Vec<usize>,
    /// Candidates without votes, by name (the alternatives a flip can create).
    pub idle: Vec<usize>,
    pub total: i128,
    pub distinct: usize,
    /// Judge mode: the judge's choice.
    pub judge: Option<usize>,
    pub outcome: Disc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoteFlags {
    pub removal_changes: bool,
    pub flip_changes: bool,
    /// A choice whose adoption by this voter changes the outcome (winner change preferred).
    pub flip_to: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipProof {
    /// Every smaller set (and every target) was tried.
    ExactSearch,
    /// The greedy set's size equals a lower bound, so it is minimal.
    LowerBound,
    /// Greedy result; smaller sets were not ruled out (above 20 voters or over the work budget).
    UpperBound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlipSet {
    Found {
        voters: Vec<usize>,
        target: usize,
        after: Disc,
        proof: FlipProof,
    },
    Impossible(&'static str),
}

/// Exact flip-set search runs up to this many voters.
pub const EXACT_FLIP_MAX_VOTERS: usize = 20;
/// Upper bound on hypothetical outcomes evaluated by the exact flip-set search.
const FLIP_SEARCH_BUDGET: u64 = 2_000_000;

type Changes = Vec<(usize, Sums)>;

fn set_change(changes: &mut Changes, cand: usize, base: &Sums, f: impl FnOnce(&mut Sums)) {
    match changes.iter_mut().find(|(c, _)| *c == cand) {
        Some((_, s)) => f(s),
        None => {
            let mut s = *base;
            f(&mut s);
            changes.push((cand, s));
        }
    }
}

/// Smallest weight x in [0, total] whose share reaches `threshold` under the core rule
/// (`share_meets(x / total, threshold)`), total + 1 when none does.
///
/// Exact for every total: `share(x, total)` is non-decreasing in x, so the predicate is monotone
/// and a bisection over [0, total] finds the boundary in at most 128 steps. (An earlier version
/// walked at most 64 units from a float guess that sits about total·1e-9 units below the
/// boundary, so it gave up — returning total + 1, an unreachable quota — once the total weight
/// exceeded 64.)
pub fn min_winning_weight(total: i128, threshold: f64) -> i128 {
    if total <= 0 {
        return 1;
    }
    let passes = |x: i128| share_meets(share(x, total), threshold);
    if !passes(total) {
        return total.saturating_add(1);
    }
    // Invariant: passes(hi); every x < lo fails.
    let (mut lo, mut hi) = (0i128, total);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if passes(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// The weighted game for the Banzhaf index: a coalition backing one choice against the rest
/// united behind another reaches consensus when its weight is at least this quota. `None` in
/// judge mode or without vote weight.
pub fn consensus_quota(config: &ConsensusConfig, total: i128) -> Option<i128> {
    if total <= 0 {
        return None;
    }
    match config.mode {
        ConsensusMode::Judge => None,
        ConsensusMode::Unanimous => Some(total),
        _ => {
            let t = effective_threshold(config)?;
            // Strictly more than the rest (a tie never reaches consensus).
            Some(min_winning_weight(total, t).max(total / 2 + 1))
        }
    }
}

impl<'a> Game<'a> {
    pub fn new(
        config: &'a ConsensusConfig,
        cands: &'a [&'a str],
        votes: Vec<GameVote>,
        judge: Option<usize>,
    ) -> Self {
        let mut base = vec![Sums::default(); cands.len()];
        let mut total: i128 = 0;
        for v in &votes {
            base[v.cand].add(v.units);
            total = total.saturating_add(v.units.weight);
        }
        let mut order: Vec<usize> = (0..cands.len()).filter(|c| base[*c].votes > 0).collect();
        order.sort_by(|&a, &b| rank_order(cands[a], &base[a], cands[b], &base[b]));
        let mut idle: Vec<usize> = (0..cands.len()).filter(|c| base[*c].votes == 0).collect();
        idle.sort_by(|&a, &b| cands[a].cmp(cands[b]));
        let distinct = order.len();
        let mut g = Game {
            config,
            cands,
            votes,
            base,
            order,
            idle,
            total,
            distinct,
            judge,
            outcome: Disc {
                winner: None,
                reached: false,
            },
        };
        g.outcome = g.eval(&[], total);
        g
    }

    fn ranks_before(&self, a: (usize, &Sums), b: (usize, &Sums)) -> bool {
        rank_order(self.cands[a.0], a.1, self.cands[b.0], b.1) == Ordering::Less
    }

    /// The outcome with some candidates' sums replaced (no duplicates in `changed`).
    pub fn eval(&self, changed: &[(usize, Sums)], total: i128) -> Disc {
        if self.config.mode == ConsensusMode::Judge {
            return Disc {
                winner: self.judge,
                reached: self.judge.is_some(),
            };
        }
        let mut distinct = self.distinct as isize;
        let mut top: Option<(usize, Sums)> = None;
        let mut second: Option<(usize, Sums)> = None;
        let mut consider = |c: usize, s: Sums| {
            if s.votes == 0 {
                return;
            }
            match top {
                Some(t) if !self.ranks_before((c, &s), (t.0, &t.1)) => {
                    if second.is_none_or(|sec| self.ranks_before((c, &s), (sec.0, &sec.1))) {
                        second = Some((c, s));
                    }
                }
                _ => {
                    second = top;
                    top = Some((c, s));
                }
            }
        };
        for &(c, s) in changed {
            distinct += (s.votes > 0) as isize - (self.base[c].votes > 0) as isize;
            consider(c, s);
        }
        let mut taken = 0;
        for &c in &self.order {
            if changed.iter().any(|(x, _)| *x == c) {
                continue;
            }
            consider(c, self.base[c]);
            taken += 1;
            if taken == 2 {
                break;
            }
        }
        match top {
            None => Disc {
                winner: None,
                reached: false,
            },
            Some((c, s)) => Disc {
                winner: Some(c),
                reached: top_reaches_consensus(
                    self.config,
                    &s,
                    second.as_ref().map(|x| &x.1),
                    total,
                    distinct.max(0) as usize,
                ),
            },
        }
    }

    /// Outcome without vote `i`.
    pub fn removal(&self, i: usize) -> Disc {
        let v = self.votes[i];
        let mut s = self.base[v.cand];
        s.remove(v.units);
        self.eval(&[(v.cand, s)], self.total.saturating_sub(v.units.weight))
    }

    /// Outcome with vote `i` moved to candidate `b`.
    pub fn flip(&self, i: usize, b: usize) -> Disc {
        let v = self.votes[i];
        if v.cand == b {
            return self.outcome;
        }
        let mut from = self.base[v.cand];
        from.remove(v.units);
        let mut to = self.base[b];
        to.add(v.units);
        self.eval(&[(v.cand, from), (b, to)], self.total)
    }

    /// Alternatives in preference order: ranked choices, then choices without votes by name.
    fn alternatives(&self) -> impl Iterator<Item = usize> + '_ {
        self.order.iter().chain(self.idle.iter()).copied()
    }

    /// Alternatives in preference order, skipping `excluded`.
    pub fn alternatives_excluding(
        &self,
        excluded: Option<usize>,
    ) -> impl Iterator<Item = usize> + '_ {
        self.alternatives().filter(move |c| Some(*c) != excluded)
    }

    /// Whether moving vote `i` to `b` needs evaluating. Skips, without changing any answer:
    /// choices without votes other than the first by name (they differ only in name
    /// tie-breaks, which the smallest name wins first), and, for a vote not for the winner,
    /// choices that cannot reach the winner's weight (the winner's total and share are
    /// untouched, so only `b` overtaking or a broken tie at the top could change anything).
    fn flip_can_matter(&self, i: usize, b: usize) -> bool {
        let v = &self.votes[i];
        if b == v.cand || (self.base[b].votes == 0 && self.idle.first() != Some(&b)) {
            return false;
        }
        let Some(w) = self.outcome.winner else {
            return true;
        };
        if v.cand == w || b == w {
            return true;
        }
        let top = self.base[w].weight;
        self.base[b].weight.saturating_add(v.units.weight) >= top || self.base[v.cand].weight == top
    }

    pub fn flags(&self) -> Vec<VoteFlags> {
        (0..self.votes.len())
            .map(|i| {
                if self.config.mode == ConsensusMode::Judge {
                    return VoteFlags::default();
                }
                let removal_changes = self.removal(i) != self.outcome;
                let mut flip_to = None;
                for b in self.alternatives() {
                    if !self.flip_can_matter(i, b) {
                        continue;
                    }
                    let d = self.flip(i, b);
                    if d != self.outcome {
                        if d.winner != self.outcome.winner {
                            flip_to = Some(b);
                            break;
                        }
                        flip_to.get_or_insert(b);
                    }
                }
                VoteFlags {
                    removal_changes,
                    flip_changes: flip_to.is_some(),
                    flip_to,
                }
            })
            .collect()
    }

    /// Outcome with the votes in `movers` all moved to `target`.
    fn moved(&self, movers: &[usize], target: usize, changes: &mut Changes) -> Disc {
        changes.clear();
        for &i in movers {
            let v = self.votes[i];
            set_change(changes, v.cand, &self.base[v.cand], |s| s.remove(v.units));
            set_change(changes, target, &self.base[target], |s| s.add(v.units));
        }
        self.eval(changes, self.total)
    }

    /// A necessary size for any flip set (None: no flip can change the outcome). See
    /// docs/explainability.md for the three routes it bounds.
    fn lower_bound(&self) -> Option<usize> {
        let n = self.votes.len();
        let w = self.outcome.winner?;
        let mut all: Vec<i128> = self.votes.iter().map(|v| v.units.weight.max(0)).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        let mut mine: Vec<i128> = self
            .votes
            .iter()
            .filter(|v| v.cand == w)
            .map(|v| v.units.weight.max(0))
            .collect();
        mine.sort_unstable_by(|a, b| b.cmp(a));
        let ww = self.base[w].weight;
        let rival = self
            .order
            .iter()
            .find(|c| **c != w)
            .map(|c| self.base[*c].weight)
            .unwrap_or(0)
            .max(0);
        let t = self.total;
        let threshold = effective_threshold(self.config);
        let qmin = threshold.map(|th| min_winning_weight(t, th));
        let max_on_one = self
            .order
            .iter()
            .map(|c| self.base[*c].votes)
            .max()
            .unwrap_or(0) as usize;
        let (mut g, mut h) = (0i128, 0i128);
        for k in 1..=n {
            g = g.saturating_add(all[k - 1]);
            if k <= mine.len() {
                h = h.saturating_add(mine[k - 1]);
            }
            // Another choice overtakes (or ties) the winner: each mover closes the gap by at
            // most twice its weight.
            if g.saturating_mul(2) >= ww.saturating_sub(rival) {
                return Some(k);
            }
            let ok = if self.outcome.reached {
                match (self.config.mode, qmin) {
                    (ConsensusMode::Unanimous, _) => true,
                    // The winner's share falls below the threshold.
                    (_, Some(q)) => h >= ww.saturating_sub(q).saturating_add(1),
                    _ => false,
                }
            } else if t <= 0 {
                false
            } else {
                match (self.config.mode, qmin) {
                    (ConsensusMode::Unanimous, _) => k >= n - max_on_one,
                    // Some choice (at most the winner's weight now) reaches the threshold.
                    (_, Some(q)) => ww.saturating_add(g) >= q,
                    _ => false,
                }
            };
            if ok {
                return Some(k);
            }
        }
        None
    }

    fn greedy(&self, changes: &mut Changes) -> Option<(Vec<usize>, usize, Disc)> {
        let w = self.outcome.winner?;
        let mut targets: Vec<usize> = self.order.iter().take(4).copied().collect();
        if let Some(z) = self.idle.first() {
            targets.push(*z);
        }
        let mut best: Option<(Vec<usize>, usize, Disc)> = None;
        let mut movers: Vec<usize> = Vec::with_capacity(self.votes.len());
        for &b in &targets {
            for by_weight_first in [false, true] {
                movers.clear();
                movers.extend((0..self.votes.len()).filter(|i| self.votes[*i].cand != b));
                let key = |i: usize| {
                    let v = &self.votes[i];
                    (v.cand == w, v.units.weight, v.units.confidence)
                };
                movers.sort_by(|&x, &y| {
                    let (kx, ky) = (key(x), key(y));
                    let primary = if by_weight_first {
                        ky.1.cmp(&kx.1).then(ky.0.cmp(&kx.0))
                    } else {
                        ky.0.cmp(&kx.0).then(ky.1.cmp(&kx.1))
                    };
                    primary.then(ky.2.cmp(&kx.2)).then(x.cmp(&y))
                });
                let limit = best.as_ref().map_or(movers.len(), |b| b.0.len() - 1);
                changes.clear();
                for k in 0..limit.min(movers.len()) {
                    let v = self.votes[movers[k]];
                    set_change(changes, v.cand, &self.base[v.cand], |s| s.remove(v.units));
                    set_change(changes, b, &self.base[b], |s| s.add(v.units));
                    let d = self.eval(changes, self.total);
                    if d != self.outcome {
                        best = Some((movers[..=k].to_vec(), b, d));
                        break;
                    }
                }
            }
        }
        best
    }

    /// Smallest set of voters whose votes, all changed to one other choice, change the winner
    /// or whether consensus is reached (changing to one common choice loses nothing: see docs).
    pub fn minimal_flip_set(&self) -> FlipSet {
        if self.config.mode == ConsensusMode::Judge {
            return FlipSet::Impossible("judge mode: the judge decides and votes are advisory");
        }
        if self.votes.is_empty() {
            return FlipSet::Impossible("no votes were cast");
        }
        if self.cands.len() < 2 {
            return FlipSet::Impossible("there is no other choice to vote for");
        }
        let Some(lower) = self.lower_bound() else {
            return FlipSet::Impossible("no combination of vote changes can change the outcome");
        };
        let mut changes: Changes = Vec::with_capacity(8);
        let Some((voters, target, after)) = self.greedy(&mut changes) else {
            return FlipSet::Impossible("no combination of vote changes can change the outcome");
        };
        if voters.len() <= lower {
            return FlipSet::Found {
                voters,
                target,
                after,
                proof: FlipProof::LowerBound,
            };
        }
        let n = self.votes.len();
        if n > EXACT_FLIP_MAX_VOTERS {
            return FlipSet::Found {
                voters,
                target,
                after,
                proof: FlipProof::UpperBound,
            };
        }
        let mut budget = FLIP_SEARCH_BUDGET;
        let mut combo: Vec<usize> = Vec::with_capacity(n);
        for k in lower..voters.len() {
            combo.clear();
            combo.extend(0..k);
            loop {
                for b in 0..self.cands.len() {
                    if combo.iter().any(|&i| self.votes[i].cand == b) {
                        continue; // a voter already voting b changes nothing: a smaller set covers it
                    }
                    if budget == 0 {
                        return FlipSet::Found {
                            voters,
                            target,
                            after,
                            proof: FlipProof::UpperBound,
                        };
                    }
                    budget -= 1;
                    let d = self.moved(&combo, b, &mut changes);
                    if d != self.outcome {
                        return FlipSet::Found {
                            voters: combo.clone(),
                            target: b,
                            after: d,
                            proof: FlipProof::ExactSearch,
                        };
                    }
                }
                // Next k-combination in lexicographic order.
                let mut i = k;
                while i > 0 && combo[i - 1] == n - k + i - 1 {
                    i -= 1;
                }
                if i == 0 {
                    break;
                }
                combo[i - 1] += 1;
                for j in i..k {
                    combo[j] = combo[j - 1] + 1;
                }
            }
        }
        FlipSet::Found {
            voters,
            target,
            after,
            proof: FlipProof::ExactSearch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(x: i128, total: i128, t: f64) -> bool {
        share_meets(share(x, total), t)
    }

    #[test]
    fn min_winning_weight_is_the_exact_boundary_for_any_total() {
        let u: i128 = 1_000_000_000;
        let totals = [
            1,
            7,
            u,
            3 * u,
            64 * u,
            64 * u + u / 2, // the old search gave up between 64 and 64.5
            65 * u,
            66 * u,
            96 * u + u / 5,
            1_000 * u + 123_456_789,
            10_i128.pow(15) + 17,
            10_i128.pow(30),
        ];
        let thresholds = [
            0.0,
            1e-10,
            0.3,
            0.5,
            0.6,
            2.0 / 3.0,
            0.75,
            0.999_999_999,
            1.0,
            1.5,
        ];
        for &total in &totals {
            for &t in &thresholds {
                let q = min_winning_weight(total, t);
                if q > total {
                    assert_eq!(q, total + 1);
                    assert!(!passes(total, total, t), "{total} {t}");
                } else {
                    assert!(passes(q, total, t), "{total} {t}: {q}");
                    assert!(q == 0 || !passes(q - 1, total, t), "{total} {t}: {q}");
                }
            }
        }
        // The reviewer's case: T = 66, majority 0.5 → a winning weight ≤ T/2 exists, so the
        // consensus quota is "more than half".
        let cfg = ConsensusConfig {
            mode: ConsensusMode::Weighted,
            threshold: 0.5,
            judge: None,
        };
        assert!(min_winning_weight(66 * u, 0.5) <= 33 * u);
        assert_eq!(consensus_quota(&cfg, 66 * u), Some(33 * u + 1));
        assert_eq!(min_winning_weight(0, 0.5), 1);
        assert_eq!(min_winning_weight(66 * u, 1.5), 66 * u + 1);
    }
}
