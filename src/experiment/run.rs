//! One experiment run end to end: the output folder, the resolved config with its
//! provenance, the baselines, training, evaluation and every output file.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::agent::make_policy;
use crate::agent::Policy;
use crate::config::{Checked, PolicyKind, Provenance};
use crate::drive::train::{
    evaluate, paired_advantage, paired_gap, train, EpisodeRecord, EvalPoint, EvalResult, Flow, StepRecord, TrainProgress,
};
use crate::env::Env;
use crate::output::plot::{series_plot, Reference};
use crate::output::records::{self, frame};
use crate::world::World;
use crate::{Error, Result};

/// What happens during a run, for progress displays.
pub trait RunObserver {
    /// A stage begins (e.g. "evaluating baselines").
    fn stage(&mut self, _message: &str) {}
    /// Training starts (or resumes after `done` episodes) toward `episodes`.
    fn training_started(&mut self, _episodes: usize, _done: usize) {}
    /// A training episode ended.
    fn episode(&mut self, _record: &EpisodeRecord) {}
    /// Training ended.
    fn training_finished(&mut self) {}
    /// A population run of `policy` over `days` days starts.
    fn calendar_started(&mut self, _policy: &str, _days: usize) {}
    /// A simulated day of the population run ended (`day` counts from 1).
    fn calendar_day(&mut self, _day: usize) {}
    /// The population run ended.
    fn calendar_finished(&mut self) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl RunObserver for Silent {}

/// summary.json.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    pub name: String,
    /// The configuration this run belongs to (runs that differ only in seed share it).
    pub label: String,
    pub policy: String,
    pub seed: u64,
    pub episodes: usize,
    pub total_steps: u64,
    pub updates: u64,
    /// Mean training return (exploration on) over the last 100 episodes.
    pub mean_return_last_100: f64,
    /// The trained policy's mean evaluation return (exploration off).
    pub eval_mean_return: f64,
    /// (trained - random) / (oracle - random) on the evaluation episodes, when both
    /// baselines ran.
    pub oracle_fraction: Option<f64>,
    /// The trained policy's return minus greedy's, paired episode by episode (same user,
    /// same random numbers): its mean and the half-width of its 95% interval (None
    /// without the greedy baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_over_greedy: Option<crate::stats::Interval>,
    /// The trained policy's return minus the myopic oracle's, paired (None without the
    /// myopic_oracle baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_over_myopic_oracle: Option<crate::stats::Interval>,
    /// The myopia gap: the planner's return minus the myopic oracle's, paired over the
    /// episodes both ran (None without both baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub myopia_gap: Option<crate::stats::Interval>,
    /// The trained policy's return minus each learning baseline's (the bandits in
    /// `train.baselines`), paired episode by episode (empty without them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub advantage_over_learners: BTreeMap<String, crate::stats::Interval>,
    /// Each baseline's mean evaluation return (exploration off, common random numbers).
    pub baselines: BTreeMap<String, f64>,
    /// The trained policy and every baseline on the same evaluation episodes.
    pub evaluation: Vec<EvalResult>,
    /// Training steps per second (environment, policy and learning together). Wall-clock
    /// figures are in `timing.json`; here only with `output.wall_time = true`, so that
    /// by default a seed's summary is byte-identical from run to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_s: Option<f64>,
    /// The population runs on the calendar, the trained policy first (none without
    /// `[calendar]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub population: Vec<crate::drive::calendar::PopulationSummary>,
    pub crate_version: String,
    pub git_revision: String,
    pub results_dir: String,
}

/// The file of a run's wall-clock measurements (everything else a run writes is the same
/// for the same seed).
pub const TIMING: &str = "timing.json";

/// `timing.json`: how long training took on this machine.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Timing {
    /// Training seconds (evaluations and checkpoints excluded), over every session of the
    /// run (a resumed run adds up its parts).
    pub training_s: f64,
    pub steps_per_second: f64,
    pub total_steps: u64,
    pub updates: u64,
}

/// A finished run's steps per second: from its summary (older runs, or
/// `output.wall_time = true`) or its `timing.json`.
pub fn steps_per_second_of(dir: &Path, summary: &Summary) -> Option<f64> {
    summary.steps_per_second.or_else(|| {
        let text = fs::read_to_string(dir.join(TIMING)).ok()?;
        serde_json::from_str::<Timing>(&text).ok().map(|t| t.steps_per_second)
    })
}

/// The crate version and the git revision of the source tree the binary was built from.
pub fn provenance() -> Provenance {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let revision = match git(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".to_string(),
    };
    Provenance { crate_version: env!("CARGO_PKG_VERSION").to_string(), git_revision: revision }
}

