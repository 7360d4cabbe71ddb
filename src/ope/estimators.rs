//! The estimators of a target policy's value from a log (docs/ope.md: Estimators).
//!
//! One decision, V1 = the mean over logged decisions of sum_a target(a | x) E[r | x, a]:
//! the direct method (DM), IPS, self-normalised IPS, doubly robust (DR), self-normalised
//! DR, switch-DR and DR with optimistic shrinkage. A session, V = the expected return of a
//! session: per-decision importance sampling (PDIS), its weighted form (WPDIS), doubly
//! robust and weighted doubly robust for sequences (DR-seq, WDR), the direct method for
//! sessions (FQE's value of the first state), and the naive sum of one-decision IPS terms
//! they must beat.
//!
//! The fitted models are linear in the bandits' features of (state, slot)
//! ([`crate::agent::bandit::BanditFeatures`]) and cross-fitted over two folds of sessions:
//! each decision's predictions come from a model fitted on the other fold. The DM model is
//! a ridge regression of the reward; the sequential estimators' Q model is linear
//! fitted-Q evaluation (FQE) on the same features: Q(x, a) = theta . phi(x, a), iterated
//! `env.max_steps` times from theta = 0 with targets r + V(x') (0 after a session's last
//! decision), V(x) = sum_a target(a | x) Q(x, a). Intervals: percentile bootstrap over
//! sessions, seeded, with the fitted models held fixed.

use rand::Rng;
use serde::Serialize;

use crate::agent::bandit::{BanditFeatures, Ridge};
use crate::rng::{substream, Stream};
use crate::{Error, Result};

use super::LogView;

/// Which value an estimate is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimand {
    /// V1: the mean immediate reward of the target's choice over the logged decisions.
    OneDecision,
    /// V: the expected return of a session under the target.
    Session,
}

impl Estimand {
    /// Its name in tables: `one_decision` or `session` (as it serialises).
    pub fn name(&self) -> &'static str {
        match self {
            Estimand::OneDecision => "one_decision",
            Estimand::Session => "session",
        }
    }
}

/// How the estimators are set.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The ridge penalty of the fitted models.
    pub ridge: f64,
    /// Switch-DR's weight threshold; None: chosen from [`TAU_GRID`] by the estimated-MSE
    /// rule ([`estimate`]).
    pub switch_tau: Option<f64>,
    /// Optimistic shrinkage's lambda; None: chosen from [`LAMBDA_GRID`] by the same rule.
    pub shrinkage_lambda: Option<f64>,
    /// Bootstrap resamples of the sessions (100 to 100,000).
    pub bootstrap: usize,
    /// Seeds the folds and the bootstrap.
    pub seed: u64,
    /// FQE iterations (the longest session is a natural choice).
    pub fqe_iterations: usize,
}

pub const TAU_GRID: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0];
pub const LAMBDA_GRID: [f64; 7] = [0.1, 1.0, 10.0, 100.0, 1000.0, 1e4, 1e5];

/// The fewest bootstrap resamples allowed.
pub const MIN_BOOTSTRAP: usize = 100;

/// The most bootstrap resamples allowed (more only costs memory: an estimate per resample
/// per estimator).
pub const MAX_BOOTSTRAP: usize = 100_000;

/// One estimate.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Estimate {
    pub estimator: String,
    pub estimand: Estimand,
    pub value: f64,
    /// The 95% percentile bootstrap interval.
    pub ci_low: f64,
    pub ci_high: f64,
    /// The bootstrap standard error.
    pub se: f64,
    /// The effective sample size of its weights, (sum w)^2 / sum w^2: over decisions for
    /// one-decision estimators, over sessions' cumulative weights for session ones; the
    /// number of decisions or sessions for the direct method.
    pub ess: f64,
    /// A threshold it used and how it was set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setting: String,
}

/// Per decision: what the estimators need.
struct Prepared {
    /// Importance weight target(a | x) / logging(a | x) of the logged slot.
    w: Vec<f64>,
    r: Vec<f64>,
    /// The DM model's prediction of the logged slot and its expectation under the target.
    q_fact: Vec<f64>,
    q_exp: Vec<f64>,
    /// FQE's Q of the logged slot and V of the state.
    fq: Vec<f64>,
    fv: Vec<f64>,
}

