//! One experiment run end to end: the output folder, the resolved config with its
//! provenance, the baselines, training, evaluation and every output file.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::agent::make_policy;
use crate::config::{Checked, Provenance};
use crate::env::Env;
use crate::plot::{series_plot, Reference};
use crate::records::{self, frame};
use crate::train::{evaluate, train, EpisodeRecord, EvalResult};
use crate::world::World;
use crate::{Error, Result};

/// The files a run writes, in the order it writes them.
pub const RUN_FILES: [&str; 8] = [
    "config.toml",
    "episodes.csv",
    "episodes.parquet",
    "steps.parquet",
    "rewards.png",
    "loss.png",
    "summary.json",
    "baselines.csv",
];

/// What happens during a run, for progress displays.
pub trait RunObserver {
    /// A stage begins (e.g. "evaluating baselines").
    fn stage(&mut self, _message: &str) {}
    /// Training starts with this many episodes.
    fn training_started(&mut self, _episodes: usize) {}
    /// A training episode ended.
    fn episode(&mut self, _record: &EpisodeRecord) {}
    /// Training ended.
    fn training_finished(&mut self) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl RunObserver for Silent {}

/// summary.json.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub policy: String,
    pub seed: u64,
    pub episodes: usize,
    pub total_steps: u64,
    pub updates: u64,
    /// Mean training return (exploration on) over the last 100 episodes.
    pub mean_return_last_100: f64,
    /// Each baseline's mean evaluation return (exploration off, common random numbers).
    pub baselines: BTreeMap<String, f64>,
    /// The trained policy and every baseline on the same evaluation episodes.
    pub evaluation: Vec<EvalResult>,
    /// Training steps per second (environment, policy and learning together).
    pub steps_per_second: f64,
    pub training_s: f64,
    pub crate_version: String,
    pub git_revision: String,
    pub results_dir: String,
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
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-dirty") } else { rev }
        }
        _ => "unknown".to_string(),
    };
    Provenance { crate_version: env!("CARGO_PKG_VERSION").to_string(), git_revision: revision }
}

/// Checks what validation cannot: that the machine can run this config (a CUDA device
/// when one is asked for). Called before anything is written.
pub fn preflight(config: &Checked) -> Result<()> {
    if config.policy == crate::config::PolicyKind::Dqn {
        crate::agent::dqn::resolve_device(config.dqn.device)?;
    }
    Ok(())
}

/// Creates the run's folder: `out` if given (it may exist but must hold no finished run),
/// else the next free `<results_dir>/<name>/seed<seed>-<NNN>`.
pub fn prepare_run_dir(config: &Checked, out: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = out {
        fs::create_dir_all(dir).map_err(Error::io("create folder", dir))?;
        if dir.join("summary.json").exists() {
            return Err(Error::Other(format!(
                "{} already holds a finished run (summary.json); choose another --out folder",
                dir.display()
            )));
        }
        return Ok(dir.to_path_buf());
    }
    let parent = Path::new(&config.output.results_dir).join(&config.name);
    fs::create_dir_all(&parent).map_err(Error::io("create folder", &parent))?;
    let prefix = format!("seed{}-", config.seed);
    let mut next = fs::read_dir(&parent)
        .map_err(Error::io("list", &parent))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name().to_str()?.strip_prefix(&prefix)?.parse::<u32>().ok()
        })
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

