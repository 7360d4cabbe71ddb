//! `fypsim`: the command-line front end. It parses arguments, shows progress and prints;
//! all logic lives in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use fypsim::config::{Checked, Config};
use fypsim::run::{prepare_run_dir, run_with, RunControl, RunEnd, RunObserver};
use fypsim::train::EpisodeRecord;

#[derive(Parser)]
#[command(name = "fypsim", version, about = "A reinforcement-learning recommendation simulator for short-video feeds")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArgs {
    /// The experiment config (TOML).
    #[arg(default_value = "configs/default.toml")]
    config: PathBuf,
    /// Override a config value, e.g. --set dqn.lr=0.0005 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Checked> {
        Ok(Config::load(&self.config, &self.overrides)?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train the configured policy and write results (tables, plots, summary).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Write into this folder instead of results/<name>/seed<seed>-<NNN>/.
        #[arg(long, conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Continue the interrupted run in DIR from its last checkpoint (its own
        /// config.toml is used; CONFIG and --set are not allowed).
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Stop cleanly, after a checkpoint, once this many training episodes are done
        /// (for time-limited jobs); continue later with --resume.
        #[arg(long, value_name = "N")]
        max_episodes: Option<u32>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Evaluate the agent saved in a run folder against the baselines.
    Eval {
        /// A run folder (with config.toml and checkpoint/).
        dir: PathBuf,
        /// Evaluation episodes per policy (default: the run's train.eval_episodes).
        #[arg(long)]
        episodes: Option<usize>,
        /// Also score every choice of the saved agent with the true response model against
        /// the best candidate on offer; writes choices_<episodes>.csv and prints a summary.
        #[arg(long)]
        choices: bool,
    },
    /// One session of a user under several baselines, step by step, on the same random
    /// numbers: anatomy.csv and anatomy.png (rewards, E[p] and satiation per step).
    Anatomy {
        #[command(flatten)]
        config: ConfigArgs,
        /// The user id (0-based).
        #[arg(long)]
        user: u64,
        /// Comma-separated baselines to compare.
        #[arg(long, default_value = "myopic_oracle,planner")]
        policies: String,
        /// Which evaluation episode's random numbers to use.
        #[arg(long, default_value_t = 0)]
        episode: u64,
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a user's profile, history and top-k candidates as JSON.
    Inspect {
        #[command(flatten)]
        config: ConfigArgs,
        /// The user id (0-based).
        #[arg(long)]
        user: u64,
    },
    /// Write the generated world's users.csv, videos.csv and interactions.csv.
    World {
        #[command(flatten)]
        config: ConfigArgs,
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every configuration x seed of a sweep file, in parallel, resuming where it stopped.
    Sweep {
        /// The sweep file (TOML: base, seeds, [grid], [set]).
        sweep: PathBuf,
        /// Output folder (default: results/sweeps/<sweep name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Runs at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run only the I-th of N disjoint parts, e.g. --shard 2/4 (for a job array).
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Only list the runs (and whether each is complete).
        #[arg(long)]
        dry_run: bool,
    },
    /// Aggregate every run below DIR into report.md, report.csv, curves.png, policies.png.
    ///
    /// With --ab-log DIR: the A/B report of a served experiment's decision log
    /// (ab_report.md, ab_report.json, ab_report.png).
    Report {
        /// A folder holding runs (a sweep's output, or results/).
        #[arg(required_unless_present = "ab_log")]
        dir: Option<PathBuf>,
        /// Compare two configurations (labels as in report.md) as an A/B test.
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        ab: Option<Vec<String>>,
        /// The decision log of `fypsim serve --log DIR`: per arm the mean reward and
        /// watch time per session, their difference, power and a sample-ratio check.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["dir", "ab"])]
        ab_log: Option<PathBuf>,
        /// With --ab-log: where to write the report (default: the log's folder).
        #[arg(long, requires = "ab_log")]
        out: Option<PathBuf>,
    },
    /// Serve policies over HTTP as an A/B experiment (docs/serving.md): POST /recommend,
    /// POST /feedback, GET /health, GET /metrics; every decision and outcome goes to the
    /// decision log. Stops, draining requests in flight, on Ctrl-C or SIGTERM.
    Serve {
        /// An arm: NAME=SOURCE, where SOURCE is a run folder with a saved agent or a
        /// baseline (greedy, random, most_viewed). Once for serving, twice for an A/B test.
        #[arg(long = "arm", value_name = "NAME=SOURCE", required = true)]
        arms: Vec<String>,
        /// Traffic shares of the arms, e.g. 50/50 or 90/10 (default: equal).
        #[arg(long)]
        split: Option<String>,
        /// The port (0: any free port; the address is printed).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The decision log's folder (appended to when it holds this experiment's log).
        #[arg(long, value_name = "DIR")]
        log: Option<PathBuf>,
        /// The world's config (default: the first run folder's; configs/default.toml
        /// when every arm is a baseline).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config value of the world (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// The experiment's salt: users are assigned to arms by a hash of (salt, user).
        #[arg(long, default_value = "fypsim-ab")]
        salt: String,
        /// Threads answering HTTP (the policies run on one engine thread besides).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Drive a served experiment with simulated users over HTTP: each answers its
    /// recommendations with the world's user model and posts the feedback. Prints
    /// requests per second and latency percentiles.
    Traffic {
        /// The service, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// How many of the world's users take part (drawn with --seed).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Closed loop: workers, each waiting for its answers.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Open loop instead: recommendation requests per second, whatever the service's pace.
        #[arg(long)]
        rate: Option<f64>,
        /// The world's config: the same as the server's (checked).
        #[arg(long, default_value = "configs/default.toml")]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Seeds which users take part and their responses.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Measure world, matrix, neighbour, candidate, update and DQN timings for one config
    /// or several (smallest first: peak memory is the process's, so it only grows).
    Bench {
        /// Config files (TOML); several measure how cost grows with size.
        #[arg(default_value = "configs/default.toml")]
        configs: Vec<PathBuf>,
        /// Override a config value in every config, e.g. --set dqn.device=cuda (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Also write scaling.csv and scaling.png (cost against size, log-log) into DIR.
        #[arg(long, value_name = "DIR")]
        scaling: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Repeats of the whole-world timings (medians are reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Steps of the throughput loops.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// Only the data-structure kernels (world, matrix, neighbours, candidates,
        /// updates): skips the DQN and the whole-loop throughput, which copy the world.
        #[arg(long)]
        kernels_only: bool,
        /// Time to quality instead: train each config and report the training time
        /// until its evaluation (the config's eval_episodes, fresh worlds) first reaches
        /// oracle_fraction 0.8 and 0.9, with the steps and updates it took.
        #[arg(long, conflicts_with_all = ["kernels_only", "scaling"])]
        learn: bool,
        /// With --learn: evaluate every this many episodes (default: the config's
        /// train.eval_every, or 500 when that is 0).
        #[arg(long, value_name = "EPISODES")]
        every: Option<usize>,
        /// With --learn: the seeds to train, one after another (default: the config's train.seeds, or its seed).
        #[arg(long, value_delimiter = ',', value_name = "S1,S2,...")]
        seeds: Vec<u64>,
    },
    /// Train and evaluate sequence models on a run's logs (docs/learn.md): the next
    /// response from the step log, or week-ahead churn from a population run's weeks.
    Learn {
        #[command(subcommand)]
        task: LearnTask,
    },
    /// Validate config files and print the resolved config of each.
    Check {
        /// Config files to validate.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
        /// Print the resolved config (with every default filled in).
        #[arg(long)]
        print: bool,
    },
}

#[derive(Subcommand)]
enum LearnTask {
    /// Predict each response (watched, skipped, liked, left) from the interactions before
    /// it; writes RUN_DIR/learn/next-action-<cell>-<mode>/.
    NextAction {
        #[command(flatten)]
        args: LearnArgs,
        /// Print this user's last --next logged steps as the saved model predicts them
        /// (training one first if the folder has none for these settings).
        #[arg(long)]
        user: Option<u32>,
        /// With --user: how many steps.
        #[arg(long, default_value_t = 10, requires = "user")]
        next: usize,
    },
    /// Predict that a user is inactive next week from their weeks (a population run of at
    /// least 12 weeks); writes RUN_DIR/learn/churn-<cell>-<mode>/.
    Churn {
        #[command(flatten)]
        args: LearnArgs,
    },
}

#[derive(Args)]
struct LearnArgs {
    /// A finished run folder.
    run_dir: PathBuf,
    /// Learn settings (TOML; docs/learn.md lists the keys and defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a learn setting, e.g. --set hidden=32 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// The recurrent cell: rnn, lstm or gru (overrides the settings).
    #[arg(long)]
    cell: Option<String>,
    /// many-to-many or many-to-one (overrides the settings).
    #[arg(long)]
    mode: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl LearnArgs {
    fn load(&self) -> Result<fypsim::learn::LearnConfig> {
        let mut overrides = self.overrides.clone();
        if let Some(c) = &self.cell {
            if fypsim::learn::Cell::from_name(c).is_none() {
                anyhow::bail!("unknown cell `{c}` (allowed: rnn, lstm, gru)");
            }
            overrides.push(format!("cell=\"{c}\""));
        }
        if let Some(m) = &self.mode {
            let Some(mode) = fypsim::learn::Mode::from_name(m) else {
                anyhow::bail!("unknown mode `{m}` (allowed: many-to-many, many-to-one)");
            };
            let key = if mode == fypsim::learn::Mode::ManyToMany { "many_to_many" } else { "many_to_one" };
            overrides.push(format!("mode=\"{key}\""));
        }
        Ok(fypsim::learn::LearnConfig::load(self.config.as_deref(), &overrides)?)
    }
}

/// The progress display of `fypsim learn`: a bar per epoch, a line per finished epoch.
struct LearnProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl fypsim::learn::LearnObserver for LearnProgress {
    fn stage(&mut self, message: &str) {
        if !self.quiet {
            eprintln!("fypsim: {message}");
        }
    }

    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        if self.quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} epoch {epoch}/{epochs} [{{bar:30.cyan/blue}}] batch {{pos}}/{{len}} {{msg}} [{{elapsed_precise}}]"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        self.bar = Some(bar);
    }

    fn batch(&mut self, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("| loss {loss:.4}"));
            b.inc(1);
        }
    }

    fn epoch_done(&mut self, r: &fypsim::learn::EpochRow) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "fypsim: {} epoch {}: training loss {:.4}, validation loss {:.4}, validation metric {:.4}{}",
                r.model,
                r.epoch,
                r.train_loss,
                r.valid_loss,
                r.valid_metric,
                if r.best { " (best so far)" } else { "" }
            );
        }
    }
}