/// theta . x for an f32 row.
fn dot32(theta: &[f64], x: &[f32]) -> f64 {
    theta.iter().zip(x).map(|(a, b)| a * *b as f64).sum()
}

/// Fits the two folds' models and predicts every decision from the other fold's.
fn prepare(log: LogView<'_>, target: &[Vec<f64>], features: &BanditFeatures, opts: &Options, fold: &[usize]) -> Result<Prepared> {
    let n = log.decisions.len();
    let d = features.dim();
    // phi of the logged (state, slot), and psi = sum_a target(a | x) phi(x, a), per decision.
    let mut phi = vec![0f32; n * d];
    let mut psi = vec![0f32; n * d];
    let (mut x, mut acc) = (vec![0.0; d], vec![0.0; d]);
    for (i, dec) in log.decisions.iter().enumerate() {
        features.write(&dec.obs.state, dec.slot, &mut x);
        phi[i * d..(i + 1) * d].iter_mut().zip(&x).for_each(|(o, v)| *o = *v as f32);
        acc.fill(0.0);
        for (k, &p) in target[i].iter().enumerate().take(dec.obs.candidates.len()) {
            if p > 0.0 {
                features.write(&dec.obs.state, k, &mut x);
                acc.iter_mut().zip(&x).for_each(|(a, v)| *a += p * v);
            }
        }
        psi[i * d..(i + 1) * d].iter_mut().zip(&acc).for_each(|(o, v)| *o = *v as f32);
    }
    let session_of: Vec<usize> =
        (0..log.sessions()).flat_map(|s| std::iter::repeat_n(s, log.starts[s + 1] - log.starts[s])).collect();
    // The next decision of the same session (None after a session's last).
    let next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n && session_of[i + 1] == session_of[i]).then_some(i + 1)).collect();

    let mut out = Prepared {
        w: log.decisions.iter().zip(target).map(|(dec, p)| p[dec.slot] / dec.probs[dec.slot]).collect(),
        r: log.decisions.iter().map(|dec| dec.reward).collect(),
        q_fact: vec![0.0; n],
        q_exp: vec![0.0; n],
        fq: vec![0.0; n],
        fv: vec![0.0; n],
    };
    let mut scratch = Vec::new();
    for f in 0..2 {
        // Fit on the other fold.
        let train: Vec<usize> = (0..n).filter(|&i| fold[session_of[i]] != f).collect();
        let mut model = Ridge::new(d, opts.ridge);
        let mut row = vec![0.0; d];
        for &i in &train {
            row.iter_mut().zip(&phi[i * d..(i + 1) * d]).for_each(|(o, v)| *o = *v as f64);
            model.update(&row, out.r[i], &mut scratch).map_err(|e| Error::Other(format!("the direct method's model: {e}")))?;
        }
        let theta_dm = model.theta().to_vec();
        // FQE: the same precision matrix, new targets each iteration.
        let mut theta = vec![0.0; d];
        for _ in 0..opts.fqe_iterations {
            let mut b = vec![0.0; d];
            for &i in &train {
                let y = out.r[i] + next[i].map_or(0.0, |j| dot32(&theta, &psi[j * d..(j + 1) * d]));
                b.iter_mut().zip(&phi[i * d..(i + 1) * d]).for_each(|(o, v)| *o += y * *v as f64);
            }
            theta = model.solve_for(&b);
        }
        for i in (0..n).filter(|&i| fold[session_of[i]] == f) {
            out.q_fact[i] = dot32(&theta_dm, &phi[i * d..(i + 1) * d]);
            out.q_exp[i] = dot32(&theta_dm, &psi[i * d..(i + 1) * d]);
            out.fq[i] = dot32(&theta, &phi[i * d..(i + 1) * d]);
            out.fv[i] = dot32(&theta, &psi[i * d..(i + 1) * d]);
        }
    }
    Ok(out)
}

/// The per-session sums every estimate is a function of, laid out as
/// [one-decision block | per-step block x T].
struct Stats {
    /// Per session, `width` numbers.
    rows: Vec<f64>,
    width: usize,
    steps: usize,
}

