//! `fypsim sweep`: every configuration x seed of a sweep file.

use crate::cmd::run::status_word;
use crate::progress::EpisodeBar;
use anyhow::Result;
use std::path::Path;

pub(crate) fn cmd_sweep(path: &Path, out: Option<&Path>, jobs: Option<usize>, shard: Option<&str>, dry_run: bool) -> Result<()> {
    use fypsim::experiment::sweep::{execute, is_complete, parse_shard, plan, shard as take_shard};
    let sweep = plan(path, out)?;
    let total = sweep.runs.len();
    let runs = match shard {
        Some(s) => {
            let (i, n) = parse_shard(s)?;
            take_shard(sweep.runs, i, n)
        }
        None => sweep.runs,
    };
    let out_dir = out.map(Path::to_path_buf).unwrap_or_else(|| Path::new("results/sweeps").join(&sweep.name));
    let pending = runs.iter().filter(|r| !is_complete(r)).count();
    eprintln!(
        "fypsim: sweep `{}`: {} runs validated{}; {} to run, {} already complete",
        sweep.name,
        total,
        shard.map_or(String::new(), |s| format!(", shard {s} has {}", runs.len())),
        pending,
        runs.len() - pending
    );
    if dry_run {
        for r in &runs {
            println!("{}\t{}\t{}", if is_complete(r) { "complete" } else { "pending" }, r.dir.display(), r.overrides.join(" "));
        }
        return Ok(());
    }
    let jobs = jobs.unwrap_or_else(fypsim::cores);
    let bar = EpisodeBar::new(fypsim::experiment::sweep::total_episodes(&runs), &format!("{} runs", runs.len()), false);
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let outcome = execute(
        &runs,
        jobs,
        &|r, status| {
            let k = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            bar.line(&format!("fypsim: [{k}/{}] {} seed {}: {}", runs.len(), r.label, r.seed, status_word(status)));
        },
        &|k| bar.add(k),
    );
    bar.finish();
    println!("{} runs done, {} skipped (complete), {} failed", outcome.done, outcome.skipped, outcome.failed.len());
    if outcome.busy > 0 {
        println!("{} runs were being run by another process (their folders are locked) and were left to it", outcome.busy);
    }
    for (run, err) in &outcome.failed {
        println!("  failed: {run}: {err}");
    }
    println!("results: {}", out_dir.display());
    if outcome.interrupted + outcome.not_started > 0 {
        println!(
            "interrupted: {} runs stopped with a checkpoint, {} not started; run the same command to continue",
            outcome.interrupted, outcome.not_started
        );
        return Err(fypsim::Error::Interrupted.into());
    }
    println!("next: fypsim report {}", out_dir.display());
    anyhow::ensure!(
        outcome.failed.is_empty(),
        "{} runs failed (each folder has error.txt); running the same command retries them",
        outcome.failed.len()
    );
    Ok(())
}
