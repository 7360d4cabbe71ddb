//! `fypsim run`: one run, or one per seed of a multi-seed config.

use crate::args::ConfigArgs;
use crate::progress::EpisodeBar;
use crate::progress::Progress;
use anyhow::{Context, Result};
use fypsim::config::Checked;
use fypsim::experiment::run::{prepare_run_dir, run_with, RunControl, RunEnd, RunObserver};
use std::path::{Path, PathBuf};

pub(crate) fn cmd_run(
    config: &ConfigArgs,
    out: Option<&Path>,
    resume: Option<&Path>,
    max_episodes: Option<u32>,
    quiet: bool,
) -> Result<()> {
    let (checked, dir) = run_dir(config, out, resume)?;
    if !checked.train.seeds.is_empty() {
        anyhow::ensure!(
            resume.is_none() && max_episodes.is_none(),
            "--resume and --max-episodes work on single-seed runs; rerunning a multi-seed run keeps its finished seeds"
        );
        return cmd_run_seeds(&checked, &dir, quiet);
    }
    if !quiet {
        eprintln!(
            "fypsim: {} `{}` (policy {}, seed {}) -> {}",
            if resume.is_some() { "resuming run" } else { "run" },
            checked.name,
            checked.policy,
            checked.seed,
            dir.display()
        );
    }
    let mut progress = Progress::new(quiet, checked.train.moving_average);
    let control = RunControl { resume: resume.is_some(), max_episodes };
    let end = match run_with(&checked, &dir, &checked.name, control, &mut progress) {
        Ok(end) => end,
        Err(e @ fypsim::Error::Busy { .. }) => return Err(e.into()),
        Err(e) => {
            progress.training_finished();
            return Err(match written_files(&dir) {
                0 => anyhow::Error::from(e).context("run failed before writing anything"),
                _ => anyhow::Error::from(e).context(format!("run failed; the files written so far are in {}", dir.display())),
            });
        }
    };
    let summary = match end {
        RunEnd::Finished(s) => s,
        RunEnd::Stopped { episodes_done } => {
            println!("stopped after episode {episodes_done} of {} (checkpoint saved)", checked.train.episodes);
            println!("continue with: fypsim run --resume {}", dir.display());
            return Ok(());
        }
        RunEnd::Interrupted { episodes_done, checkpointed } => {
            println!("interrupted after episode {episodes_done} of {}", checked.train.episodes);
            if checkpointed {
                println!("checkpoint saved; continue with: fypsim run --resume {}", dir.display());
            } else if checked.train.sessions > 1 {
                println!("runs with train.sessions > 1 cannot be resumed (sessions in flight are not checkpointed); run again to start afresh");
            } else {
                println!("nothing was checkpointed yet; run again to start afresh");
            }
            println!("results so far: {}", dir.display());
            return Err(fypsim::Error::Interrupted.into());
        }
    };
    print_summary(&checked, &summary, &dir);
    println!("results: {}", dir.display());
    Ok(())
}

/// The run's config and folder: a resumed run's own, or a new folder for CONFIG; either is
/// preflighted before anything is written (a run that cannot start leaves no folder).
fn run_dir(config: &ConfigArgs, out: Option<&Path>, resume: Option<&Path>) -> Result<(Checked, PathBuf)> {
    let (checked, dir) = match resume {
        Some(dir) => {
            anyhow::ensure!(
                config.overrides.is_empty() && config.config == Path::new("configs/default.toml"),
                "--resume continues a run with the config it started with; give no CONFIG or --set"
            );
            (
                fypsim::experiment::run::config_of_run(dir).with_context(|| format!("cannot resume {}", dir.display()))?,
                dir.to_path_buf(),
            )
        }
        None => {
            let checked = config.load()?;
            // Before anything is written: a run that cannot start leaves no folder.
            fypsim::drive::preflight::check(&checked)?;
            let dir = prepare_run_dir(&checked, out)?;
            (checked, dir)
        }
    };
    if resume.is_some() {
        fypsim::drive::preflight::check(&checked)?;
    }
    Ok((checked, dir))
}