/// Creates the run's folder: `out` if given (it may exist but must hold no run, finished
/// or interrupted), else the next free `<results_dir>/<name>/seed<seed>-<NNN>`.
pub fn prepare_run_dir(config: &Checked, out: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = out {
        if dir.join("summary.json").exists() {
            return Err(Error::Other(format!(
                "{} already holds a finished run (summary.json); choose another --out folder",
                dir.display()
            )));
        }
        if crate::experiment::checkpoint::exists(dir) {
            return Err(Error::Other(format!(
                "{} holds an interrupted run (it has a checkpoint); continue it with `fypsim run --resume {}`, \
                 or choose another --out folder (delete the folder to start afresh)",
                dir.display(),
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(Error::io("create folder", dir))?;
        return Ok(dir.to_path_buf());
    }
    let parent = Path::new(&config.output.results_dir).join(&config.name);
    fs::create_dir_all(&parent).map_err(Error::io("create folder", &parent))?;
    let prefix = format!("seed{}-", config.seed);
    let mut next = fs::read_dir(&parent)
        .map_err(Error::io("list", &parent))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse::<u32>().ok())
        .max()
        .map_or(1, |m| m + 1);
    loop {
        let dir = parent.join(format!("{prefix}{next:03}"));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // Another run took this number at the same moment.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => next += 1,
            Err(e) => return Err(Error::io("create folder", dir)(e)),
        }
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(Error::io("write", path))
}

/// The fraction of the random-to-oracle gap that `value` closes (None without both).
pub fn oracle_fraction(value: f64, random: Option<f64>, oracle: Option<f64>) -> Option<f64> {
    match (random, oracle) {
        (Some(r), Some(o)) if (o - r).abs() > 1e-12 => Some((value - r) / (o - r)),
        _ => None,
    }
}

/// How a run starts and when it may stop early.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunControl {
    /// Continue from `dir/checkpoint` instead of starting afresh.
    pub resume: bool,
    /// Stop (after a checkpoint) once this many training episodes are done.
    pub max_episodes: Option<u32>,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    Finished(Box<Summary>),
    /// Stopped early by `max_episodes`; `fypsim run --resume` continues it.
    Stopped {
        episodes_done: u32,
    },
    /// Stopped by a signal ([`crate::stop::request_stop`]). `checkpointed`: a checkpoint holds every
    /// episode done, and `fypsim run --resume` continues from it.
    Interrupted {
        episodes_done: u32,
        checkpointed: bool,
    },
}

use crate::stop::stop_requested;

/// The records of a run that earlier checkpoints have saved as segments: how many of
/// each kind, and the segments' files.
#[derive(Debug, Default)]
struct SavedRecords {
    episodes: usize,
    steps: usize,
    curve: usize,
    files: BTreeMap<String, crate::experiment::checkpoint::FileEntry>,
}

/// One record segment: the records written between two checkpoints.
#[derive(Serialize)]
struct SegmentOut<'a> {
    episodes: &'a [EpisodeRecord],
    steps: &'a [StepRecord],
    curve: &'a [EvalPoint],
}

#[derive(serde::Deserialize)]
struct SegmentIn {
    episodes: Vec<EpisodeRecord>,
    steps: Vec<StepRecord>,
    curve: Vec<EvalPoint>,
}

/// Saves the agent and the training progress into `dir/checkpoint` (see
/// [`crate::experiment::checkpoint`]): written aside, checksummed, then swapped into place. The
/// records since the previous checkpoint go into one new segment; `progress.json` holds
/// the rest of the state without the records, so a save costs what a resume needs.
fn save_checkpoint(
    config: &Checked,
    dir: &Path,
    progress: &mut TrainProgress,
    saved: &mut SavedRecords,
    env: &Env,
    policy: &dyn Policy,
) -> Result<()> {
    let mut w = crate::experiment::checkpoint::Writer::begin(dir)?;
    w.keep_records(&saved.files);
    let (ne, ns, nc) = (progress.episodes.len(), progress.steps.len(), progress.curve.len());
    if (ne, ns, nc) != (saved.episodes, saved.steps, saved.curve) {
        let segment = SegmentOut {
            episodes: &progress.episodes[saved.episodes..],
            steps: &progress.steps[saved.steps..],
            curve: &progress.curve[saved.curve..],
        };
        let json = serde_json::to_string(&segment).expect("records serialise");
        let name = format!("{:06}-to-episode-{:09}.json", saved.files.len(), progress.episodes_done);
        w.write_records(&name, json.as_bytes())?;
    }
    progress.env = env.state();
    let episodes = std::mem::take(&mut progress.episodes);
    let steps = std::mem::take(&mut progress.steps);
    let curve = std::mem::take(&mut progress.curve);
    let json = serde_json::to_string(progress).expect("training progress serialises");
    (progress.episodes, progress.steps, progress.curve) = (episodes, steps, curve);
    w.write("progress.json", json.as_bytes())?;
    policy.save(w.dir())?;
    let files = w.records().clone();
    w.finish(config, progress.episodes_done)?;
    *saved = SavedRecords { episodes: ne, steps: ns, curve: nc, files };
    Ok(())
}

/// The training progress of a checkpoint, its record segments appended in order
/// (a checkpoint of format 2 or older holds every record in `progress.json`).
fn load_progress(ck: &crate::experiment::checkpoint::Checkpoint) -> Result<(TrainProgress, SavedRecords)> {
    let path = ck.dir.join("progress.json");
    let bytes = ck.read("progress.json")?;
    let mut progress: TrainProgress = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Checkpoint(format!("{} is not a fypsim checkpoint: {e}", path.display())))?;
    let files = ck.records();
    let (mut episodes, mut steps, mut curve) = (Vec::new(), Vec::new(), Vec::new());
    for name in files.keys() {
        let bytes = ck.read_records(name)?;
        let seg: SegmentIn = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Checkpoint(format!(
                "{} is not a record segment: {e}",
                ck.run.join(crate::experiment::checkpoint::RECORDS).join(name).display()
            ))
        })?;
        episodes.extend(seg.episodes);
        steps.extend(seg.steps);
        curve.extend(seg.curve);
    }
    let saved = SavedRecords { episodes: episodes.len(), steps: steps.len(), curve: curve.len(), files };
    episodes.append(&mut progress.episodes);
    steps.append(&mut progress.steps);
    curve.append(&mut progress.curve);
    (progress.episodes, progress.steps, progress.curve) = (episodes, steps, curve);
    Ok((progress, saved))
}