/// Runs one experiment into `dir`. Files are written as soon as they exist, so a failure
/// late in the run (a full disk, say) keeps everything written before it.
pub fn run(config: &Checked, dir: &Path, observer: &mut dyn RunObserver) -> Result<Summary> {
    let prov = provenance();
    let mut resolved = config.inner().clone();
    resolved.provenance = Some(prov.clone());
    write_text(
        &dir.join("config.toml"),
        &format!(
            "# The resolved config of this run. `fypsim run {}` repeats it.\n{}",
            dir.join("config.toml").display(),
            resolved.to_toml()
        ),
    )?;

    observer.stage("generating the world");
    let world = World::generate(config);

    let mut evaluation = Vec::new();
    for &kind in &config.train.baselines {
        observer.stage(&format!("evaluating baseline {kind}"));
        let mut policy = make_policy(kind, config)?;
        evaluation.push(evaluate(config, &world, policy.as_mut(), config.train.eval_episodes)?);
    }
    let mut baseline_table = frame(
        polars::df!(
            "policy" => evaluation.iter().map(|e| e.policy.name()).collect::<Vec<_>>(),
            "episodes" => evaluation.iter().map(|e| e.episodes as u64).collect::<Vec<_>>(),
            "mean_return" => evaluation.iter().map(|e| e.mean_return).collect::<Vec<_>>(),
            "ci95" => evaluation.iter().map(|e| e.ci95).collect::<Vec<_>>(),
            "mean_steps" => evaluation.iter().map(|e| e.mean_steps).collect::<Vec<_>>(),
        ),
        &dir.join("baselines.csv"),
    )?;

    let mut policy = make_policy(config.policy, config)?;
    let mut env = Env::new(config, world.clone());
    observer.training_started(config.train.episodes);
    let outcome = train(config, &mut env, policy.as_mut(), config.output.steps, &mut |r| {
        observer.episode(r)
    })?;
    observer.training_finished();

    let path = dir.join("episodes.csv");
    let mut episodes = frame(records::episodes_frame(&outcome.episodes, config.output.wall_time), &path)?;
    records::write_csv(&mut episodes, &path)?;
    records::write_parquet(&mut episodes, &dir.join("episodes.parquet"))?;
    if config.output.steps {
        let path = dir.join("steps.parquet");
        let mut steps = frame(records::steps_frame(&outcome.steps, config), &path)?;
        records::write_parquet(&mut steps, &path)?;
    }

    observer.stage(&format!("evaluating the trained {} policy", config.policy));
    let trained = evaluate(config, &world, policy.as_mut(), config.train.eval_episodes)?;
    let mut references: Vec<Reference> = evaluation
        .iter()
        .map(|e| Reference { name: format!("{} (evaluation)", e.policy), value: e.mean_return })
        .collect();
    references.push(Reference {
        name: format!("{} after training (evaluation)", trained.policy),
        value: trained.mean_return,
    });
    evaluation.insert(0, trained);

    let returns: Vec<Option<f64>> = outcome.episodes.iter().map(|e| Some(e.episode_return)).collect();
    series_plot(
        &dir.join("rewards.png"),
        &format!("{}: episode return ({} policy, seed {})", config.name, config.policy, config.seed),
        "return",
        "training return",
        &returns,
        config.train.moving_average,
        &references,
    )?;
    let losses: Vec<Option<f64>> = outcome.episodes.iter().map(|e| e.mean_loss).collect();
    series_plot(
        &dir.join("loss.png"),
        &format!("{}: mean TD loss per episode", config.name),
        "loss",
        "mean loss",
        &losses,
        config.train.moving_average,
        &[],
    )?;

    // The evaluation table gains the trained policy's row.
    let path = dir.join("baselines.csv");
    let trained = &evaluation[0];
    let mut row = frame(
        polars::df!(
            "policy" => [format!("{} (trained)", trained.policy.name())],
            "episodes" => [trained.episodes as u64],
            "mean_return" => [trained.mean_return],
            "ci95" => [trained.ci95],
            "mean_steps" => [trained.mean_steps],
        ),
        &path,
    )?;
    row = frame(row.vstack(&baseline_table), &path)?;
    baseline_table = row;
    records::write_csv(&mut baseline_table, &path)?;

    let summary = Summary {
        name: config.name.clone(),
        policy: config.policy.name().into(),
        seed: config.seed,
        episodes: config.train.episodes,
        total_steps: outcome.total_steps,
        updates: outcome.updates,
        mean_return_last_100: outcome.mean_return_last(100),
        baselines: evaluation[1..]
            .iter()
            .map(|e| (e.policy.name().to_string(), e.mean_return))
            .collect(),
        evaluation,
        steps_per_second: outcome.steps_per_s(),
        training_s: outcome.elapsed_s,
        crate_version: prov.crate_version,
        git_revision: prov.git_revision,
        results_dir: dir.display().to_string(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("a summary serialises");
    write_text(&dir.join("summary.json"), &json)?;
    Ok(summary)
}