/// What a finished run prints: its speed, training return, every policy's evaluation and
/// the paired comparisons, and with a calendar the population tables.
fn print_summary(checked: &Checked, summary: &fypsim::experiment::run::Summary, dir: &Path) {
    let speed = fypsim::experiment::run::steps_per_second_of(dir, summary).unwrap_or(f64::NAN);
    println!(
        "{} policy, seed {}: {} episodes, {} steps at {speed:.0} steps/s",
        summary.policy, summary.seed, summary.episodes, summary.total_steps
    );
    let window = summary.episodes.min(100);
    println!("mean training return over the last {window} episodes: {:.3}", summary.mean_return_last_100);
    println!("evaluation ({} episodes each, exploration off, same users and random numbers):", checked.train.eval_episodes);
    for e in &summary.evaluation {
        println!("  {:<14} {:>8.3} ± {:.3}", e.policy.name(), e.mean_return, e.ci95);
    }
    if let Some(a) = &summary.advantage_over_greedy {
        println!(
            "{} - greedy, paired over the {} evaluation episodes: {:+.3} ± {:.3}",
            summary.policy, checked.train.eval_episodes, a.mean, a.ci95
        );
    }
    if let Some(a) = &summary.advantage_over_myopic_oracle {
        println!("{} - myopic_oracle, paired: {:+.3} ± {:.3}", summary.policy, a.mean, a.ci95);
    }
    for (name, a) in &summary.advantage_over_learners {
        println!("{} - {name}, paired: {:+.3} ± {:.3}", summary.policy, a.mean, a.ci95);
    }
    if let Some(g) = &summary.myopia_gap {
        println!("myopia gap (planner - myopic_oracle, paired): {:+.3} ± {:.3}", g.mean, g.ci95);
    }
    if let Some(f) = summary.oracle_fraction {
        println!("oracle_fraction (share of the random-to-oracle gap closed): {f:.3}");
    }
    if !summary.population.is_empty() {
        print_population(&summary.population, dir);
    }
}

/// The population tables of a calendar run: per policy its engagement and retention, and
/// with sign-ups or uploads the creators' side.
fn print_population(population: &[fypsim::drive::calendar::PopulationSummary], dir: &Path) {
    if let Some(first) = population.first() {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1}%", 100.0 * x));
        let signed = if first.new_users > 0 { format!(" ({} of them sign-ups)", first.new_users) } else { String::new() };
        let cohort =
            if first.new_users > 0 { "the users there from the start and active on day 0" } else { "the users active on day 0" };
        println!("population ({} users{signed}, {} days; retention of {cohort}):", first.users, first.days);
        let w = population.iter().map(|p| p.policy.len()).max().unwrap_or(0).max(14);
        println!(
            "  {:<w$} {:>17} {:>14} {:>14} {:>8} {:>8} {:>8} {:>9}",
            "policy", "sessions/user/day", "watch min/user", "return/session", "day 1", "day 7", "day 28", "churned"
        );
        for p in population {
            println!(
                "  {:<w$} {:>17.3} {:>14.1} {:>14.3} {:>8} {:>8} {:>8} {:>8.1}%",
                p.policy,
                p.sessions_per_user_day,
                p.watch_s_per_user / 60.0,
                p.reward_per_session,
                pct(p.day1_retention),
                pct(p.day7_retention),
                pct(p.day28_retention),
                100.0 * p.churned_at_end
            );
        }
        if first.uploads > 0 || first.new_users > 0 {
            println!("creators ({} uploads during the run):", first.uploads);
            println!("  {:<w$} {:>16} {:>14} {:>16}", "policy", "views to uploads", "exposure Gini", "creator earnings");
            for p in population {
                println!(
                    "  {:<w$} {:>15.1}% {:>14.3} {:>16.2}",
                    p.policy,
                    100.0 * p.new_video_share,
                    p.exposure_gini,
                    p.creator_earnings
                );
            }
        }
        println!(
            "days: {}/days.csv and days.png; sessions.parquet, user_weeks.parquet, cohorts.csv, creators.parquet, retention.png",
            dir.display()
        );
    }
}

/// A run's status in a progress line (a failure's message is printed once, at the end).
pub(crate) fn status_word(status: &fypsim::experiment::sweep::RunStatus) -> &'static str {
    use fypsim::experiment::sweep::RunStatus;
    match status {
        RunStatus::Done => "done",
        RunStatus::Skipped => "complete already",
        RunStatus::Busy => "being run by another process",
        RunStatus::Interrupted => "interrupted (checkpoint saved)",
        RunStatus::Failed(_) => "FAILED (see error.txt in its folder)",
    }
}

/// How many result files a run folder holds (its lock file aside).
pub(crate) fn written_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.filter_map(|e| e.ok()).filter(|e| e.file_name() != ".lock").count())
}