/// The lock of a run folder, held while a process works in it: a second process gets
/// [`Error::Busy`] instead of writing over the first one's files.
pub struct RunLock {
    _file: fs::File,
}

impl RunLock {
    /// Takes the lock of `dir` (the file `dir/.lock`), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(".lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {
                use std::io::{Seek, Write};
                // Who holds it, for the message a second process prints.
                let _ = file.set_len(0);
                let _ = file.seek(std::io::SeekFrom::Start(0));
                let _ = write!(file, "process {}", std::process::id());
                Ok(RunLock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = if holder.trim().is_empty() { "another process".to_string() } else { holder.trim().to_string() };
                Err(Error::Busy { dir: dir.to_path_buf(), holder })
            }
            Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path)(e)),
        }
    }
}

/// Runs one experiment into `dir` to the end. `label` names its configuration in reports
/// (a sweep passes its grid point; a plain run its config name).
pub fn run(config: &Checked, dir: &Path, label: &str, observer: &mut dyn RunObserver) -> Result<Summary> {
    match run_with(config, dir, label, RunControl::default(), observer)? {
        RunEnd::Finished(s) => Ok(*s),
        RunEnd::Stopped { episodes_done } => Err(Error::Other(format!("run stopped after {episodes_done} episodes"))),
        RunEnd::Interrupted { .. } => Err(Error::Interrupted),
    }
}

/// Writes `dir/config.toml`: the resolved config with its provenance, itself a valid
/// config that repeats the run.
pub fn write_resolved_config(config: &Checked, dir: &Path, provenance: &Provenance) -> Result<()> {
    let mut resolved = config.inner().clone();
    resolved.provenance = Some(provenance.clone());
    let path = dir.join("config.toml");
    write_text(
        &path,
        &format!("# The resolved config of this run. `fypsim run {}` repeats it.\n{}", path.display(), resolved.to_toml()),
    )
}

/// The oracle fraction of an evaluation whose first entry is the trained policy and the
/// rest baselines (None without both the random and the oracle baseline).
pub fn oracle_fraction_of(evaluation: &[EvalResult]) -> Option<f64> {
    let (trained, baselines) = evaluation.split_first()?;
    let mean = |k: PolicyKind| baselines.iter().find(|e| e.policy == k).map(|e| e.mean_return);
    oracle_fraction(trained.mean_return, mean(PolicyKind::Random), mean(PolicyKind::Oracle))
}

/// Evaluation episodes for `kind` (the planner may run fewer: `planner.eval_episodes`).
pub fn eval_episodes_for(config: &Checked, kind: PolicyKind) -> usize {
    match (kind, config.planner.eval_episodes) {
        (PolicyKind::Planner | PolicyKind::RetentionPlanner, n) if n > 0 => n,
        _ => config.train.eval_episodes,
    }
}

/// Whether the agent trained by the run of config `run` can act in `config`'s world: the
/// same world, seed and candidates, and the same observation (layout and the dqn's
/// interests input). The one rule for serving a run folder and for `fypsim ope`.
pub fn agent_fits(run: &Checked, config: &Checked) -> bool {
    run.world == config.world
        && run.seed == config.seed
        && run.candidates == config.candidates
        && crate::env::Layout::of(run) == crate::env::Layout::of(config)
        && run.dqn.interests == config.dqn.interests
}

/// Refuses the agent of a run folder whose training has not finished (no summary.json):
/// an interrupted run's checkpoint holds a half-trained agent, which is not used unasked.
pub fn require_finished(dir: &Path, what: &str) -> Result<()> {
    if dir.join("summary.json").is_file() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{what}: the run in {} has not finished (no summary.json): its checkpoint holds a half-trained agent; \
         finish it with `fypsim run --resume {}`",
        dir.display(),
        dir.display()
    )))
}

/// Where a run saves what its learning baseline `kind` learnt.
pub fn baseline_dir(dir: &Path, kind: PolicyKind) -> PathBuf {
    dir.join("baselines").join(kind.name())
}

/// Trains the learning baseline `kind` (a bandit in `train.baselines`) as the run's policy
/// was trained: the same users in the same order and the same responses (their streams
/// do not depend on the policy), with exploration on, until it has taken at least `steps`
/// steps (the run's policy's training steps; it stops at the end of the episode that
/// reaches them). None when a signal stopped it.
pub fn train_baseline(
    config: &Checked,
    world: &std::sync::Arc<World>,
    kind: PolicyKind,
    steps: u64,
) -> Result<Option<Box<dyn Policy>>> {
    let mut c: crate::config::Config = (**config).clone();
    c.policy = kind;
    c.train.episodes = 1_000_000_000;
    let c = c.check()?;
    let mut policy = make_policy(kind, &c)?;
    let mut env = Env::new(&c, world.clone());
    let mut progress = TrainProgress::new(&c, &env);
    let mut interrupted = false;
    train(&c, &mut env, policy.as_mut(), false, &mut progress, &mut |p, _, _| {
        interrupted = stop_requested();
        Ok(if p.total_steps >= steps || interrupted { Flow::Stop } else { Flow::Continue })
    })?;
    Ok((!interrupted).then_some(policy))
}