// The one-decision block.
const CNT: usize = 0;
const WR: usize = 1;
const W: usize = 2;
const W2: usize = 3;
const DM: usize = 4;
const DR: usize = 5;
const RES: usize = 6; // sum w (r - q_fact)
const SWITCH: usize = 7; // one per TAU_GRID entry
const OS: usize = SWITCH + TAU_GRID.len(); // one per LAMBDA_GRID entry
const PDIS: usize = OS + LAMBDA_GRID.len();
const NAIVE: usize = PDIS + 1;
const DRSEQ: usize = NAIVE + 1;
const FQE: usize = DRSEQ + 1;
const RHO_END: usize = FQE + 1;
const RHO_END2: usize = RHO_END + 1;
const ONE: usize = RHO_END2 + 1;
// The per-step block: rho_t, rho_t r_t, rho_t (r_t - Q_t), rho_{t-1} V_t, rho_{t-1}.
const PER_STEP: usize = 5;

fn stats(log: LogView<'_>, p: &Prepared) -> Stats {
    let steps = (0..log.sessions()).map(|s| log.starts[s + 1] - log.starts[s]).max().unwrap_or(0);
    let width = ONE + PER_STEP * steps;
    let mut rows = vec![0.0; log.sessions() * width];
    for s in 0..log.sessions() {
        let row = &mut rows[s * width..(s + 1) * width];
        let (mut rho, mut rho_prev) = (1.0, 1.0);
        for (t, i) in (log.starts[s]..log.starts[s + 1]).enumerate() {
            let (w, r) = (p.w[i], p.r[i]);
            let res = r - p.q_fact[i];
            row[CNT] += 1.0;
            row[WR] += w * r;
            row[W] += w;
            row[W2] += w * w;
            row[DM] += p.q_exp[i];
            row[DR] += p.q_exp[i] + w * res;
            row[RES] += w * res;
            for (k, tau) in TAU_GRID.iter().enumerate() {
                row[SWITCH + k] += p.q_exp[i] + if w <= *tau { w * res } else { 0.0 };
            }
            for (k, lambda) in LAMBDA_GRID.iter().enumerate() {
                row[OS + k] += p.q_exp[i] + lambda * w / (w * w + lambda) * res;
            }
            rho *= w;
            row[PDIS] += rho * r;
            row[NAIVE] += w * r;
            row[DRSEQ] += rho * (r - p.fq[i]) + rho_prev * p.fv[i];
            if t == 0 {
                row[FQE] += p.fv[i];
            }
            let at = ONE + PER_STEP * t;
            row[at] = rho;
            row[at + 1] = rho * r;
            row[at + 2] = rho * (r - p.fq[i]);
            row[at + 3] = rho_prev * p.fv[i];
            row[at + 4] = rho_prev;
            rho_prev = rho;
        }
        // After its end a session is absorbed: its weight stays, it earns nothing.
        for t in (log.starts[s + 1] - log.starts[s])..steps {
            let at = ONE + PER_STEP * t;
            row[at] = rho;
            row[at + 4] = rho;
        }
        row[RHO_END] = rho;
        row[RHO_END2] = rho * rho;
    }
    Stats { rows, width, steps }
}

/// Every estimate from the summed stats `sum` (over the sessions, or a resample of them)
/// of `sessions` sessions: in [`NAMES`] order, switch and shrinkage over their whole grids.
fn values(sum: &[f64], sessions: f64, steps: usize) -> Vec<f64> {
    let n_dec = sum[CNT];
    let mut v = vec![sum[DM] / n_dec, sum[WR] / n_dec, sum[WR] / sum[W], sum[DR] / n_dec, sum[DM] / n_dec + sum[RES] / sum[W]];
    v.extend((0..TAU_GRID.len()).map(|k| sum[SWITCH + k] / n_dec));
    v.extend((0..LAMBDA_GRID.len()).map(|k| sum[OS + k] / n_dec));
    v.push(sum[PDIS] / sessions);
    let (mut wpdis, mut wdr) = (0.0, 0.0);
    for t in 0..steps {
        let at = ONE + PER_STEP * t;
        if sum[at] > 0.0 {
            wpdis += sum[at + 1] / sum[at];
            wdr += sum[at + 2] / sum[at];
        }
        if sum[at + 4] > 0.0 {
            wdr += sum[at + 3] / sum[at + 4];
        }
    }
    v.push(wpdis);
    v.push(sum[DRSEQ] / sessions);
    v.push(wdr);
    v.push(sum[NAIVE] / sessions);
    v.push(sum[FQE] / sessions);
    v
}