/// An estimate of a learn metrics.json (`value`, `ci95`) as "v [lo, hi]".
fn estimate_text(v: &serde_json::Value) -> String {
    let x = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    format!("{:.4} [{:.4}, {:.4}]", x(&v["value"]), x(&v["ci95"][0]), x(&v["ci95"][1]))
}

fn cmd_learn(task: &LearnTask) -> Result<()> {
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

/// The progress display of a run: a bar with episode, mean return, epsilon and loss.
struct Progress {
    bar: Option<ProgressBar>,
    /// The last `window` returns.
    returns: std::collections::VecDeque<f64>,
    window: usize,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool, window: usize) -> Progress {
        Progress { bar: None, returns: std::collections::VecDeque::new(), window, quiet }
    }
}

impl RunObserver for Progress {
    fn stage(&mut self, message: &str) {
        if !self.quiet {
            eprintln!("fypsim: {message}");
        }
    }

    fn training_started(&mut self, episodes: usize, done: usize) {
        let bar = ProgressBar::new(episodes as u64);
        bar.set_position(done as u64);
        if self.quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} training [{bar:30.cyan/blue}] episode {pos}/{len} {msg} [{elapsed_precise}, eta {eta}]",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
        if !self.quiet {
            eprintln!("fypsim: training for {} episodes", episodes - done);
        }
    }

    fn episode(&mut self, r: &EpisodeRecord) {
        if self.returns.len() == self.window {
            self.returns.pop_front();
        }
        self.returns.push_back(r.episode_return);
        let avg = self.returns.iter().sum::<f64>() / self.returns.len() as f64;
        let loss = r.mean_loss.map_or("-".to_string(), |l| format!("{l:.4}"));
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "| return {:.2} (avg {}: {:.2}) | epsilon {:.3} | loss {loss}",
                r.episode_return, self.window, avg, r.epsilon
            ));
            bar.inc(1);
        }
        // Without a terminal, a plain line every tenth of the run.
        let n = self.bar.as_ref().map_or(0, |b| b.length().unwrap_or(0));
        if !self.quiet && !std::io::stderr().is_terminal() && n >= 10 && (r.episode as u64 + 1).is_multiple_of(n / 10) {
            eprintln!(
                "fypsim: episode {}/{n}: mean return (last {}) {:.2}, epsilon {:.3}, loss {loss}",
                r.episode + 1,
                self.window,
                avg,
                r.epsilon
            );
        }
    }

    fn training_finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn calendar_started(&mut self, policy: &str, days: usize) {
        let bar = ProgressBar::new(days as u64);
        if self.quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30.cyan/blue}] day {pos}/{len} [{elapsed_precise}, eta {eta}]")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("population under {policy}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
        if !self.quiet {
            eprintln!("fypsim: the whole population lives {days} days under {policy}");
        }
    }

    fn calendar_day(&mut self, day: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(day as u64);
            // Without a terminal, a plain line every week.
            if !self.quiet && !std::io::stderr().is_terminal() && day.is_multiple_of(7) {
                eprintln!("fypsim: day {day}/{} done after {:.0} s", bar.length().unwrap_or(0), bar.elapsed().as_secs_f64());
            }
        }
    }

    fn calendar_finished(&mut self) {
        self.training_finished();
    }
}