/// The config of a run folder, as it was resolved when the run started.
pub fn config_of_run(dir: &Path) -> Result<Checked> {
    Ok(crate::config::Config::load(&dir.join("config.toml"), &[])?)
}

/// Runs one experiment into `dir`, fresh or resumed. Files are written as soon as they
/// exist, so a failure late in the run (a full disk, say) keeps everything written before.
pub fn run_with(
    config: &Checked,
    dir: &Path,
    label: &str,
    control: RunControl,
    observer: &mut dyn RunObserver,
) -> Result<RunEnd> {
    let prov = provenance();
    if config.train.sessions > 1 && (control.resume || control.max_episodes.is_some()) {
        return Err(Error::Other(format!(
            "--resume and --max-episodes need train.sessions = 1 (this config has {}): sessions in flight are not checkpointed",
            config.train.sessions
        )));
    }
    let _lock = RunLock::acquire(dir)?;
    if dir.join("summary.json").exists() {
        return Err(Error::Other(format!("{} is a finished run (summary.json exists); nothing to do", dir.display())));
    }
    // A resume trusts nothing it has not verified: the checkpoint's files and its config.
    let checkpoint = if control.resume { Some(crate::experiment::checkpoint::open(dir, config)?) } else { None };
    if !control.resume {
        write_resolved_config(config, dir, &prov)?;
    }

    observer.stage("generating the world");
    let world = std::sync::Arc::new(World::generate(config));
    let n_eval = config.train.eval_episodes;

    // In `train.baselines` order; the learners' places are filled once they are trained.
    let mut baselines: Vec<Option<EvalResult>> = Vec::new();
    for &kind in &config.train.baselines {
        if kind.learns() {
            baselines.push(None);
            continue;
        }
        observer.stage(&format!("evaluating baseline {kind}"));
        let mut policy = make_policy(kind, config)?;
        baselines.push(Some(evaluate(config, &world, policy.as_mut(), eval_episodes_for(config, kind))?));
        if stop_requested() {
            return Ok(RunEnd::Interrupted { episodes_done: 0, checkpointed: checkpoint.is_some() });
        }
    }

    let mut policy = make_policy(config.policy, config)?;
    let mut env = Env::new(config, world.clone());
    let (every, total) = (config.train.eval_every, config.train.episodes);
    let (mut progress, mut saved) = start_training(config, &world, checkpoint.as_ref(), policy.as_mut(), &mut env, observer)?;

    let checkpoint_every = config.train.checkpoint_every;
    observer.training_started(total, progress.episodes_done as usize);
    train(config, &mut env, policy.as_mut(), config.output.steps, &mut progress, &mut |p, env, pol| {
        observer.episode(p.episodes.last().expect("an episode was just recorded"));
        let done = p.episodes_done as usize;
        if every > 0 && done.is_multiple_of(every) && done < total {
            let e = evaluate(config, &world, pol, n_eval)?;
            p.curve.push(EvalPoint { episode: done as u32, mean_return: e.mean_return, ci95: e.ci95 });
        }
        // A signal stops the run after this episode, with a checkpoint (lockstep runs
        // cannot checkpoint their sessions in flight, so they just stop).
        let interrupted = stop_requested() && done < total;
        let stop = control.max_episodes.is_some_and(|m| done as u32 >= m) && done < total;
        let resumable = config.train.sessions == 1;
        if (stop || interrupted) && resumable || (checkpoint_every > 0 && done.is_multiple_of(checkpoint_every) && done < total) {
            save_checkpoint(config, dir, p, &mut saved, env, &*pol)?;
        }
        Ok(if stop || interrupted { Flow::Stop } else { Flow::Continue })
    })?;
    observer.training_finished();
    if (progress.episodes_done as usize) < total {
        if stop_requested() {
            return Ok(RunEnd::Interrupted { episodes_done: progress.episodes_done, checkpointed: config.train.sessions == 1 });
        }
        return Ok(RunEnd::Stopped { episodes_done: progress.episodes_done });
    }
    // The final agent, for `fypsim eval DIR`.
    save_checkpoint(config, dir, &mut progress, &mut saved, &env, policy.as_ref())?;
    if stop_requested() {
        // Training is done and saved; the final evaluation is what a resume will do.
        return Ok(RunEnd::Interrupted { episodes_done: progress.episodes_done, checkpointed: true });
    }
    // The learning baselines (the bandits), on the steps the run's policy trained on.
    for (slot, &kind) in baselines.iter_mut().zip(&config.train.baselines) {
        if slot.is_none() {
            observer.stage(&format!("training baseline {kind} for {} steps", progress.total_steps));
            let Some(mut trained) = train_baseline(config, &world, kind, progress.total_steps)? else {
                return Ok(RunEnd::Interrupted { episodes_done: progress.episodes_done, checkpointed: true });
            };
            let saved_in = baseline_dir(dir, kind);
            fs::create_dir_all(&saved_in).map_err(Error::io("create", &saved_in))?;
            trained.save(&saved_in)?;
            observer.stage(&format!("evaluating baseline {kind}"));
            *slot = Some(evaluate(config, &world, trained.as_mut(), eval_episodes_for(config, kind))?);
        }
    }
    let baselines: Vec<EvalResult> = baselines.into_iter().flatten().collect();
    // Learning across sessions: population runs, each checkpointed when done.
    if let Some(end) = learn_across_sessions(config, dir, &world, policy.as_mut(), &mut progress, &mut saved, &env, observer)? {
        return Ok(end);
    }

    write_training_tables(config, dir, &progress)?;

    observer.stage(&format!("evaluating the trained {} policy", config.policy));
    let trained = evaluate(config, &world, policy.as_mut(), n_eval)?;
    let mut curve = progress.curve.clone();
    curve.push(EvalPoint { episode: total as u32, mean_return: trained.mean_return, ci95: trained.ci95 });
    write_curve(dir, &curve)?;

    let mut evaluation = vec![trained];
    evaluation.extend(baselines);
    write_evaluation(config, dir, &evaluation)?;
    write_plots(config, dir, &progress, &evaluation, &curve)?;
    let population = if config.calendar.days > 0 {
        let pops = match live_calendar(config, &world, policy.as_mut(), observer) {
            Err(Error::Interrupted) => {
                // Training is done and saved: a resume evaluates and lives the calendar again.
                return Ok(RunEnd::Interrupted { episodes_done: progress.episodes_done, checkpointed: true });
            }
            other => other?,
        };
        write_population(config, dir, &pops)?
    } else {
        Vec::new()
    };
    let summary = write_summary(config, dir, label, &prov, &progress, evaluation, population)?;
    Ok(RunEnd::Finished(Box::new(summary)))
}

