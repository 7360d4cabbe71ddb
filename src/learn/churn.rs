//! `fypsim learn churn`: from the weekly aggregates of a population run, the chance that a
//! user is inactive next week, by a recurrent model over the user's weeks, beside
//! logistic regression on the week's features and last week's activity rule.

use std::path::Path;

use polars::prelude::*;
use serde_json::json;

use super::metrics;
use super::seq::{self, Model, Sequence, Windows};
use super::{split_users, LearnConfig, LearnObserver, LearnOutcome, Task};
use crate::{Error, Result};

/// Weeks a run must hold.
pub const MIN_WEEKS: u32 = 12;
const FEATURES: usize = 8;

/// One user-week of `user_weeks.parquet` (as the population run wrote it).
pub use crate::drive::calendar::UserWeek as Week;

/// A week's features: sessions, active days, minutes watched, likes, skips (log-scaled),
/// days since the last visit, weeks since the user's first week, whether it is the first.
pub fn week_features(w: &Week, first_week: u32) -> Vec<f32> {
    vec![
        ((w.sessions as f64).ln_1p() / 3.0) as f32,
        (w.active_days as f64 / 7.0) as f32,
        ((w.watch_s / 60.0).ln_1p() / 5.0) as f32,
        ((w.likes as f64).ln_1p() / 3.0) as f32,
        ((w.skips as f64).ln_1p() / 3.0) as f32,
        (w.days_since_last_visit.min(28.0) / 7.0) as f32,
        ((w.week - first_week) as f64 / 12.0) as f32,
        f32::from(w.week == first_week),
    ]
}

/// Reads the weeks of `policy` (default: the first policy in the file, the run's own)
/// from `user_weeks.parquet`; returns them and the policy's name.
pub fn read_weeks(path: &Path, policy: Option<&str>) -> Result<(Vec<Week>, String)> {
    if !path.exists() {
        return Err(Error::Other(format!(
            "{} does not exist: `fypsim learn churn` needs a population run (a config with [calendar] days >= {}, \
             e.g. configs/churn.toml)",
            path.display(),
            7 * MIN_WEEKS
        )));
    }
    let df = crate::output::records::read_parquet(path)?;
    let e = crate::output::records::table_err("read", path);
    let col = |name: &str| df.column(name).map_err(|_| Error::Other(format!("{} has no column `{name}`", path.display())));
    let policies: Vec<String> = col("policy")?
        .str()
        .map_err(&e)
        .map(|ca| (0..ca.len()).map(move |i| ca.get(i)))?
        .map(|p| p.unwrap_or("").to_string())
        .collect();
    let chosen = match policy {
        Some(p) => {
            if !policies.iter().any(|x| x == p) {
                let mut names = policies.clone();
                names.dedup();
                return Err(Error::Other(format!("{} has no policy `{p}` (it has: {})", path.display(), names.join(", "))));
            }
            p.to_string()
        }
        None => policies.first().cloned().ok_or_else(|| Error::Other(format!("{} has no rows", path.display())))?,
    };
    let u32s = |name: &str| -> Result<Vec<u32>> {
        Ok(col(name)?.u32().map_err(&e).map(|ca| (0..ca.len()).map(move |i| ca.get(i)))?.map(|v| v.unwrap_or(0)).collect())
    };
    let f64s = |name: &str| -> Result<Vec<f64>> {
        Ok(col(name)?
            .f64()
            .map_err(&e)
            .map(|ca| (0..ca.len()).map(move |i| ca.get(i)))?
            .map(|v| v.filter(|x| x.is_finite()).unwrap_or(0.0))
            .collect())
    };
    let (user, week, sessions, active, likes, skips) =
        (u32s("user")?, u32s("week")?, u32s("sessions")?, u32s("active_days")?, u32s("likes")?, u32s("skips")?);
    let (watch, since) = (f64s("watch_s")?, f64s("days_since_last_visit")?);
    let label: Vec<Option<bool>> =
        col("inactive_next_week")?.bool().map_err(&e).map(|ca| (0..ca.len()).map(move |i| ca.get(i)))?.collect();
    let weeks = (0..df.height())
        .filter(|&i| policies[i] == chosen)
        .map(|i| Week {
            user: user[i],
            week: week[i],
            sessions: sessions[i],
            active_days: active[i],
            watch_s: watch[i],
            likes: likes[i],
            skips: skips[i],
            days_since_last_visit: since[i],
            inactive_next_week: label[i],
        })
        .collect();
    Ok((weeks, chosen))
}

/// The windows and kept weeks of one split.
type Split = (Windows, Vec<(u32, Vec<usize>)>);