pub(crate) fn cmd_run_seeds(checked: &Checked, dir: &Path, quiet: bool) -> Result<()> {
    let jobs = fypsim::cores();
    let n = checked.train.seeds.len();
    if !quiet {
        eprintln!("fypsim: `{}` under {n} seeds ({jobs} at a time) -> {}", checked.name, dir.display());
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let bar = EpisodeBar::new((n * checked.train.episodes) as u64, &format!("{n} seeds"), quiet);
    let result = fypsim::experiment::multiseed::run_seeds(
        checked,
        dir,
        jobs,
        &|seed, status| {
            let k = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            bar.line(&format!("fypsim: [{k}/{n}] seed {seed}: {}", status_word(status)));
        },
        &|k| bar.add(k),
    );
    bar.finish();
    let summary = match result {
        Ok(s) => s,
        Err(fypsim::Error::Interrupted) => {
            println!("interrupted: seeds in flight saved a checkpoint; finished seeds are kept");
            println!("continue with: fypsim run {} --out {}", dir.join("config.toml").display(), dir.display());
            return Err(fypsim::Error::Interrupted.into());
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "{} policy, {} seeds x {} episodes; evaluation over {} episodes per seed, exploration off:",
        summary.policy, n, summary.episodes, summary.eval_episodes
    );
    for (name, i) in &summary.eval_mean_return {
        println!("  {:<14} {:>8.3} ± {:.3}", name, i.mean, i.ci95);
    }
    if !summary.eval_mean_watch_s.is_empty() {
        println!("seconds watched per session:");
        for (name, i) in &summary.eval_mean_watch_s {
            println!("  {:<14} {:>8.1} ± {:.1}", name, i.mean, i.ci95);
        }
    }
    if let Some(f) = &summary.oracle_fraction {
        println!("oracle_fraction: {:.3} ± {:.3}", f.mean, f.ci95);
    }
    if let Some(a) = &summary.advantage_over_greedy {
        println!("{} - greedy: {:.3} ± {:.3}", summary.policy, a.mean, a.ci95);
    }
    if let Some(a) = &summary.advantage_over_myopic_oracle {
        println!("{} - myopic_oracle (paired per seed): {:+.3} ± {:.3}", summary.policy, a.mean, a.ci95);
    }
    for (name, a) in &summary.advantage_over_learners {
        println!("{} - {name} (paired per seed): {:+.3} ± {:.3}", summary.policy, a.mean, a.ci95);
    }
    if let Some(g) = &summary.myopia_gap {
        println!("myopia gap (planner - myopic_oracle, paired per seed): {:+.3} ± {:.3}", g.mean, g.ci95);
    }
    if let Some(r) = &summary.advantage_over_myopic_oracle_relative {
        println!(
            "{} - myopic_oracle, of myopic_oracle's return: {:+.1}% ± {:.1}%",
            summary.policy,
            100.0 * r.mean,
            100.0 * r.ci95
        );
    }
    if let Some(c) = &summary.myopia_gap_closed {
        println!("share of the myopia gap closed: {:.1}% ± {:.1}%", 100.0 * c.mean, 100.0 * c.ci95);
    }
    if let Some(h) = &summary.advantage_beyond_half_myopia_gap {
        println!("{} - myopic_oracle - half the myopia gap: {:+.3} ± {:.3}", summary.policy, h.mean, h.ci95);
    }
    if !summary.population.is_empty() {
        let pct = |i: &Option<fypsim::stats::Interval>| {
            i.as_ref().map_or("-".to_string(), |i| format!("{:.1} ± {:.1}%", 100.0 * i.mean, 100.0 * i.ci95))
        };
        println!("population, across seeds (retention of the users active on day 0):");
        let rows = summary.population.iter().chain(&summary.population_differences);
        let w = rows.clone().map(|(name, _)| name.len()).max().unwrap_or(0).max(24);
        println!("  {:<w$} {:>16} {:>16} {:>16} {:>16}", "policy", "sessions/user/day", "watch min/user", "day 1", "day 7");
        for (name, p) in rows {
            println!(
                "  {:<w$} {:>10.3} ± {:.3} {:>9.1} ± {:.1} {:>16} {:>16}",
                name,
                p.sessions_per_user_day.mean,
                p.sessions_per_user_day.ci95,
                p.watch_s_per_user.mean / 60.0,
                p.watch_s_per_user.ci95 / 60.0,
                pct(&p.day1_retention),
                pct(&p.day7_retention)
            );
        }
        println!("retention.png: the share of users active each day, with 95% bands across seeds");
    }
    println!("results: {}", dir.display());
    Ok(())
}