/// Where training starts: a resumed run's checkpointed progress, records, agent and
/// simulation state; or a fresh start, with the untrained policy's evaluation as the
/// learning curve's first point.
fn start_training(
    config: &Checked,
    world: &std::sync::Arc<World>,
    checkpoint: Option<&crate::experiment::checkpoint::Checkpoint>,
    policy: &mut dyn Policy,
    env: &mut Env,
    observer: &mut dyn RunObserver,
) -> Result<(TrainProgress, SavedRecords)> {
    if let Some(ck) = checkpoint {
        let (progress, saved) = load_progress(ck)?;
        policy.load(&ck.dir)?;
        env.restore(&progress.env).map_err(|e| Error::Checkpoint(format!("{}: {e}", ck.dir.join("progress.json").display())))?;
        observer.stage(&format!("resuming after episode {} of {}", progress.episodes_done, config.train.episodes));
        return Ok((progress, saved));
    }
    let mut p = TrainProgress::new(config, env);
    if config.train.eval_every > 0 {
        // The untrained policy: where the learning curve starts.
        let e = evaluate(config, world, policy, config.train.eval_episodes)?;
        p.curve.push(EvalPoint { episode: 0, mean_return: e.mean_return, ci95: e.ci95 });
    }
    Ok((p, SavedRecords::default()))
}

/// Learning across sessions (`calendar.train_runs`): after its episodes the policy lives
/// that many population runs, learning from every step, each checkpointed when done (a
/// resume repeats an unfinished one). `Some` when a signal stopped it.
#[allow(clippy::too_many_arguments)]
fn learn_across_sessions(
    config: &Checked,
    dir: &Path,
    world: &std::sync::Arc<World>,
    policy: &mut dyn Policy,
    progress: &mut TrainProgress,
    saved: &mut SavedRecords,
    env: &Env,
    observer: &mut dyn RunObserver,
) -> Result<Option<RunEnd>> {
    let runs = config.calendar.train_runs;
    while progress.calendar_runs.len() < runs {
        let k = progress.calendar_runs.len();
        let label = format!("{}, learning across sessions (run {} of {runs})", config.policy, k + 1);
        observer.calendar_started(&label, config.calendar.days);
        let mode = crate::drive::calendar::Mode::Train { run: k as u64 };
        let pop =
            crate::drive::calendar::live_days(config, world, policy, config.policy, mode, &mut |d| observer.calendar_day(d));
        observer.calendar_finished();
        let pop = match pop {
            // A resume repeats the unfinished run from the last checkpoint.
            Err(Error::Interrupted) => {
                return Ok(Some(RunEnd::Interrupted { episodes_done: progress.episodes_done, checkpointed: true }))
            }
            other => other?,
        };
        let summary = crate::drive::calendar::summarize(&pop, &crate::drive::calendar::daily(&pop, config.calendar.pay_per_view));
        let row = crate::drive::calendar::CalendarRun::of(k as u32 + 1, &pop, &summary, policy.epsilon());
        observer.stage(&format!(
            "learning run {} of {runs}: {:.3} sessions per user-day, {:.1} watch min per user, day-7 retention {}, mean loss {}",
            k + 1,
            row.sessions_per_user_day,
            row.watch_s_per_user / 60.0,
            row.day7_retention.map_or("-".into(), |r| format!("{:.1}%", 100.0 * r)),
            row.mean_loss.map_or("-".into(), |l| format!("{l:.4}")),
        ));
        progress.calendar_runs.push(row);
        save_checkpoint(config, dir, progress, saved, env, &*policy)?;
        if stop_requested() && progress.calendar_runs.len() < runs {
            return Ok(Some(RunEnd::Interrupted { episodes_done: progress.episodes_done, checkpointed: true }));
        }
    }
    Ok(None)
}