/// Splits by user and by time: training and validation labels are weeks before the cut
/// week, test labels the cut week and after (a test user's earlier weeks are context).
pub fn split(weeks: &[Week], cfg: &LearnConfig) -> Result<(Split, Split, Split, u32, [usize; 3])> {
    let users = super::by_user(weeks.len(), |i| weeks[i].user, |i| weeks[i].week);
    let ids: Vec<u32> = users.iter().map(|u| u.0).collect();
    let (tr, va, te) = split_users(&ids, cfg);
    let n_weeks = weeks.iter().map(|w| w.week + 1).max().unwrap_or(0);
    let cut = ((n_weeks as f64 * cfg.time_split).round() as u32).max(1);
    let build = |set: &[u32], test: bool| -> Result<Split> {
        let mut seqs = Vec::new();
        let mut kept = Vec::new();
        for (u, idx) in users.iter().filter(|(u, _)| set.binary_search(u).is_ok()) {
            // A training user's sequence stops before the cut: its later weeks are the test's future.
            let idx: Vec<usize> = idx.iter().copied().filter(|&i| test || weeks[i].week < cut).collect();
            if idx.is_empty() {
                continue;
            }
            let first = weeks[idx[0]].week;
            let scored: Vec<bool> = idx
                .iter()
                .map(|&i| {
                    let w = &weeks[i];
                    w.inactive_next_week.is_some() && if test { w.week + 1 >= cut } else { w.week + 1 < cut }
                })
                .collect();
            seqs.push(Sequence {
                features: idx.iter().map(|&i| week_features(&weeks[i], first)).collect(),
                labels: idx.iter().map(|&i| i64::from(weeks[i].inactive_next_week == Some(true))).collect(),
                scored,
            });
            kept.push((*u, idx));
        }
        Ok((Windows::try_build(&seqs, cfg.mode, cfg.window, cfg.stride, FEATURES)?, kept))
    };
    Ok((build(&tr, false)?, build(&va, false)?, build(&te, true)?, cut, [tr.len(), va.len(), te.len()]))
}

/// Trains and evaluates on the population run in `run_dir`, writing
/// `run_dir/learn/churn-<cell>-<mode>/`.
pub fn run(run_dir: &Path, cfg: &LearnConfig, observer: &mut dyn LearnObserver) -> Result<LearnOutcome> {
    super::require_run_dir(run_dir)?;
    let path = run_dir.join("user_weeks.parquet");
    observer.stage(&format!("reading {}", path.display()));
    let (weeks, policy) = read_weeks(&path, cfg.policy.as_deref())?;
    let n_weeks = weeks.iter().map(|w| w.week + 1).max().unwrap_or(0);
    if n_weeks < MIN_WEEKS {
        return Err(Error::Other(format!(
            "{} holds {n_weeks} weeks; week-ahead churn needs at least {MIN_WEEKS} (a calendar of at least {} days, \
             e.g. configs/churn.toml)",
            path.display(),
            7 * (MIN_WEEKS + 1)
        )));
    }
    let out = super::out_dir(run_dir, Task::Churn, cfg);
    learn(&weeks, &policy, cfg, &out, observer)
}

