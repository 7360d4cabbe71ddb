//! Classification metrics and bootstrap intervals over users.

use rand::Rng;
use serde::Serialize;

/// Probabilities below this are raised to it before a logarithm (a model that gives an
/// observed outcome probability 0 is charged about 27.6 nats, not infinity).
pub const P_FLOOR: f64 = 1e-12;

/// Mean negative log-likelihood (nats) of `y` under `probs`, over the targets `idx`.
pub fn log_loss(probs: &[Vec<f64>], y: &[usize], idx: &[usize]) -> f64 {
    if idx.is_empty() {
        return f64::NAN;
    }
    idx.iter().map(|&i| -probs[i][y[i]].max(P_FLOOR).ln()).sum::<f64>() / idx.len() as f64
}

fn argmax(p: &[f64]) -> usize {
    // The first of equal maxima, so ties break the same way every time.
    let mut best = 0;
    for (k, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = k;
        }
    }
    best
}

/// The share of targets whose most probable class is the observed one.
pub fn accuracy(probs: &[Vec<f64>], y: &[usize], idx: &[usize]) -> f64 {
    if idx.is_empty() {
        return f64::NAN;
    }
    idx.iter().filter(|&&i| argmax(&probs[i]) == y[i]).count() as f64 / idx.len() as f64
}

/// Counts by (observed class, predicted class).
pub fn confusion(probs: &[Vec<f64>], y: &[usize], idx: &[usize], classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; classes]; classes];
    for &i in idx {
        m[y[i]][argmax(&probs[i])] += 1;
    }
    m
}

/// The mean over classes of F1 = 2 TP / (2 TP + FP + FN), over the classes that occur
/// (observed or predicted).
pub fn macro_f1(confusion: &[Vec<u64>]) -> f64 {
    let k = confusion.len();
    let mut sum = 0.0;
    let mut n = 0;
    for (c, row) in confusion.iter().enumerate() {
        let tp = row[c] as f64;
        let fn_: f64 = (0..k).filter(|&j| j != c).map(|j| row[j] as f64).sum();
        let fp: f64 = (0..k).filter(|&j| j != c).map(|j| confusion[j][c] as f64).sum();
        if tp + fn_ + fp > 0.0 {
            sum += 2.0 * tp / (2.0 * tp + fp + fn_);
            n += 1;
        }
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// ROC-AUC of `score` for the positives `label` over `idx` (the Mann-Whitney statistic;
/// ties count half). NaN when one class is absent.
pub fn roc_auc(score: &[f64], label: &[bool], idx: &[usize]) -> f64 {
    let mut v: Vec<(f64, bool)> = idx.iter().map(|&i| (score[i], label[i])).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    // Sum of the positives' mid-ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * v[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// PR-AUC as average precision: the precision at each positive, scores descending, tied
/// scores taken together.
pub fn pr_auc(score: &[f64], label: &[bool], idx: &[usize]) -> f64 {
    let mut v: Vec<(f64, bool)> = idx.iter().map(|&i| (score[i], label[i])).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = v.iter().filter(|x| x.1).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let (mut tp, mut seen, mut ap) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let new_tp = v[i..=j].iter().filter(|x| x.1).count() as f64;
        tp += new_tp;
        seen += (j - i + 1) as f64;
        ap += new_tp / pos * (tp / seen);
        i = j + 1;
    }
    ap
}

/// The ROC curve's points (false-positive rate, true-positive rate), from (0, 0) to (1, 1).
pub fn roc_curve(score: &[f64], label: &[bool], idx: &[usize]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, bool)> = idx.iter().map(|&i| (score[i], label[i])).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = v.iter().filter(|x| x.1).count().max(1) as f64;
    let neg = (v.len() as f64 - v.iter().filter(|x| x.1).count() as f64).max(1.0);
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        for x in &v[i..=j] {
            if x.1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        out.push((fp / neg, tp / pos));
        i = j + 1;
    }
    out
}

/// A figure with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    /// The 2.5th and 97.5th percentiles of the bootstrap (users resampled).
    pub ci95: [f64; 2],
}

/// Percentile intervals of the statistics `stat` computes on target subsets, resampling
/// whole groups (users) with replacement `reps` times: users, not targets, are the
/// independent units. `stat` on all targets gives the values.
pub fn bootstrap(groups: &[Vec<usize>], reps: usize, seed: u64, stat: &dyn Fn(&[usize]) -> Vec<f64>) -> Vec<Estimate> {
    let all: Vec<usize> = groups.iter().flatten().copied().collect();
    let values = stat(&all);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); values.len()];
    let mut rng = crate::rng::substream(seed, crate::rng::Stream::Learn, 2);
    let mut idx = Vec::with_capacity(all.len());
    for _ in 0..reps {
        idx.clear();
        for _ in 0..groups.len() {
            idx.extend_from_slice(&groups[rng.random_range(0..groups.len())]);
        }
        for (k, v) in stat(&idx).into_iter().enumerate() {
            if v.is_finite() {
                draws[k].push(v);
            }
        }
    }
    values
        .into_iter()
        .zip(draws)
        .map(|(value, mut d)| {
            d.sort_by(f64::total_cmp);
            let ci95 = if d.is_empty() {
                [value, value]
            } else {
                let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
                [at(0.025), at(0.975)]
            };
            Estimate { value, ci95 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_a_perfect_a_reversed_and_a_tied_score() {
        let label = [false, false, true, true];
        let idx = [0, 1, 2, 3];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &label, &idx), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &label, &idx), 0.0);
        assert_eq!(roc_auc(&[0.5; 4], &label, &idx), 0.5);
        assert_eq!(pr_auc(&[0.1, 0.2, 0.8, 0.9], &label, &idx), 1.0);
        // Every score tied: precision is the base rate.
        assert_eq!(pr_auc(&[0.5; 4], &label, &idx), 0.5);
        // One positive ranked first, one last: (1/1 + 2/4) / 2.
        assert!((pr_auc(&[0.3, 0.2, 0.9, 0.1], &label, &idx) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn log_loss_accuracy_and_macro_f1_by_hand() {
        let probs = vec![vec![0.5, 0.5], vec![0.9, 0.1], vec![0.2, 0.8]];
        let y = [0, 1, 1];
        let idx = [0, 1, 2];
        let ll = log_loss(&probs, &y, &idx);
        assert!((ll - (-(0.5f64.ln() + 0.1f64.ln() + 0.8f64.ln()) / 3.0)).abs() < 1e-12);
        assert!((accuracy(&probs, &y, &idx) - 2.0 / 3.0).abs() < 1e-12);
        let c = confusion(&probs, &y, &idx, 2);
        assert_eq!(c, vec![vec![1, 0], vec![1, 1]]);
        // Class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 1, fp 0, fn 1 -> 2/3.
        assert!((macro_f1(&c) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn the_bootstrap_interval_covers_the_value_and_narrows_with_more_users() {
        let small: Vec<Vec<usize>> = (0..10).map(|u| vec![u]).collect();
        let big: Vec<Vec<usize>> = (0..1000).map(|u| vec![u]).collect();
        let xs: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 101) as f64 / 100.0).collect();
        let mean = |idx: &[usize]| vec![idx.iter().map(|&i| xs[i]).sum::<f64>() / idx.len() as f64];
        let a = bootstrap(&small, 500, 1, &mean)[0];
        let b = bootstrap(&big, 500, 1, &mean)[0];
        assert!(a.ci95[0] <= a.value && a.value <= a.ci95[1]);
        assert!(b.ci95[1] - b.ci95[0] < (a.ci95[1] - a.ci95[0]) / 3.0);
    }
}
