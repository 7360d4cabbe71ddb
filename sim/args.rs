//! The command line: every sub-command and its arguments (clap).

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use fypsim::config::{Checked, Config};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "fypsim", version, about = "A reinforcement-learning recommendation simulator for short-video feeds")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct ConfigArgs {
    /// The experiment config (TOML).
    #[arg(default_value = "configs/default.toml")]
    pub(crate) config: PathBuf,
    /// Override a config value, e.g. --set dqn.lr=0.0005 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) overrides: Vec<String>,
}

impl ConfigArgs {
    pub(crate) fn load(&self) -> Result<Checked> {
        Ok(Config::load(&self.config, &self.overrides)?)
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// The reward per session by the user's session index (1, 2-5, 6+) of every policy
        /// of the calendar runs below DIR, across runs, with each policy's share of
        /// --reference's (by_session.md and by_session.csv); with --ab-log, each arm's, in
        /// the A/B report.
        #[arg(long, conflicts_with = "ab")]
        by_session: bool,
        /// With --by-session: the policy whose return the shares are of.
        #[arg(long, default_value = "myopic_oracle", requires = "by_session")]
        reference: String,
        /// The decision log of `fypsim serve --log DIR`: per arm the mean reward and
        /// watch time per session, their difference, power and a sample-ratio check.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["dir", "ab"])]
        ab_log: Option<PathBuf>,
        /// With --ab-log: where to write the report (default: the log's folder).
        #[arg(long, requires = "ab_log")]
        out: Option<PathBuf>,
        /// With --ab-log: the arm the others are compared with (default: the first).
        #[arg(long, value_name = "ARM", requires = "ab_log")]
        control: Option<String>,
        /// With --ab-log: estimate a policy the experiment did not serve from the arms that
        /// logged exact propensities (served with @epsilon=E or @softmax=T), replaying the
        /// log (repeatable): NAME, NAME@softmax=T, NAME@epsilon=E, or a run folder.
        #[arg(long = "ope-target", value_name = "SPEC", requires = "ab_log")]
        ope_targets: Vec<String>,
        /// With --ope-target: the world's config, the server's (checked against the log).
        #[arg(long, default_value = "configs/default.toml")]
        config: PathBuf,
        /// With --ope-target: a config override the server was given (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// With --ope-target: bootstrap resamples of the sessions (100 to 100,000).
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
    },
    /// Serve policies over HTTP as an A/B experiment (docs/serving.md): POST /recommend,
    /// POST /feedback, GET /health, GET /metrics; every decision and outcome goes to the
    /// decision log. Stops, draining requests in flight, on Ctrl-C or SIGTERM.
    Serve {
        /// An arm: NAME=SOURCE[@softmax=T|@epsilon=E], where SOURCE is a run folder with a
        /// saved agent or a baseline (greedy, random, most_viewed); a mixture makes the arm
        /// draw its choices and log their exact propensities (for off-policy evaluation).
        /// Once for serving, twice for an A/B test.
        #[arg(long = "arm", value_name = "NAME=SOURCE[@MIX]", required = true)]
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
        /// Seconds a connection may keep a read waiting (headers or a body that stop
        /// coming, an idle keep-alive connection) before it is closed.
        #[arg(long, value_name = "SECONDS", default_value_t = fypsim::serve::http::DEFAULT_READ_TIMEOUT_S)]
        read_timeout: f64,
        /// After SIGINT or SIGTERM, seconds to wait for open connections before cutting
        /// them and closing the log.
        #[arg(long, value_name = "SECONDS", default_value_t = fypsim::serve::http::DEFAULT_DRAIN_S)]
        drain: f64,
        /// Seconds between checkpoints of a learning DQN arm's state beside the log (a
        /// restart then learns only what came after the last one; one more is written
        /// when the server stops). Default: 60.
        #[arg(long, value_name = "SECONDS")]
        learning_checkpoint: Option<f64>,
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
        /// Plan instead of driving: for --users users with SESSIONS sessions each, the
        /// smallest difference in reward per session each arm's comparison with the
        /// control detects (80% power, Bonferroni's level), from an in-process A/A
        /// rehearsal of the served experiment with greedy in every arm.
        #[arg(long, value_name = "SESSIONS", conflicts_with_all = ["rate", "duration", "concurrency"])]
        plan: Option<usize>,
        /// With --plan: the arm the others are compared with (default: the first).
        #[arg(long, value_name = "ARM", requires = "plan")]
        control: Option<String>,
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
    /// Off-policy evaluation (docs/ope.md): log a fixed stochastic policy in fresh-world
    /// sessions, estimate each target's value from the log with every estimator, and
    /// measure each estimate against the simulator's exact truth.
    Ope {
        #[command(flatten)]
        config: ConfigArgs,
        /// The logging policy: NAME, NAME@softmax=T or NAME@epsilon=E (NAME: a policy or a
        /// run folder), e.g. greedy@softmax=1.
        #[arg(long, value_name = "SPEC", required_unless_present = "log")]
        logging: Option<String>,
        /// Estimate from the log an earlier `fypsim ope` saved in DIR (its config.toml,
        /// ope.json and log.parquet), replayed and checked, instead of logging afresh:
        /// the config, logging policy and sessions are the log's (default output:
        /// DIR/estimates).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["logging", "sessions"])]
        log: Option<PathBuf>,
        /// A target policy, same grammar (repeatable), e.g. myopic_oracle@softmax=0.5.
        #[arg(long = "target", value_name = "SPEC", required = true)]
        targets: Vec<String>,
        /// Logged sessions (evaluation episodes 0..N of the config's seed, fresh world).
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Smaller log sizes (its first sessions) to also estimate on, for ope.png
        /// (default: a hundredth and a tenth of --sessions).
        #[arg(long, value_delimiter = ',', value_name = "N1,N2,...")]
        sizes: Option<Vec<usize>>,
        /// Bootstrap resamples of the sessions for the 95% intervals (100 to 100,000).
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
        /// The fitted models' ridge penalty.
        #[arg(long, default_value_t = 1.0)]
        ridge: f64,
        /// Fix switch-DR's threshold (one of 1, 2, 5, 10, 20, 50, 100, 1000) instead of
        /// choosing it by the smallest estimated MSE.
        #[arg(long)]
        switch_tau: Option<f64>,
        /// Fix optimistic shrinkage's lambda (one of 0.1, 1, ..., 100000) likewise.
        #[arg(long)]
        shrinkage_lambda: Option<f64>,
        /// The most on-policy sessions a target's session truth may take.
        #[arg(long, default_value_t = 1_000_000)]
        truth_max: usize,
        /// Output folder (default: results/ope/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The off-policy evaluation study (docs/ope.md: The study): many independent logs per
    /// logging policy and size, every estimator for every target on each, and per
    /// estimator its bias, spread, relative error and interval coverage. Started again on
    /// the same folder, it reuses the logs already done.
    OpeStudy {
        /// The study file (configs/ope/*.toml).
        study: PathBuf,
        /// Output folder (default: results/ope-study/<study file name>).
        #[arg(long)]
        out: Option<PathBuf>,
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
pub(crate) enum LearnTask {
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
pub(crate) struct LearnArgs {
    /// A finished run folder.
    pub(crate) run_dir: PathBuf,
    /// Learn settings (TOML; docs/learn.md lists the keys and defaults).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Override a learn setting, e.g. --set hidden=32 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) overrides: Vec<String>,
    /// The recurrent cell: rnn, lstm or gru (overrides the settings).
    #[arg(long)]
    pub(crate) cell: Option<String>,
    /// many-to-many or many-to-one (overrides the settings).
    #[arg(long)]
    pub(crate) mode: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

impl LearnArgs {
    pub(crate) fn load(&self) -> Result<fypsim::learn::LearnConfig> {
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