/// Trains, evaluates and writes every output into `out`.
pub fn learn(
    weeks: &[Week],
    policy: &str,
    cfg: &LearnConfig,
    out: &Path,
    observer: &mut dyn LearnObserver,
) -> Result<LearnOutcome> {
    Windows::fits_model(cfg, FEATURES)?;
    let final_dir = out;
    let out = &super::begin(final_dir, cfg)?;
    let ((train_w, _), (valid_w, _), (test_w, test_kept), cut, users) = split(weeks, cfg)?;
    if test_w.targets() == 0 {
        return Err(Error::Other(format!("no test targets: no test user has a labelled week from week {cut} on")));
    }
    observer.stage(&format!(
        "churn {} {} ({policy}): {} / {} / {} users, {} / {} / {} user-weeks (train / valid / test; test labels from week {cut})",
        cfg.cell.name(),
        cfg.mode.name(),
        users[0],
        users[1],
        users[2],
        train_w.targets(),
        valid_w.targets(),
        test_w.targets()
    ));
    let valid_y: Vec<bool> = valid_w.target_labels().map(|y| y == 1).collect();
    let valid_idx: Vec<usize> = (0..valid_y.len()).collect();
    let auc = |p: &[Vec<f64>]| {
        let s: Vec<f64> = p.iter().map(|v| v[1]).collect();
        metrics::roc_auc(&s, &valid_y, &valid_idx)
    };
    let mut model = Model::new(cfg, false, FEATURES, 2);
    let trained = seq::train(&mut model, cfg.cell.name(), &train_w, &valid_w, cfg, 2, &auc, observer)?;
    // Logistic regression is convex and small: trained to convergence with a ten times
    // larger step and four times the epochs, so that the baseline is not short-changed.
    let lr_cfg = LearnConfig { lr: (cfg.lr * 10.0).min(1.0), epochs: cfg.epochs * 4, ..cfg.clone() };
    let mut lr = Model::new(&lr_cfg, true, FEATURES, 2);
    let trained_lr = seq::train(&mut lr, "logistic_regression", &train_w, &valid_w, &lr_cfg, 2, &auc, observer)?;

    let p_model: Vec<f64> = seq::predict(&model.net, &test_w, 2).into_iter().map(|v| v[1]).collect();
    let p_lr: Vec<f64> = seq::predict(&lr.net, &test_w, 2).into_iter().map(|v| v[1]).collect();
    let TestRows { y, rule, since, at, groups } = test_rows(weeks, &test_w, &test_kept);
    let base_rate = train_w.target_labels().filter(|&y| y == 1).count() as f64 / train_w.targets().max(1) as f64;
    let majority = vec![base_rate; y.len()];
    observer.stage("evaluating on the test users (bootstrap intervals over users)");
    let scorers: [(&str, &Vec<f64>); 5] = [
        ("model", &p_model),
        ("logistic_regression", &p_lr),
        ("last_week_inactive", &rule),
        ("days_since_last_visit", &since),
        ("majority", &majority),
    ];
    let est = metrics::bootstrap(&groups, cfg.bootstrap, cfg.seed, &|idx: &[usize]| {
        let mut v = Vec::new();
        for (_, s) in &scorers {
            v.push(metrics::roc_auc(s, &y, idx));
            v.push(metrics::pr_auc(s, &y, idx));
        }
        v.push(metrics::roc_auc(&p_model, &y, idx) - metrics::roc_auc(&p_lr, &y, idx));
        let ll = |p: &[f64]| {
            idx.iter().map(|&i| -(if y[i] { p[i] } else { 1.0 - p[i] }).max(1e-12).ln()).sum::<f64>() / idx.len() as f64
        };
        v.push(ll(&p_model));
        v.push(ll(&p_lr));
        v.push(ll(&majority));
        v
    });
    let all: Vec<usize> = (0..y.len()).collect();
    let accuracy = |p: &[f64]| all.iter().filter(|&&i| (p[i] > 0.5) == y[i]).count() as f64 / all.len().max(1) as f64;
    let table = score_table(&scorers, &est, &accuracy);
    let diff = est[2 * scorers.len()];
    let positives = y.iter().filter(|&&b| b).count();
    let metrics = json!({
        "task": Task::Churn.name(),
        "cell": cfg.cell.name(),
        "mode": cfg.mode.name(),
        "policy": policy,
        "users": { "train": users[0], "valid": users[1], "test": users[2] },
        "targets": { "train": train_w.targets(), "valid": valid_w.targets(), "test": test_w.targets() },
        "test_positive_share": positives as f64 / y.len() as f64,
        "test_labels_from_week": cut,
        "epochs_run": trained.rows.len(),
        "best_epoch": trained.best_epoch,
        "model": table["model"],
        "baselines": {
            "logistic_regression": table["logistic_regression"],
            "last_week_inactive": table["last_week_inactive"],
            "days_since_last_visit": table["days_since_last_visit"],
            "majority": table["majority"],
        },
        "roc_auc_minus_logistic_regression": diff,
    });
    let mut rows = trained.rows.clone();
    rows.extend(trained_lr.rows.iter().cloned());
    let mut files = super::write_training(out, &rows, "validation ROC-AUC")?;
    files.push(super::write_json(
        out,
        "timing.json",
        &json!({
            "train_s": trained.train_s,
            "logistic_regression_train_s": trained_lr.train_s,
            "epochs": trained.rows.len()
        }),
    )?);
    let roc = out.join("roc.png");
    let curves: Vec<(String, Vec<(f64, f64)>)> = scorers[..4]
        .iter()
        .enumerate()
        .map(|(k, (name, s))| (format!("{name} ({:.3})", est[2 * k].value), metrics::roc_curve(s, &y, &all)))
        .collect();
    super::plots::roc_plot(&roc, "week-ahead churn: test ROC", &curves)?;
    files.push(roc);
    files.push(write_predictions(out, &at, &y, &p_model, &p_lr, &rule)?);
    files.push(super::save_model(&model, out, "model.ot")?);
    files.push(super::save_model(&lr, out, "logistic_regression.ot")?);
    files.push(super::write_json(out, "metrics.json", &metrics)?);
    let files = super::finish(out, final_dir, files)?;
    Ok(LearnOutcome { dir: final_dir.to_path_buf(), metrics, train_s: trained.train_s, files })
}