// Each output file of a finished run has one writer below.

/// episodes.csv, episodes.parquet and (with `output.steps`) steps.parquet.
fn write_training_tables(config: &Checked, dir: &Path, progress: &TrainProgress) -> Result<()> {
    if !progress.calendar_runs.is_empty() {
        let path = dir.join("calendar_training.csv");
        records::write_csv(&mut frame(records::calendar_training_frame(&progress.calendar_runs), &path)?, &path)?;
    }
    let path = dir.join("episodes.csv");
    let mut episodes = frame(records::episodes_frame(&progress.episodes, config.output.wall_time), &path)?;
    records::write_csv(&mut episodes, &path)?;
    records::write_parquet(&mut episodes, &dir.join("episodes.parquet"))?;
    if config.output.steps {
        let path = dir.join("steps.parquet");
        let mut steps = frame(records::steps_frame(&progress.steps, config), &path)?;
        records::write_parquet(&mut steps, &path)?;
    }

    Ok(())
}

/// eval.csv: the learning curve.
fn write_curve(dir: &Path, curve: &[EvalPoint]) -> Result<()> {
    let path = dir.join("eval.csv");
    let mut curve_df = frame(
        polars::df!(
            "episode" => curve.iter().map(|c| c.episode).collect::<Vec<_>>(),
            "mean_return" => curve.iter().map(|c| c.mean_return).collect::<Vec<_>>(),
            "ci95" => curve.iter().map(|c| c.ci95).collect::<Vec<_>>(),
        ),
        &path,
    )?;
    records::write_csv(&mut curve_df, &path)?;

    Ok(())
}

/// baselines.csv and eval_episodes.csv: the trained policy (first) and every baseline.
fn write_evaluation(config: &Checked, dir: &Path, evaluation: &[EvalResult]) -> Result<()> {
    let path = dir.join("baselines.csv");
    let name = |k: usize, e: &EvalResult| {
        if k == 0 {
            format!("{} (trained)", e.policy)
        } else {
            e.policy.name().to_string()
        }
    };
    let mut table = frame(
        polars::df!(
            "policy" => evaluation.iter().enumerate().map(|(k, e)| name(k, e)).collect::<Vec<_>>(),
            "episodes" => evaluation.iter().map(|e| e.episodes as u64).collect::<Vec<_>>(),
            "mean_return" => evaluation.iter().map(|e| e.mean_return).collect::<Vec<_>>(),
            "ci95" => evaluation.iter().map(|e| e.ci95).collect::<Vec<_>>(),
            "mean_steps" => evaluation.iter().map(|e| e.mean_steps).collect::<Vec<_>>(),
        ),
        &path,
    )?;
    if config.dynamics.behaviour.enabled {
        // Watch time per session, where videos are watched in part (users with memory).
        let watch = polars::prelude::Column::new(
            "mean_watch_s".into(),
            evaluation.iter().map(|e| e.mean_watch_s.unwrap_or(0.0)).collect::<Vec<_>>(),
        );
        table.with_column(watch).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    }
    records::write_csv(&mut table, &path)?;
    let path = dir.join("eval_episodes.csv");
    let mut per_episode = frame(
        polars::df!(
            "policy" => evaluation
                .iter()
                .enumerate()
                .flat_map(|(k, e)| std::iter::repeat_n(name(k, e), e.returns.len()))
                .collect::<Vec<_>>(),
            "episode" => evaluation.iter().flat_map(|e| 0..e.returns.len() as u32).collect::<Vec<_>>(),
            "user" => evaluation.iter().flat_map(|e| e.users.iter().copied()).collect::<Vec<_>>(),
            "return" => evaluation.iter().flat_map(|e| e.returns.iter().copied()).collect::<Vec<_>>(),
            "steps" => evaluation.iter().flat_map(|e| e.steps.iter().copied()).collect::<Vec<_>>(),
        ),
        &path,
    )?;
    records::write_csv(&mut per_episode, &path)?;

    Ok(())
}

/// rewards.png and loss.png.
fn write_plots(
    config: &Checked,
    dir: &Path,
    progress: &TrainProgress,
    evaluation: &[EvalResult],
    curve: &[EvalPoint],
) -> Result<()> {
    let references: Vec<Reference> = evaluation
        .iter()
        .enumerate()
        .map(|(k, e)| Reference {
            name: if k == 0 { format!("{} after training (evaluation)", e.policy) } else { format!("{} (evaluation)", e.policy) },
            value: e.mean_return,
        })
        .collect();
    let returns: Vec<Option<f64>> = progress.episodes.iter().map(|e| Some(e.episode_return)).collect();
    series_plot(
        &dir.join("rewards.png"),
        &format!("{}: episode return ({} policy, seed {})", config.name, config.policy, config.seed),
        "return",
        "training return (exploration on)",
        &returns,
        config.train.moving_average,
        &references,
        // The learning curve, when there is one beyond its end point.
        (curve.len() > 2).then_some((
            &format!("{} evaluation during training", config.policy) as &str,
            &curve.iter().map(|c| (c.episode as f64, c.mean_return)).collect::<Vec<_>>()[..],
        )),
    )?;
    let losses: Vec<Option<f64>> = progress.episodes.iter().map(|e| e.mean_loss).collect();
    series_plot(
        &dir.join("loss.png"),
        &format!("{}: mean TD loss per episode", config.name),
        "loss",
        "mean loss",
        &losses,
        config.train.moving_average,
        &[],
        None,
    )?;

    Ok(())
}