/// The estimators in table order (switch-DR and shrinkage appear once, at their chosen
/// threshold).
pub const NAMES: [(&str, Estimand); 13] = [
    ("dm", Estimand::OneDecision),
    ("ips", Estimand::OneDecision),
    ("snips", Estimand::OneDecision),
    ("dr", Estimand::OneDecision),
    ("sndr", Estimand::OneDecision),
    ("switch_dr", Estimand::OneDecision),
    ("dr_os", Estimand::OneDecision),
    ("pdis", Estimand::Session),
    ("wpdis", Estimand::Session),
    ("dr_seq", Estimand::Session),
    ("wdr", Estimand::Session),
    ("naive_sum", Estimand::Session),
    ("fqe", Estimand::Session),
];

/// Every estimator on `log` for a target whose probabilities on the logged decisions are
/// `target`. Switch-DR's tau and shrinkage's lambda, unless fixed in `opts`, are chosen
/// from their grids by the smallest estimated MSE: (estimate - DR's estimate)^2 (a bias
/// estimate against the unbiased DR) plus the estimate's bootstrap variance. The truth is
/// never looked at.
pub fn estimate(log: LogView<'_>, target: &[Vec<f64>], features: &BanditFeatures, opts: &Options) -> Result<Vec<Estimate>> {
    let sessions = log.sessions();
    if sessions < 2 {
        return Err(Error::Other(format!("off-policy evaluation needs at least 2 logged sessions, not {sessions}")));
    }
    if !(MIN_BOOTSTRAP..=MAX_BOOTSTRAP).contains(&opts.bootstrap) {
        return Err(Error::Other(format!("--bootstrap {}: from {MIN_BOOTSTRAP} to {MAX_BOOTSTRAP} resamples", opts.bootstrap)));
    }
    let mut rng = substream(opts.seed, Stream::OpeEstimate, 0);
    let fold: Vec<usize> = (0..sessions).map(|_| rng.random_range(0..2)).collect();
    let prepared = prepare(log, target, features, opts, &fold)?;
    let st = stats(log, &prepared);
    let total = |weights: &[f64]| -> Vec<f64> {
        let mut sum = vec![0.0; st.width];
        for (s, &c) in weights.iter().enumerate() {
            if c != 0.0 {
                sum.iter_mut().zip(&st.rows[s * st.width..(s + 1) * st.width]).for_each(|(a, b)| *a += c * b);
            }
        }
        sum
    };
    let point = values(&total(&vec![1.0; sessions]), sessions as f64, st.steps);
    // Resample b draws from its own sub-stream: the same intervals on any number of threads.
    let reps: Vec<Vec<f64>> = {
        use rayon::prelude::*;
        (0..opts.bootstrap)
            .into_par_iter()
            .map(|b| {
                let mut rng = substream(opts.seed, Stream::OpeEstimate, 1 + b as u64);
                let mut counts = vec![0.0; sessions];
                for _ in 0..sessions {
                    counts[rng.random_range(0..sessions)] += 1.0;
                }
                values(&total(&counts), sessions as f64, st.steps)
            })
            .collect()
    };
    let column = |j: usize| -> Vec<f64> { reps.iter().map(|r| r[j]).filter(|v| v.is_finite()).collect() };
    let summary = |j: usize| -> (f64, f64, f64) {
        let mut xs = column(j);
        xs.sort_by(f64::total_cmp);
        if xs.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let se = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len().max(2) - 1) as f64).sqrt();
        (q(0.025), q(0.975), se)
    };
    // Index of each estimator's column in `values`.
    let dr = 3;
    let switch0 = 5;
    let os0 = switch0 + TAU_GRID.len();
    let session0 = os0 + LAMBDA_GRID.len();
    let choose = |grid: &[f64], first: usize, fixed: Option<f64>| -> (usize, String) {
        if let Some(v) = fixed {
            let k = grid.iter().position(|g| (g - v).abs() < 1e-12);
            if let Some(k) = k {
                return (first + k, format!("{v} (fixed)"));
            }
        }
        let mse = |k: usize| (point[first + k] - point[dr]).powi(2) + summary(first + k).2.powi(2);
        let k = (0..grid.len()).min_by(|&a, &b| mse(a).total_cmp(&mse(b))).unwrap_or(0);
        (first + k, format!("{} (smallest estimated MSE)", grid[k]))
    };
    let (switch_at, switch_set) = choose(&TAU_GRID, switch0, opts.switch_tau);
    let (os_at, os_set) = choose(&LAMBDA_GRID, os0, opts.shrinkage_lambda);

    let all = total(&vec![1.0; sessions]);
    let ess_dec = all[W] * all[W] / all[W2].max(f64::MIN_POSITIVE);
    let ess_ses = all[RHO_END] * all[RHO_END] / all[RHO_END2].max(f64::MIN_POSITIVE);
    let columns =
        [0, 1, 2, dr, 4, switch_at, os_at, session0, session0 + 1, session0 + 2, session0 + 3, session0 + 4, session0 + 5];
    let mut out = Vec::new();
    for (&(name, estimand), &j) in NAMES.iter().zip(&columns) {
        let (lo, hi, se) = summary(j);
        let ess = match name {
            "dm" => all[CNT],
            "fqe" => sessions as f64,
            _ if estimand == Estimand::OneDecision || name == "naive_sum" => ess_dec,
            _ => ess_ses,
        };
        let setting = match name {
            "switch_dr" => format!("tau = {switch_set}"),
            "dr_os" => format!("lambda = {os_set}"),
            _ => String::new(),
        };
        out.push(Estimate { estimator: name.to_string(), estimand, value: point[j], ci_low: lo, ci_high: hi, se, ess, setting });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every estimator on a log worked by hand: session A of two decisions, session B of
    /// one (weights w, rewards r, the DM model's q of the logged slot and its expectation
    /// under the target, FQE's Q and V); each figure is worked out in the comments.
    #[test]
    fn estimators_match_a_hand_worked_log() {
        let log = LogView { decisions: &[], starts: &[0, 2, 3] };
        let p = Prepared {
            w: vec![2.0, 0.5, 1.0],
            r: vec![1.0, 0.0, 2.0],
            q_fact: vec![0.5, 0.2, 1.0],
            q_exp: vec![0.8, 0.4, 1.5],
            fq: vec![0.5, 0.2, 1.0],
            fv: vec![1.0, 0.3, 1.8],
        };
        let st = stats(log, &p);
        let mut sum = vec![0.0; st.width];
        for s in 0..2 {
            sum.iter_mut().zip(&st.rows[s * st.width..(s + 1) * st.width]).for_each(|(a, b)| *a += b);
        }
        let v = values(&sum, 2.0, st.steps);
        let session0 = 5 + TAU_GRID.len() + LAMBDA_GRID.len();
        let expect = [
            (0, 0.9),                                    // DM: (0.8 + 0.4 + 1.5) / 3
            (1, 4.0 / 3.0),                              // IPS: (2 * 1 + 0.5 * 0 + 1 * 2) / 3
            (2, 4.0 / 3.5),                              // SNIPS: 4 / (2 + 0.5 + 1)
            (3, 4.6 / 3.0),                              // DR: (0.8 + 2 * 0.5) + (0.4 + 0.5 * -0.2) + (1.5 + 1 * 1)
            (4, 0.9 + 1.9 / 3.5),                        // SNDR: DM + (1 - 0.1 + 1) / 3.5
            (5, 3.6 / 3.0),                              // switch-DR, tau = 1: the w = 2 correction is dropped
            (5 + TAU_GRID.len() + 1, 3.32 / 3.0),        // DR-OS, lambda = 1: w~ = 0.4, 0.4, 0.5
            (session0, 2.0),                             // PDIS: A 2 * 1 + 1 * 0, B 1 * 2
            (session0 + 1, 4.0 / 3.0),                   // WPDIS: t0 (2 + 2) / 3, t1 0 / 2
            (session0 + 2, 2.6),                         // DR-seq: A (1 + 1) + (-0.2 + 0.6), B 1 + 1.8
            (session0 + 3, 2.0 / 3.0 + 1.4 - 0.1 + 0.2), // WDR, per step
            (session0 + 4, 2.0),                         // naive: A 2 + 0, B 2
            (session0 + 5, 1.4),                         // FQE: (1.0 + 1.8) / 2
        ];
        for (j, want) in expect {
            assert!((v[j] - want).abs() < 1e-12, "column {j}: {} against {want}", v[j]);
        }
    }
}
