//! `fypsim bench`: speed and memory figures of configs.

use anyhow::{Context, Result};
use fypsim::config::Config;
use std::path::{Path, PathBuf};

pub(crate) struct BenchArgs<'a> {
    pub(crate) configs: &'a [PathBuf],
    pub(crate) overrides: &'a [String],
    pub(crate) scaling: Option<&'a Path>,
    pub(crate) json: bool,
    pub(crate) repeats: usize,
    pub(crate) steps: usize,
    pub(crate) kernels_only: bool,
}

pub(crate) fn cmd_bench(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.steps >= 1, "--steps must be at least 1 (got 0)");
    anyhow::ensure!(a.repeats >= 1, "--repeats must be at least 1 (got 0)");
    // Every config is checked before the first (possibly long) measurement starts.
    let mut checked = Vec::new();
    for path in a.configs {
        let c = Config::load(path, a.overrides)?;
        fypsim::drive::preflight::check(&c)?;
        checked.push((path.display().to_string(), c));
    }
    if let Some(dir) = a.scaling {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut reports = Vec::new();
    for (label, c) in &checked {
        let r = fypsim::tools::bench::bench(c, label, a.repeats, a.steps, a.kernels_only, &mut |stage| {
            if !a.json {
                eprintln!("fypsim bench {label}: {stage}");
            }
        })?;
        if a.json {
            // One JSON object per config, one per line.
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_bench(&r);
        }
        reports.push(r);
    }
    if let Some(dir) = a.scaling {
        let files = fypsim::tools::bench::write_scaling(&reports, dir)?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        eprintln!("fypsim bench: wrote {}", names.join(", "));
    }
    Ok(())
}

/// `fypsim bench --learn`: time to quality of each config, seed after seed.
pub(crate) fn cmd_bench_learn(
    configs: &[PathBuf],
    overrides: &[String],
    json: bool,
    every: Option<usize>,
    seeds: &[u64],
) -> Result<()> {
    anyhow::ensure!(every != Some(0), "--every must be at least 1 (got 0)");
    let mut checked = Vec::new();
    for path in configs {
        let c = Config::load(path, overrides)?;
        fypsim::drive::preflight::check(&c)?;
        checked.push((path.display().to_string(), c));
    }
    const TARGETS: [f64; 2] = [0.8, 0.9];
    for (label, c) in &checked {
        let every = every.unwrap_or(if c.train.eval_every > 0 { c.train.eval_every } else { 500 });
        // --seeds, else the config's train.seeds, else its seed; one after another.
        let seeds = if !seeds.is_empty() {
            seeds.to_vec()
        } else if !c.train.seeds.is_empty() {
            c.train.seeds.clone()
        } else {
            vec![c.seed]
        };
        let mut reports = Vec::new();
        for &seed in &seeds {
            if !json {
                eprintln!("fypsim bench --learn {label}, seed {seed}: evaluating every {every} episodes");
            }
            let r = fypsim::tools::bench::time_to_quality(&c.with_seed(seed), label, every, &TARGETS, &mut |p| {
                if !json {
                    eprintln!(
                        "  {:>7} episodes {:>9} steps {:>8} updates {:>8.1} s  return {:.3}  oracle_fraction {:.3}",
                        p.episodes, p.env_steps, p.updates, p.training_s, p.mean_return, p.oracle_fraction
                    );
                }
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{label}, seed {seed} (random {:.3}, oracle {:.3}, {} fresh evaluation episodes per point):",
                    r.random_return, r.oracle_return, r.eval_episodes
                );
                for t in &r.reached {
                    match &t.at {
                        Some(p) => println!(
                            "  oracle_fraction {:.1} after {:.1} s of training ({} episodes, {} steps, {} updates)",
                            t.oracle_fraction, p.training_s, p.episodes, p.env_steps, p.updates
                        ),
                        None => println!(
                            "  oracle_fraction {:.1} not reached within {} episodes",
                            t.oracle_fraction, c.train.episodes
                        ),
                    }
                }
            }
            reports.push(r);
        }
        if !json && reports.len() > 1 {
            for (k, &t) in TARGETS.iter().enumerate() {
                let times: Vec<f64> = reports.iter().filter_map(|r| r.reached[k].at.as_ref().map(|p| p.training_s)).collect();
                if times.len() == reports.len() {
                    let mut sorted = times.clone();
                    sorted.sort_by(f64::total_cmp);
                    println!(
                        "{label}: oracle_fraction {t:.1} reached by all {} seeds; training time median {:.1} s, max {:.1} s, sum {:.1} s",
                        reports.len(),
                        sorted[sorted.len() / 2],
                        sorted[sorted.len() - 1],
                        sorted.iter().sum::<f64>()
                    );
                } else {
                    println!("{label}: oracle_fraction {t:.1} reached by {} of {} seeds", times.len(), reports.len());
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn print_bench(r: &fypsim::tools::bench::BenchReport) {
    let na = |x: f64, prec: usize| if x.is_nan() { "-".to_string() } else { format!("{x:.prec$}") };
    println!("{} ({} users, {} videos, {} history rows); medians", r.config, r.users, r.videos, r.history_rows);
    println!("  world build          {:>12} s", na(r.world_build_s, 3));
    println!("  matrix build         {:>12} s", na(r.matrix_build_s, 3));
    println!("  top-{} neighbours    {:>12} s", r.neighbours_k, na(r.neighbours_build_s, 3));
    println!("  candidates / request {:>12} us", na(r.candidates_us, 1));
    println!("    from the neighbour lists {:>6} us", na(r.candidates_neighbours_us, 1));
    println!("  update / interaction {:>12} us", na(r.update_us, 3));
    println!(
        "  neighbour-list recall@r {:>9.3} fresh, {:.3} after {} interactions without refresh",
        r.recall_at_r, r.recall_stale, r.stale_after_interactions
    );
    println!("  DQN update           {:>12} us", na(r.dqn_update_us, 1));
    println!(
        "    one small libtorch op {:>7} us (the update costs as much as {} of them)",
        na(r.libtorch_op_us, 2),
        na(r.dqn_update_us / r.libtorch_op_us, 0)
    );
    println!(
        "  bandit decision + update (d = {}): linucb {} us, thompson {} us, epsilon_greedy {} us",
        r.bandit_dim,
        na(r.linucb_step_us, 2),
        na(r.thompson_step_us, 2),
        na(r.epsilon_greedy_step_us, 2)
    );
    println!(
        "    thompson's propensity estimate {} us ({} draws; logging only)",
        na(r.thompson_propensity_us, 0),
        fypsim::tools::bench::THOMPSON_BENCH_DRAWS
    );
    println!("  env steps            {:>12} /s (greedy, no learning)", na(r.env_steps_per_s, 0));
    let cadence = match r.train_every {
        1 => "one update per step".to_string(),
        n => format!("one update every {n} steps"),
    };
    println!("  training steps       {:>12} /s (DQN, {cadence})", na(r.train_steps_per_s, 0));
    println!(
        "  lockstep, {} sessions: env {} /s on 1 thread, {} /s on {} threads; training {} /s",
        r.parallel_sessions,
        na(r.lockstep_env_steps_per_s_1_thread, 0),
        na(r.lockstep_env_steps_per_s, 0),
        r.parallel_threads,
        na(r.lockstep_train_steps_per_s, 0)
    );
    println!("  peak memory          {:>12} MiB", na(r.peak_rss_mb, 0));
}