fn cmd_run(config: &ConfigArgs, out: Option<&Path>, resume: Option<&Path>, max_episodes: Option<u32>, quiet: bool) -> Result<()> {
    let (checked, dir) = match resume {
        Some(dir) => {
            anyhow::ensure!(
                config.overrides.is_empty() && config.config == Path::new("configs/default.toml"),
                "--resume continues a run with the config it started with; give no CONFIG or --set"
            );
            (fypsim::run::config_of_run(dir).with_context(|| format!("cannot resume {}", dir.display()))?, dir.to_path_buf())
        }
        None => {
            let checked = config.load()?;
            // Before anything is written: a run that cannot start leaves no folder.
            fypsim::run::preflight(&checked)?;
            let dir = prepare_run_dir(&checked, out)?;
            (checked, dir)
        }
    };
    if resume.is_some() {
        fypsim::run::preflight(&checked)?;
    }
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
    let speed = fypsim::run::steps_per_second_of(&dir, &summary).unwrap_or(f64::NAN);
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
    if let Some(g) = &summary.myopia_gap {
        println!("myopia gap (planner - myopic_oracle, paired): {:+.3} ± {:.3}", g.mean, g.ci95);
    }
    if let Some(f) = summary.oracle_fraction {
        println!("oracle_fraction (share of the random-to-oracle gap closed): {f:.3}");
    }
    if let Some(first) = summary.population.first() {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1}%", 100.0 * x));
        let signed = if first.new_users > 0 { format!(" ({} of them sign-ups)", first.new_users) } else { String::new() };
        let cohort =
            if first.new_users > 0 { "the users there from the start and active on day 0" } else { "the users active on day 0" };
        println!("population ({} users{signed}, {} days; retention of {cohort}):", first.users, first.days);
        let w = summary.population.iter().map(|p| p.policy.len()).max().unwrap_or(0).max(14);
        println!(
            "  {:<w$} {:>17} {:>14} {:>14} {:>8} {:>8} {:>8} {:>9}",
            "policy", "sessions/user/day", "watch min/user", "return/session", "day 1", "day 7", "day 28", "churned"
        );
        for p in &summary.population {
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
            for p in &summary.population {
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
    println!("results: {}", dir.display());
    Ok(())
}

/// The progress of many runs at once (a sweep, a multi-seed run): training episodes summed
/// over the runs, as a bar on a terminal and, without one, a line at every tenth.
struct EpisodeBar {
    bar: ProgressBar,
    total: u64,
    done: std::sync::atomic::AtomicU64,
    /// The last tenth reported by a line.
    tenth: std::sync::atomic::AtomicU64,
    lines: bool,
    quiet: bool,
    started: Instant,
}

impl EpisodeBar {
    fn new(total: u64, runs: &str, quiet: bool) -> EpisodeBar {
        let bar = ProgressBar::new(total);
        let terminal = std::io::stderr().is_terminal();
        if quiet || !terminal {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {runs} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} training episodes [{{elapsed_precise}}, eta {{eta}}]"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        EpisodeBar {
            bar,
            total: total.max(1),
            done: Default::default(),
            tenth: Default::default(),
            lines: !quiet && !terminal,
            quiet,
            started: Instant::now(),
        }
    }

    /// `n` more training episodes are done.
    fn add(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.bar.inc(n);
        let done = self.done.fetch_add(n, SeqCst) + n;
        let tenth = (done * 10 / self.total).min(10);
        if self.lines && self.tenth.fetch_max(tenth, SeqCst) < tenth {
            eprintln!(
                "fypsim: {}% of the training episodes done ({done} of {}) after {:.0} s",
                tenth * 10,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Prints a line above the bar.
    fn line(&self, text: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A run's status in a progress line (a failure's message is printed once, at the end).
fn status_word(status: &fypsim::sweep::RunStatus) -> &'static str {
    use fypsim::sweep::RunStatus;
    match status {
        RunStatus::Done => "done",
        RunStatus::Skipped => "complete already",
        RunStatus::Busy => "being run by another process",
        RunStatus::Interrupted => "interrupted (checkpoint saved)",
        RunStatus::Failed(_) => "FAILED (see error.txt in its folder)",
    }
}

/// How many result files a run folder holds (its lock file aside).
fn written_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.filter_map(|e| e.ok()).filter(|e| e.file_name() != ".lock").count())
}

fn cmd_run_seeds(checked: &Checked, dir: &Path, quiet: bool) -> Result<()> {
    let jobs = fypsim::cores();
    let n = checked.train.seeds.len();
    if !quiet {
        eprintln!("fypsim: `{}` under {n} seeds ({jobs} at a time) -> {}", checked.name, dir.display());
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let bar = EpisodeBar::new((n * checked.train.episodes) as u64, &format!("{n} seeds"), quiet);
    let result = fypsim::multiseed::run_seeds(
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
        let pct = |i: &Option<fypsim::multiseed::Interval>| {
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

struct BenchArgs<'a> {
    configs: &'a [PathBuf],
    overrides: &'a [String],
    scaling: Option<&'a Path>,
    json: bool,
    repeats: usize,
    steps: usize,
    kernels_only: bool,
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.steps >= 1, "--steps must be at least 1 (got 0)");
    anyhow::ensure!(a.repeats >= 1, "--repeats must be at least 1 (got 0)");
    // Every config is checked before the first (possibly long) measurement starts.
    let mut checked = Vec::new();
    for path in a.configs {
        let c = Config::load(path, a.overrides)?;
        fypsim::run::preflight(&c)?;
        checked.push((path.display().to_string(), c));
    }
    if let Some(dir) = a.scaling {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut reports = Vec::new();
    for (label, c) in &checked {
        let r = fypsim::bench::bench(c, label, a.repeats, a.steps, a.kernels_only, &mut |stage| {
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
        let files = fypsim::bench::write_scaling(&reports, dir)?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        eprintln!("fypsim bench: wrote {}", names.join(", "));
    }
    Ok(())
}

/// `fypsim bench --learn`: time to quality of each config, seed after seed.
fn cmd_bench_learn(configs: &[PathBuf], overrides: &[String], json: bool, every: Option<usize>, seeds: &[u64]) -> Result<()> {
    anyhow::ensure!(every != Some(0), "--every must be at least 1 (got 0)");
    let mut checked = Vec::new();
    for path in configs {
        let c = Config::load(path, overrides)?;
        fypsim::run::preflight(&c)?;
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
            let r = fypsim::bench::time_to_quality(&c.with_seed(seed), label, every, &TARGETS, &mut |p| {
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

fn print_bench(r: &fypsim::bench::BenchReport) {
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

fn cmd_eval(dir: &Path, episodes: Option<usize>, choices: bool) -> Result<()> {
    if choices {
        let (path, records) = fypsim::run::eval_saved_choices(dir, episodes)?;
        let s = fypsim::train::summarize_choices(&records, 5);
        println!("choices of the agent saved in {} over {} steps, scored with the true response model:", dir.display(), s.steps);
        println!("  shows a candidate of the best expected p on offer: {:.1}% of steps", 100.0 * s.oracle_match);
        println!("  mean shortfall in expected p per step: {:.4}", s.mean_shortfall);
        println!(
            "  a candidate of the user's interests was on offer at {:.1}% of steps, and shown at {:.1}% of those",
            100.0 * s.interest_on_offer,
            100.0 * s.interest_shown_when_offered
        );
        println!("  most frequent misses (best expected p on offer -> shown: share of steps):");
        for (best, shown, share) in &s.misses {
            println!("    {best:.3} -> {shown:.3}: {:.1}%", 100.0 * share);
        }
        println!("wrote {}", path.display());
    }
    let results = fypsim::run::eval_saved(dir, episodes)?;
    let n = results[0].episodes;
    println!("evaluation of the agent saved in {} ({n} episodes each, exploration off, common random numbers):", dir.display());
    let names: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(k, e)| if k == 0 { format!("{} (saved)", e.policy) } else { e.policy.name().to_string() })
        .collect();
    for (name, e) in names.iter().zip(&results) {
        println!("  {:<14} {:>8.3} ± {:.3}", name, e.mean_return, e.ci95);
    }
    if let Some(f) = fypsim::run::oracle_fraction_of(&results) {
        println!("oracle_fraction: {f:.3}");
    }
    let path = dir.join(format!("eval_saved_{n}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&results)?).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn cmd_anatomy(config: &ConfigArgs, user: u64, policies: &str, episode: u64, out: &Path) -> Result<()> {
    use fypsim::config::PolicyKind;
    let checked = config.load()?;
    let kinds = policies
        .split(',')
        .map(|name| {
            PolicyKind::from_name(name.trim()).ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().skip(1).map(|k| k.name()).collect();
                anyhow::anyhow!("--policies: unknown policy `{}` (allowed: {})", name.trim(), names.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sessions = fypsim::inspect::anatomy(&checked, user, &kinds, episode)?;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let csv = out.join("anatomy.csv");
    let mut text = String::from("policy,t,video,category,response,reward,watch_s,expected_p,satiation,quality,left\n");
    for (kind, steps) in &sessions {
        for s in steps {
            text += &format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                kind, s.t, s.video, s.category, s.response, s.reward, s.watch_s, s.expected_p, s.satiation, s.quality, s.left
            );
        }
    }
    std::fs::write(&csv, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", csv.display()))?;
    let series = |f: &dyn Fn(&[fypsim::inspect::AnatomyStep], usize) -> f64| -> Vec<fypsim::plot::Series> {
        sessions
            .iter()
            .map(|(kind, steps)| fypsim::plot::Series {
                name: kind.name().to_string(),
                points: (0..steps.len()).map(|i| (i as f64, f(steps, i))).collect(),
            })
            .collect()
    };
    let png = out.join("anatomy.png");
    fypsim::plot::panels_plot(
        &png,
        &format!("{}: user {user}'s session under each policy (same random numbers)", checked.name),
        "step of the session",
        &[
            ("return so far", series(&|s, i| s[..=i].iter().map(|x| x.reward).sum())),
            ("E[p] of the shown video", series(&|s, i| s[i].expected_p)),
            ("exposure to its category", series(&|s, i| s[i].satiation)),
            ("its hidden quality", series(&|s, i| s[i].quality)),
        ],
    )?;
    for (kind, steps) in &sessions {
        let ret: f64 = steps.iter().map(|s| s.reward).sum();
        let watch: f64 = steps.iter().map(|s| s.watch_s).sum();
        println!("{:<14} {:>3} steps  return {ret:>7.3}  watched {watch:>6.1} s", kind.name(), steps.len());
    }
    println!("results: {} and {}", csv.display(), png.display());
    Ok(())
}

fn cmd_inspect(config: &ConfigArgs, user: u64) -> Result<()> {
    let checked = config.load()?;
    let report = fypsim::inspect::inspect_user(&checked, user)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn cmd_world(config: &ConfigArgs, out: &Path) -> Result<()> {
    let checked = config.load()?;
    let world = fypsim::inspect::write_world(&checked, out)?;
    println!(
        "{} users, {} videos, {} interactions written to {}",
        world.users.len(),
        world.videos.len(),
        world.history.len(),
        out.display()
    );
    Ok(())
}

fn cmd_check(configs: &[PathBuf], print: bool) -> Result<()> {
    let mut failed = 0;
    for path in configs {
        match Config::load(path, &[]) {
            Ok(c) => {
                println!("ok: {}", path.display());
                if print {
                    println!("{}", c.to_toml());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} configs are invalid", configs.len());
    Ok(())
}

fn cmd_sweep(path: &Path, out: Option<&Path>, jobs: Option<usize>, shard: Option<&str>, dry_run: bool) -> Result<()> {
    use fypsim::sweep::{execute, is_complete, parse_shard, plan, shard as take_shard};
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
    let bar = EpisodeBar::new(fypsim::sweep::total_episodes(&runs), &format!("{} runs", runs.len()), false);
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

fn cmd_report(dir: &Path, ab: Option<&[String]>) -> Result<()> {
    if let Some([a, b]) = ab {
        let o = fypsim::report::ab(dir, a, b)?;
        println!("A = {}: {:.3} ± {:.3}", o.a, o.mean_a, o.ci95_a);
        println!("B = {}: {:.3} ± {:.3}", o.b, o.mean_b, o.ci95_b);
        println!("B - A over {} paired episodes: {:.3} ± {:.3}", o.pairs, o.diff, o.diff_ci95);
        for f in &o.files {
            println!("wrote {}", f.display());
        }
        return Ok(());
    }
    let o = fypsim::report::report(dir)?;
    println!("{} runs in {} configurations", o.runs, o.rows.len());
    for r in &o.rows {
        println!(
            "  {:<50} {} seeds  return {:.3} ± {:.3}  oracle_fraction {:.3}",
            r.label, r.seeds, r.mean_return, r.ci95, r.oracle_fraction
        );
    }
    for f in &o.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn cmd_report_ab_log(dir: &Path, out: Option<&Path>) -> Result<()> {
    let (report, files) = fypsim::serve::report::report(dir, out)?;
    print!("{}", fypsim::serve::report::markdown(&report).trim_start_matches("# A/B report\n\n"));
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_serve(
    arms: &[String],
    split: Option<&str>,
    (host, port): (&String, u16),
    log: Option<&Path>,
    config: Option<&Path>,
    overrides: &[String],
    salt: &str,
    threads: usize,
) -> Result<()> {
    use fypsim::serve::{parse_split, ArmSpec, ServeOptions, Source};
    let specs: Vec<ArmSpec> = arms.iter().map(|a| ArmSpec::parse(a)).collect::<fypsim::Result<_>>()?;
    let shares = split.map(|s| parse_split(s, specs.len())).transpose()?;
    let any_run = specs.iter().any(|a| matches!(a.source, Source::Run(_)));
    let config = match config {
        Some(path) => Some(Config::load(path, overrides)?),
        None if !any_run => Some(Config::load(Path::new("configs/default.toml"), overrides)?),
        None if !overrides.is_empty() => anyhow::bail!("--set needs --config when the world is a run folder's"),
        None => None,
    };
    if salt.is_empty() || salt.len() > 200 {
        anyhow::bail!("--salt: 1 to 200 characters");
    }
    // Resolves names and takes address literals alike.
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".into()))
        .map_err(|e| anyhow::anyhow!("--host {host}: not an address this machine can listen on ({e})"))?;
    let opts = ServeOptions { arms: specs, shares, salt: salt.to_string(), config, log: log.map(Path::to_path_buf) };
    if log.is_none() {
        eprintln!("note: no --log DIR: decisions are not logged, so no A/B report can be made");
    }
    eprintln!("loading the world and the arms...");
    let stopped = fypsim::serve::http::serve(opts, addr, threads, |bound, h| {
        let arms: Vec<String> = h.arms.iter().map(|a| format!("{}={} ({:.0}%)", a.name, a.version, 100.0 * a.share)).collect();
        println!(
            "world {} ({} users, {} videos); arms {}; salt \"{}\"",
            &h.world[..12],
            h.users,
            h.videos,
            arms.join(", "),
            h.salt
        );
        if let Some(l) = &h.log {
            println!("decision log: {l} ({} decisions awaiting feedback from before)", h.pending_feedback);
        }
        println!(
            "listening on http://{bound}  (POST /recommend, POST /feedback, GET /health, GET /metrics; Ctrl-C or SIGTERM stops)"
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    println!("stopped after {} requests, none in flight", stopped.requests);
    if let Some(l) = stopped.log {
        println!("decision log flushed: {}  (report: fypsim report --ab-log {})", l.display(), l.display());
    }
    Ok(())
}

fn cmd_traffic(
    opts: fypsim::serve::traffic::TrafficOptions,
    config: &Path,
    overrides: &[String],
    json: Option<&Path>,
) -> Result<()> {
    let config = Config::load(config, overrides)?;
    let r = fypsim::serve::traffic::drive(&opts, &config)?;
    let how = match r.rate {
        Some(rate) => format!("open loop at {rate} recommendations/s"),
        None => format!("closed loop, concurrency {}", r.concurrency),
    };
    println!("{} users for {:.1} s, {how}", r.users, r.elapsed_s);
    println!(
        "{} recommendations ({:.0}/s), {} feedbacks; {:.0} requests/s in all; {} sessions ended",
        r.recommendations, r.recommendations_per_s, r.feedbacks, r.requests_per_s, r.sessions
    );
    for (name, l) in [("recommend", &r.recommend_latency), ("feedback", &r.feedback_latency)] {
        println!(
            "{name:<9} latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (mean {:.3})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
        );
    }
    if let Some(l) = &r.dispatch_lag {
        println!("driver's lag behind its schedule ms: p50 {:.3}  p99 {:.3}  max {:.3}", l.p50_ms, l.p99_ms, l.max_ms);
    }
    println!("mean reward per recommendation (as the users' model paid it): {:.3}", r.mean_reward);
    if r.dropped > 0 {
        println!("{} arrivals found every user busy and were not sent: raise --users", r.dropped);
    }
    if !r.errors.is_empty() {
        let e: Vec<String> =
            r.errors.iter().map(|(k, v)| format!("{v} x {}", if *k == 0 { "no answer".into() } else { k.to_string() })).collect();
        println!("errors: {}; first: {}", e.join(", "), r.first_error.as_deref().unwrap_or(""));
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&r)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures: {}", path.display());
    }
    Ok(())
}

/// Set while `fypsim learn` runs: a signal then stops its training instead of a run's.
static LEARNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> ExitCode {
    // Behave like other Unix tools when the reader goes away (`fypsim ... | head`):
    // end quietly instead of panicking on a broken pipe.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SIGINT and SIGTERM: runs finish their episode, checkpoint and say how to go on; a
    // second signal quits at once.
    let cli = Cli::parse();
    // `serve` and `traffic` handle SIGINT and SIGTERM themselves (draining requests).
    let own_signals = matches!(cli.command, Command::Serve { .. } | Command::Traffic { .. });
    let _ = (!own_signals).then(|| {
        ctrlc::set_handler(|| {
            if fypsim::run::stop_requested() {
                eprintln!("\nfypsim: stopping now (the last checkpoint is kept)");
                std::process::exit(130);
            }
            fypsim::run::request_stop();
            if LEARNING.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("\nfypsim: stopping the training (this attempt is not kept; results already in place stay)");
            } else {
                eprintln!("\nfypsim: stopping after the current episode, with a checkpoint (signal again to quit at once)");
            }
        })
    });
    let result = match &cli.command {
        Command::Run { config, out, resume, max_episodes, quiet } => {
            cmd_run(config, out.as_deref(), resume.as_deref(), *max_episodes, *quiet)
        }
        Command::Eval { dir, episodes, choices } => cmd_eval(dir, *episodes, *choices),
        Command::Inspect { config, user } => cmd_inspect(config, *user),
        Command::Anatomy { config, user, policies, episode, out } => cmd_anatomy(config, *user, policies, *episode, out),
        Command::World { config, out } => cmd_world(config, out),
        Command::Check { configs, print } => cmd_check(configs, *print),
        Command::Learn { task } => {
            LEARNING.store(true, std::sync::atomic::Ordering::Relaxed);
            cmd_learn(task)
        }
        Command::Sweep { sweep, out, jobs, shard, dry_run } => {
            cmd_sweep(sweep, out.as_deref(), *jobs, shard.as_deref(), *dry_run)
        }
        Command::Report { ab_log: Some(log), out, .. } => cmd_report_ab_log(log, out.as_deref()),
        Command::Report { dir, ab, .. } => cmd_report(dir.as_deref().expect("clap requires it"), ab.as_deref()),
        Command::Serve { arms, split, port, host, log, config, overrides, salt, threads } => {
            cmd_serve(arms, split.as_deref(), (host, *port), log.as_deref(), config.as_deref(), overrides, salt, *threads)
        }
        Command::Traffic { url, users, duration, concurrency, rate, config, overrides, seed, json, quiet } => cmd_traffic(
            fypsim::serve::traffic::TrafficOptions {
                url: url.clone(),
                users: *users,
                duration_s: *duration,
                concurrency: *concurrency,
                rate: *rate,
                seed: *seed,
                progress: !*quiet && std::io::stderr().is_terminal(),
            },
            config,
            overrides,
            json.as_deref(),
        ),
        Command::Bench { configs, overrides, json, learn: true, every, seeds, .. } => {
            cmd_bench_learn(configs, overrides, *json, *every, seeds)
        }
        Command::Bench { configs, overrides, scaling, json, repeats, steps, kernels_only, .. } => cmd_bench(BenchArgs {
            configs,
            overrides,
            scaling: scaling.as_deref(),
            json: *json,
            repeats: *repeats,
            steps: *steps,
            kernels_only: *kernels_only,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref::<fypsim::Error>(), Some(fypsim::Error::Interrupted)) => {
            eprintln!("fypsim: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