/// The population runs: the trained policy, then each of `calendar.baselines`, each from
/// the generated world.
fn live_calendar(
    config: &Checked,
    world: &std::sync::Arc<World>,
    trained: &mut dyn Policy,
    observer: &mut dyn RunObserver,
) -> Result<Vec<crate::drive::calendar::Population>> {
    let days = config.calendar.days;
    let mut pops = Vec::new();
    for kind in std::iter::once(config.policy).chain(config.calendar.baselines.iter().copied()) {
        let mut baseline = if kind == config.policy { None } else { Some(make_policy(kind, config)?) };
        let policy: &mut dyn Policy = match &mut baseline {
            Some(b) => b.as_mut(),
            None => &mut *trained,
        };
        observer.calendar_started(kind.name(), days);
        let mode = crate::drive::calendar::Mode::Evaluate;
        let pop = crate::drive::calendar::live_days(config, world, policy, kind, mode, &mut |d| observer.calendar_day(d));
        observer.calendar_finished();
        pops.push(pop?);
    }
    Ok(pops)
}

/// sessions.parquet, days.parquet, days.csv, user_weeks.parquet, cohorts.csv,
/// creators.parquet, days.png and retention.png; returns each population's headline figures for summary.json.
fn write_population(
    config: &Checked,
    dir: &Path,
    pops: &[crate::drive::calendar::Population],
) -> Result<Vec<crate::drive::calendar::PopulationSummary>> {
    use crate::drive::calendar::{daily, summarize, Daily, DayRow};
    let pay = config.calendar.pay_per_view;
    let daily: Vec<Daily> = pops.iter().map(|p| daily(p, pay)).collect();
    let path = dir.join("sessions.parquet");
    records::write_parquet(&mut frame(records::sessions_frame(pops), &path)?, &path)?;
    let path = dir.join("days.parquet");
    let mut days = frame(records::days_frame(pops, &daily), &path)?;
    records::write_parquet(&mut days, &path)?;
    records::write_csv(&mut days, &dir.join("days.csv"))?;
    let path = dir.join("user_weeks.parquet");
    records::write_parquet(&mut frame(records::user_weeks_frame(pops), &path)?, &path)?;
    let path = dir.join("cohorts.csv");
    records::write_csv(&mut frame(records::cohorts_frame(pops, &daily), &path)?, &path)?;
    let path = dir.join("creators.parquet");
    records::write_parquet(&mut frame(records::creators_frame(pops, pay), &path)?, &path)?;

    // One line per policy of `f` day by day.
    let series = |f: &dyn Fn(&crate::drive::calendar::Population, &Daily) -> Vec<f64>| -> Vec<crate::output::plot::Series> {
        pops.iter()
            .zip(&daily)
            .map(|(p, d)| crate::output::plot::Series {
                name: p.policy.name().to_string(),
                points: f(p, d).into_iter().enumerate().map(|(day, y)| (day as f64, y)).collect(),
            })
            .collect()
    };
    let per_day = |d: &Daily, f: fn(&DayRow) -> f64| d.rows.iter().map(f).collect::<Vec<f64>>();
    crate::output::plot::panels_plot(
        &dir.join("days.png"),
        &format!("{}: the population day by day (seed {})", config.name, config.seed),
        "day",
        &[
            ("active users", series(&|_, d| per_day(d, |r| r.active_users as f64))),
            (
                "minutes watched per active user",
                series(&|_, d| per_day(d, |r| r.watch_s / 60.0 / (r.active_users.max(1) as f64))),
            ),
        ],
    )?;
    crate::output::plot::panels_plot(
        &dir.join("retention.png"),
        &format!("{}: share of users active each day (seed {})", config.name, config.seed),
        "day",
        &[
            ("share of all users active", series(&|_, d| d.share_active())),
            ("share of the day-0 cohort active", series(&|_, d| d.retention.clone())),
        ],
    )?;
    Ok(pops.iter().zip(&daily).map(|(p, d)| summarize(p, d)).collect())
}