/// The test user-weeks in prediction order: their labels, the last-week rule's and the
/// days-since-last-visit scores, (user, week), and the rows of each user (the bootstrap's
/// groups).
struct TestRows {
    y: Vec<bool>,
    rule: Vec<f64>,
    since: Vec<f64>,
    at: Vec<(u32, u32)>,
    groups: Vec<Vec<usize>>,
}

fn test_rows(weeks: &[Week], test_w: &Windows, test_kept: &[(u32, Vec<usize>)]) -> TestRows {
    let mut r = TestRows {
        y: Vec::new(),
        rule: Vec::new(),
        since: Vec::new(),
        at: Vec::new(),
        groups: vec![Vec::new(); test_kept.len()],
    };
    for (n, &(s, j)) in test_w.origin.iter().enumerate() {
        let w = &weeks[test_kept[s].1[j]];
        r.y.push(w.inactive_next_week == Some(true));
        r.rule.push(if w.sessions == 0 { 1.0 } else { 0.0 });
        r.since.push(w.days_since_last_visit);
        r.at.push((w.user, w.week));
        r.groups[s].push(n);
    }
    r.groups.retain(|g| !g.is_empty());
    r
}

/// Per scorer its ROC-AUC and PR-AUC estimates (and, for the model, logistic regression
/// and the majority rate, the log-loss and the accuracy), from the bootstrap's `est`.
fn score_table(
    scorers: &[(&str, &Vec<f64>)],
    est: &[metrics::Estimate],
    accuracy: &dyn Fn(&[f64]) -> f64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut table = serde_json::Map::new();
    for (k, (name, s)) in scorers.iter().enumerate() {
        let mut m = json!({ "roc_auc": est[2 * k], "pr_auc": est[2 * k + 1] });
        if *name == "model" || *name == "logistic_regression" || *name == "majority" {
            let j = match *name {
                "model" => 0,
                "logistic_regression" => 1,
                _ => 2,
            };
            m["log_loss"] = json!(est[2 * scorers.len() + 1 + j]);
            m["accuracy"] = json!(accuracy(s));
        }
        table.insert(name.to_string(), m);
    }
    table
}

/// predictions.parquet: per test user-week, the label and each model's probability.
fn write_predictions(
    out: &Path,
    at: &[(u32, u32)],
    y: &[bool],
    p_model: &[f64],
    p_lr: &[f64],
    rule: &[f64],
) -> Result<std::path::PathBuf> {
    let path = out.join("predictions.parquet");
    let mut df = crate::output::records::frame(
        df!(
            "user" => at.iter().map(|a| a.0).collect::<Vec<_>>(),
            "week" => at.iter().map(|a| a.1).collect::<Vec<_>>(),
            "inactive_next_week" => y.to_vec(),
            "p_model" => p_model.to_vec(),
            "p_logistic_regression" => p_lr.to_vec(),
            "last_week_inactive" => rule.iter().map(|&r| r > 0.0).collect::<Vec<_>>(),
        ),
        &path,
    )?;
    crate::output::records::write_parquet(&mut df, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_keeps_users_apart_and_labels_of_later_weeks_out_of_training() {
        let mut weeks = Vec::new();
        for user in 0..60u32 {
            for week in 0..12u32 {
                weeks.push(Week {
                    user,
                    week,
                    sessions: (user + week) % 5,
                    active_days: (user + week) % 4,
                    watch_s: 100.0,
                    likes: 1,
                    skips: 1,
                    days_since_last_visit: 1.0,
                    inactive_next_week: (week < 11).then_some((user + week) % 5 == 0),
                });
            }
        }
        let cfg = LearnConfig::default();
        let ((train, train_kept), (valid, valid_kept), (test, test_kept), cut, users) = split(&weeks, &cfg).unwrap();
        assert_eq!(cut, 8);
        assert_eq!(users.iter().sum::<usize>(), 60);
        let ids = |k: &[(u32, Vec<usize>)]| k.iter().map(|x| x.0).collect::<std::collections::BTreeSet<_>>();
        let (a, b, c) = (ids(&train_kept), ids(&valid_kept), ids(&test_kept));
        assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        // Training and validation: every week and every label before the cut.
        for (w, kept) in [(&train, &train_kept), (&valid, &valid_kept)] {
            assert!(kept.iter().flat_map(|k| &k.1).all(|&i| weeks[i].week < cut));
            assert!(w.origin.iter().all(|&(s, j)| weeks[kept[s].1[j]].week + 1 < cut));
        }
        // Test: labels of the cut week and later only, never the unlabelled last week.
        assert!(test.origin.iter().all(|&(s, j)| {
            let w = &weeks[test_kept[s].1[j]];
            w.week + 1 >= cut && w.inactive_next_week.is_some()
        }));
        assert_eq!(test.targets(), users[2] * 4);
    }
}
