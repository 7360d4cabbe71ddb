//! `fypsim learn`: sequence models on a run's logs.

use crate::args::LearnTask;
use crate::progress::LearnProgress;
use anyhow::Result;

/// An estimate of a learn metrics.json (`value`, `ci95`) as "v [lo, hi]".
pub(crate) fn estimate_text(v: &serde_json::Value) -> String {
    let x = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    format!("{:.4} [{:.4}, {:.4}]", x(&v["value"]), x(&v["ci95"][0]), x(&v["ci95"][1]))
}

pub(crate) fn cmd_learn(task: &LearnTask) -> Result<()> {
    use fypsim::learn::{churn, next_action};
    match task {
        LearnTask::NextAction { args, user: Some(user), next } => {
            let cfg = args.load()?;
            let mut obs = LearnProgress { bar: None, quiet: args.quiet };
            let (rows, dir) = next_action::predict_user(&args.run_dir, &cfg, *user, *next, &mut obs)?;
            println!(
                "user {user}: the last {} logged steps, each predicted by the model in {} from the {} steps before it",
                rows.len(),
                dir.display(),
                cfg.window
            );
            println!(
                "{:>8} {:>4}  {:<14} {:>32}   {:>32}  actual",
                "episode", "t", "category", "model: watch skip like left", "true: watch skip like left"
            );
            for r in rows {
                let p = &r.predicted;
                let b = &r.bayes;
                println!(
                    "{:>8} {:>4}  {:<14} {:>11.2} {:>4.2} {:>4.2} {:>4.2}   {:>10.2} {:>4.2} {:>4.2} {:>4.2}  {}",
                    r.episode, r.t, r.category, p[0], p[1], p[2], p[3], b[0], b[1], b[2], b[3], r.actual
                );
            }
            Ok(())
        }
        LearnTask::NextAction { args, .. } => {
            let cfg = args.load()?;
            let mut obs = LearnProgress { bar: None, quiet: args.quiet };
            let o = next_action::run(&args.run_dir, &cfg, &mut obs)?;
            let m = &o.metrics;
            let f = estimate_text;
            println!(
                "next action, {} {}: test log-loss (nats) and accuracy, 95% intervals over test users:",
                cfg.cell.name(),
                cfg.mode.name()
            );
            for (name, v) in [
                ("model", &m["model"]),
                ("markov", &m["baselines"]["markov"]),
                ("majority", &m["baselines"]["majority"]["metrics"]),
                ("bayes", &m["bayes"]),
            ] {
                println!(
                    "  {:<10} log-loss {}  accuracy {}  macro-F1 {:.4}",
                    name,
                    f(&v["log_loss"]),
                    f(&v["accuracy"]),
                    v["macro_f1"].as_f64().unwrap_or(f64::NAN)
                );
            }
            println!("share of the Markov-to-Bayes log-loss gap closed: {}", f(&m["markov_to_bayes_gap_closed"]));
            println!("trained in {:.1} s ({} epochs, best {})", o.train_s, m["epochs_run"], m["best_epoch"]);
            println!("results in {}", o.dir.display());
            Ok(())
        }
        LearnTask::Churn { args } => {
            let cfg = args.load()?;
            let mut obs = LearnProgress { bar: None, quiet: args.quiet };
            let o = churn::run(&args.run_dir, &cfg, &mut obs)?;
            let m = &o.metrics;
            let f = estimate_text;
            println!(
                "week-ahead churn ({}), {} {}: test ROC-AUC and PR-AUC, 95% intervals over test users (inactive next week: {:.1}%):",
                m["policy"].as_str().unwrap_or(""),
                cfg.cell.name(),
                cfg.mode.name(),
                100.0 * m["test_positive_share"].as_f64().unwrap_or(f64::NAN)
            );
            for (name, v) in [
                ("model", &m["model"]),
                ("logistic_regression", &m["baselines"]["logistic_regression"]),
                ("last_week_inactive", &m["baselines"]["last_week_inactive"]),
                ("days_since_last_visit", &m["baselines"]["days_since_last_visit"]),
            ] {
                println!("  {:<22} ROC-AUC {}  PR-AUC {}", name, f(&v["roc_auc"]), f(&v["pr_auc"]));
            }
            println!("ROC-AUC, model minus logistic regression: {}", f(&m["roc_auc_minus_logistic_regression"]));
            println!("trained in {:.1} s ({} epochs, best {})", o.train_s, m["epochs_run"], m["best_epoch"]);
            println!("results in {}", o.dir.display());
            Ok(())
        }
    }
}