/// timing.json, then summary.json (last: it marks the run finished).
fn write_summary(
    config: &Checked,
    dir: &Path,
    label: &str,
    prov: &Provenance,
    progress: &TrainProgress,
    evaluation: Vec<EvalResult>,
    population: Vec<crate::drive::calendar::PopulationSummary>,
) -> Result<Summary> {
    let summary = Summary {
        name: config.name.clone(),
        label: label.to_string(),
        policy: config.policy.name().into(),
        seed: config.seed,
        episodes: config.train.episodes,
        total_steps: progress.total_steps,
        updates: progress.updates,
        mean_return_last_100: progress.mean_return_last(100),
        eval_mean_return: evaluation[0].mean_return,
        oracle_fraction: oracle_fraction_of(&evaluation),
        advantage_over_greedy: paired_advantage(&evaluation, PolicyKind::Greedy),
        advantage_over_myopic_oracle: paired_advantage(&evaluation, PolicyKind::MyopicOracle),
        myopia_gap: paired_gap(&evaluation[1..], PolicyKind::Planner, PolicyKind::MyopicOracle),
        advantage_over_learners: evaluation[1..]
            .iter()
            .filter(|e| e.policy.learns())
            .filter_map(|e| Some((e.policy.name().to_string(), paired_advantage(&evaluation, e.policy)?)))
            .collect(),
        baselines: evaluation[1..].iter().map(|e| (e.policy.name().to_string(), e.mean_return)).collect(),
        evaluation,
        population,
        steps_per_second: config.output.wall_time.then(|| progress.steps_per_s()),
        training_s: config.output.wall_time.then_some(progress.elapsed_s),
        crate_version: prov.crate_version.clone(),
        git_revision: prov.git_revision.clone(),
        results_dir: dir.display().to_string(),
    };
    let timing = Timing {
        training_s: progress.elapsed_s,
        steps_per_second: progress.steps_per_s(),
        total_steps: progress.total_steps,
        updates: progress.updates,
    };
    write_text(&dir.join(TIMING), &serde_json::to_string_pretty(&timing).expect("timing serialises"))?;
    let json = serde_json::to_string_pretty(&summary).expect("a summary serialises");
    write_text(&dir.join("summary.json"), &json)?;
    Ok(summary)
}

/// Evaluates the agent saved in a run folder against the baselines, on `episodes`
/// evaluation episodes (the run's `train.eval_episodes` by default). The trained policy
/// comes first.
/// A run's config, its world, the policy saved in its checkpoint, and the number of
/// evaluation episodes.
type SavedPolicy = (Checked, std::sync::Arc<World>, Box<dyn Policy>, usize);

/// The [`SavedPolicy`] of the run in `dir` (`episodes`, or the run's `train.eval_episodes`).
fn saved_policy(dir: &Path, episodes: Option<usize>) -> Result<SavedPolicy> {
    let config = config_of_run(dir)?;
    crate::drive::preflight::check(&config)?;
    if episodes == Some(0) {
        return Err(Error::Other("--episodes must be at least 1".into()));
    }
    // The evaluation's records, counted as a run's: a count too large to hold is refused
    // with the estimate before anything runs.
    if let Some(n) = episodes {
        let mut probe: crate::config::Config = (*config).clone();
        probe.train.eval_episodes = n;
        crate::drive::preflight::fits_in_memory(&probe).map_err(|e| Error::Other(format!("--episodes {n}: {e}")))?;
    }
    let ck = crate::experiment::checkpoint::open(dir, &config)?;
    let world = std::sync::Arc::new(World::generate(&config));
    let n = episodes.unwrap_or(config.train.eval_episodes);
    let mut policy = make_policy(config.policy, &config)?;
    policy.load(&ck.dir)?;
    Ok((config, world, policy, n))
}

/// The saved agent's evaluation with every choice scored against the oracle's; writes
/// `choices_<episodes>.csv` into the run folder and returns its path with the records.
pub fn eval_saved_choices(dir: &Path, episodes: Option<usize>) -> Result<(PathBuf, Vec<crate::drive::train::ChoiceRecord>)> {
    use polars::prelude::Column;
    let (config, world, mut policy, n) = saved_policy(dir, episodes)?;
    let (_, records) = crate::drive::train::evaluate_choices(&config, &world, policy.as_mut(), n)?;
    let path = dir.join(format!("choices_{n}.csv"));
    let col_u32 = |name: &str, f: fn(&crate::drive::train::ChoiceRecord) -> u32| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<u32>>())
    };
    let col_f64 = |name: &str, f: fn(&crate::drive::train::ChoiceRecord) -> f64| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<f64>>())
    };
    let col_bool = |name: &str, f: fn(&crate::drive::train::ChoiceRecord) -> bool| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<bool>>())
    };
    let mut df = crate::output::records::frame(
        polars::prelude::DataFrame::new_infer_height(vec![
            col_u32("episode", |r| r.episode),
            col_u32("t", |r| r.t),
            col_u32("user", |r| r.user),
            col_u32("slot", |r| r.slot),
            col_u32("category", |r| r.category as u32),
            col_bool("interest_match", |r| r.interest_match),
            col_f64("expected_p", |r| r.expected_p),
            col_f64("best_expected_p", |r| r.best_expected_p),
            col_bool("interest_on_offer", |r| r.interest_on_offer),
        ]),
        &path,
    )?;
    crate::output::records::write_csv(&mut df, &path)?;
    Ok((path, records))
}

pub fn eval_saved(dir: &Path, episodes: Option<usize>) -> Result<Vec<EvalResult>> {
    let (config, world, mut policy, n) = saved_policy(dir, episodes)?;
    let evaluate = crate::drive::train::evaluate_until_signal;
    let mut out = vec![evaluate(&config, &world, policy.as_mut(), n)?];
    for &kind in &config.train.baselines {
        let mut b = make_policy(kind, &config)?;
        if kind.learns() {
            let saved = baseline_dir(dir, kind);
            b.load(&saved).map_err(|e| {
                Error::Other(format!("baseline {kind} learns, and what it learnt is not in {}: {e}", saved.display()))
            })?;
        }
        out.push(evaluate(&config, &world, b.as_mut(), n)?);
    }
    Ok(out)
}
