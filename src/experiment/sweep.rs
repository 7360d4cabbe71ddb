//! Parameter sweeps: a base config, a grid of dotted keys to lists of values, and seeds.
//!
//! Every run is expanded and validated before any starts, so a bad value in run 37 fails
//! at second 0. Run folders are named from their settings and seed, so a sweep resumes by
//! running the same command (finished runs are skipped), and `--shard I/N` splits one
//! sweep into N disjoint parts whose union is exactly the whole sweep.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

use crate::config::{Checked, Config, ConfigError};
use crate::experiment::run::RunObserver;
use crate::{panic_message, Error, Result};

/// A sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The base config, relative to the sweep file.
    pub base: String,
    /// The sweep's name: its default output folder is `results/sweeps/<name>`.
    pub name: Option<String>,
    /// Every grid point runs once per seed.
    pub seeds: Vec<u64>,
    /// Dotted config keys to lists of values; the sweep is their cartesian product.
    #[serde(default)]
    pub grid: toml::Table,
    /// Overrides applied to every run before the grid's.
    #[serde(default)]
    pub set: toml::Table,
}

/// One run of a sweep, validated.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// The grid point, e.g. `dqn.lr=0.001_dqn.epsilon.per=episode` (`base` for no grid).
    pub label: String,
    pub seed: u64,
    /// Every `key=value` applied to the base config, the seed last.
    pub overrides: Vec<String>,
    pub config: Checked,
    /// `<out>/<label>/seed<seed>`.
    pub dir: PathBuf,
}

/// A loaded and expanded sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: String,
    pub base: PathBuf,
    pub runs: Vec<PlannedRun>,
}

fn sweep_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Other(format!("sweep {}: {msg}", path.display()))
}

/// A file-name-safe rendering of `key=value`, one-to-one: letters, digits, '.', '-' and
/// '_' stay; every other byte is written `%XX` ('=' and '%' included), so distinct
/// values never share a folder, and since no value holds a bare '=', a label of several
/// `key=value` parts joined by '_' splits one way only. A string shows without quotes.
fn slug(key: &str, value: &toml::Value) -> String {
    let v = match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("{}={}", escape(key), escape(&v))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a sweep file and expands and validates every run. `out` is the output folder
/// (default `results/sweeps/<name>`).
pub fn plan(path: &Path, out: Option<&Path>) -> Result<Sweep> {
    let text = std::fs::read_to_string(path).map_err(|e| sweep_err(path, format!("cannot read it: {e}")))?;
    let file: SweepFile = toml::from_str(&text).map_err(|e| sweep_err(path, e.to_string().trim_end()))?;
    if file.seeds.is_empty() {
        return Err(sweep_err(path, "`seeds` is empty (allowed: a non-empty list of integers)"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(s) = file.seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(sweep_err(path, format!("seed {s} appears twice in `seeds`")));
    }
    let name = file.name.clone().unwrap_or_else(|| path.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().to_string()));
    let base = path.parent().unwrap_or(Path::new(".")).join(&file.base);
    let base_text = std::fs::read_to_string(&base)
        .map_err(|e| sweep_err(path, format!("cannot read base config {}: {e}", base.display())))?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| Path::new("results/sweeps").join(&name));

    let fixed: Vec<String> = file.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // The grid as (key, values), each non-empty.
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (key, values) in &file.grid {
        let values = values
            .as_array()
            .cloned()
            .ok_or_else(|| sweep_err(path, format!("grid key `{key}` must map to a list of values")))?;
        if values.is_empty() {
            return Err(sweep_err(path, format!("grid key `{key}` has an empty list")));
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                return Err(sweep_err(path, format!("grid key `{key}` lists the value {v} twice (allowed: distinct values)")));
            }
        }
        axes.push((key.clone(), values));
    }
    // The cartesian product, first key varying slowest.
    let mut points: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (key, values) in &axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((key.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }

    let mut runs = Vec::new();
    let mut errors = Vec::new();
    let mut folders: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for point in &points {
        let label = if point.is_empty() {
            "base".to_string()
        } else {
            point.iter().map(|(k, v)| slug(k, v)).collect::<Vec<_>>().join("_")
        };
        // Two points in one folder would race and the second would look complete: never
        // (compared without case, for file systems that ignore it).
        let shown = point.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        if let Some(other) = folders.insert(label.to_lowercase(), shown.clone()) {
            return Err(sweep_err(
                path,
                format!("the grid points `{other}` and `{shown}` would share the folder {label}; make the values distinct"),
            ));
        }
        for &seed in &file.seeds {
            let mut overrides = fixed.clone();
            overrides.extend(point.iter().map(|(k, v)| format!("{k}={v}")));
            overrides.push(format!("seed={seed}"));
            // The memory check too, for every run before any starts.
            match Config::from_toml_str(&base_text, &overrides)
                .and_then(|c| crate::drive::preflight::fits_in_memory(&c).map(|()| c))
            {
                Ok(config) => runs.push(PlannedRun {
                    dir: out.join(&label).join(format!("seed{seed}")),
                    label: label.clone(),
                    seed,
                    overrides,
                    config,
                }),
                Err(e) => errors.push(format!("run {label} seed {seed}: {e}")),
            }
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(5);
        return Err(Error::Config(ConfigError::Parse(format!(
            "sweep {}: {n} of {} runs are invalid, none was started:\n  {}",
            path.display(),
            points.len() * file.seeds.len(),
            errors.join("\n  ")
        ))));
    }
    Ok(Sweep { name, base, runs })
}

/// Parses `I/N` (1-based).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::Other(format!("bad --shard `{s}` (allowed: I/N with 1 <= I <= N, e.g. 2/4)"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The I-th of N disjoint parts (1-based): every N-th run starting at I-1.
pub fn shard(runs: Vec<PlannedRun>, i: usize, n: usize) -> Vec<PlannedRun> {
    runs.into_iter().enumerate().filter(|(k, _)| k % n == i - 1).map(|(_, r)| r).collect()
}

/// A run is complete when its summary.json exists.
pub fn is_complete(run: &PlannedRun) -> bool {
    run.dir.join("summary.json").is_file()
}

/// How one run of a sweep ended.
#[derive(Debug, Clone)]
pub enum RunStatus {
    Done,
    /// Complete already (its summary.json exists).
    Skipped,
    /// Another process is working in its folder.
    Busy,
    /// Stopped by a signal, with a checkpoint: the same command resumes it.
    Interrupted,
    Failed(String),
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub done: usize,
    pub skipped: usize,
    pub busy: usize,
    pub interrupted: usize,
    /// Runs not started because the sweep was interrupted.
    pub not_started: usize,
    pub failed: Vec<(String, String)>,
}

/// Runs `runs` on `jobs` worker threads, skipping complete ones and resuming interrupted
/// ones from their checkpoints; a failing run (an error or a panic inside it) leaves
/// `error.txt` in its folder and the sweep goes on. `on_done` is called after each run,
/// and `on_episodes(n)` whenever `n` more training episodes are done (a complete run's
/// all at once, a resumed run's earlier ones when it resumes), for progress displays.
/// After [`crate::stop::request_stop`], runs in flight checkpoint and stop, and no new
/// run starts.
pub fn execute(
    runs: &[PlannedRun],
    jobs: usize,
    on_done: &(dyn Fn(&PlannedRun, &RunStatus) + Sync),
    on_episodes: &(dyn Fn(u64) + Sync),
) -> SweepOutcome {
    execute_with(runs, jobs, &|r| run_one(r, on_episodes), on_done)
}

/// The training episodes `runs` will train in all (for progress displays).
pub fn total_episodes(runs: &[PlannedRun]) -> u64 {
    runs.iter().map(|r| r.config.train.episodes as u64).sum()
}

/// Reports a run's training episodes to a sweep's progress display.
struct Counting<'a> {
    on_episodes: &'a (dyn Fn(u64) + Sync),
}

impl RunObserver for Counting<'_> {
    fn training_started(&mut self, _episodes: usize, done: usize) {
        if done > 0 {
            (self.on_episodes)(done as u64);
        }
    }
    fn episode(&mut self, _record: &crate::drive::train::EpisodeRecord) {
        (self.on_episodes)(1);
    }
}

/// [`execute`] with another way to run one run (tests plant failures through it).
#[doc(hidden)]
pub fn execute_with(
    runs: &[PlannedRun],
    jobs: usize,
    runner: &(dyn Fn(&PlannedRun) -> Result<RunStatus> + Sync),
    on_done: &(dyn Fn(&PlannedRun, &RunStatus) + Sync),
) -> SweepOutcome {
    let next = AtomicUsize::new(0);
    let outcome = Mutex::new(SweepOutcome::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(runs.len().max(1)) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = runs.get(k) else { break };
                if crate::stop::stop_requested() {
                    outcome.lock().unwrap_or_else(|e| e.into_inner()).not_started += 1;
                    continue;
                }
                let status = match isolated(runner, r) {
                    Ok(RunStatus::Done) => {
                        // error.txt is written and removed here alone: a run that now
                        // succeeds leaves no error of an earlier attempt behind.
                        let _ = std::fs::remove_file(r.dir.join("error.txt"));
                        RunStatus::Done
                    }
                    Ok(status) => status,
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = std::fs::create_dir_all(&r.dir);
                        let _ = std::fs::write(r.dir.join("error.txt"), format!("{msg}\n"));
                        RunStatus::Failed(msg)
                    }
                };
                {
                    let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                    match &status {
                        RunStatus::Done => o.done += 1,
                        RunStatus::Skipped => o.skipped += 1,
                        RunStatus::Busy => o.busy += 1,
                        RunStatus::Interrupted => o.interrupted += 1,
                        RunStatus::Failed(m) => o.failed.push((format!("{} seed {}", r.label, r.seed), m.clone())),
                    }
                }
                on_done(r, &status);
            });
        }
    });
    outcome.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// `runner(r)`, with a panic inside the run turned into that run's failure: one broken
/// run must not take the other runs of a sweep down with it.
fn isolated(runner: &(dyn Fn(&PlannedRun) -> Result<RunStatus> + Sync), r: &PlannedRun) -> Result<RunStatus> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner(r)))
        .unwrap_or_else(|payload| Err(Error::Other(format!("the run crashed: {}", panic_message(payload.as_ref())))))
}

/// Fails unless the run already in `r`'s folder (`what`: "a finished" or "an
/// interrupted") was of `r`'s config.
fn of_this_config(r: &PlannedRun, what: &str) -> Result<()> {
    let theirs = crate::experiment::run::config_of_run(&r.dir)?;
    if crate::experiment::checkpoint::fingerprint(&theirs) == crate::experiment::checkpoint::fingerprint(&r.config) {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{} holds {what} run of another config (the sweep's settings changed since it ran); \
         move it away, or give the sweep another --out folder",
        r.dir.display()
    )))
}

/// One run of a sweep: skipped when complete, resumed from its checkpoint when one
/// exists, started afresh otherwise. A folder that holds a run of another config (the
/// sweep file changed since) is that run's failure, never silently reused.
fn run_one(r: &PlannedRun, on_episodes: &(dyn Fn(u64) + Sync)) -> Result<RunStatus> {
    if is_complete(r) {
        of_this_config(r, "a finished")?;
        on_episodes(r.config.train.episodes as u64);
        return Ok(RunStatus::Skipped);
    }
    crate::drive::preflight::check(&r.config)?;
    std::fs::create_dir_all(&r.dir).map_err(Error::io("create folder", &r.dir))?;
    let resume = crate::experiment::checkpoint::exists(&r.dir);
    if resume {
        of_this_config(r, "an interrupted")?;
    }
    // libtorch threads are process-wide; parallel runs each get one.
    let control = crate::experiment::run::RunControl { resume, max_episodes: None };
    match crate::experiment::run::run_with(&r.config, &r.dir, &r.label, control, &mut Counting { on_episodes }) {
        Ok(crate::experiment::run::RunEnd::Finished(_)) => Ok(RunStatus::Done),
        Ok(crate::experiment::run::RunEnd::Interrupted { .. }) | Ok(crate::experiment::run::RunEnd::Stopped { .. }) => {
            Ok(RunStatus::Interrupted)
        }
        Err(Error::Busy { .. }) => Ok(RunStatus::Busy),
        Err(e) => Err(e),
    }
}

/// The runs of a multi-seed config (`train.seeds`): one per seed, in `<dir>/seed<s>`, all
/// labelled with the config's name.
pub fn seed_runs(config: &Checked, dir: &Path) -> Vec<PlannedRun> {
    config
        .train
        .seeds
        .iter()
        .map(|&seed| {
            let mut c = config.inner().clone();
            c.seed = seed;
            c.train.seeds = Vec::new();
            PlannedRun {
                label: config.name.clone(),
                seed,
                overrides: vec![format!("seed={seed}")],
                config: c.check().expect("a valid config with another seed is valid"),
                dir: dir.join(format!("seed{seed}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn expands_the_grid_times_seeds_with_deterministic_names() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "name = \"b\"\n");
        let s = write(
            d.path(),
            "s.toml",
            "base = \"base.toml\"\nseeds = [1, 2]\n[grid]\n\"dqn.lr\" = [0.001, 0.01]\n\"dqn.epsilon.per\" = [\"step\", \"episode\"]\n[set]\n\"train.episodes\" = 3\n",
        );
        let sweep = plan(&s, Some(&d.path().join("out"))).unwrap();
        assert_eq!(sweep.runs.len(), 8);
        let labels: Vec<&str> = sweep.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels[0], "dqn.epsilon.per=step_dqn.lr=0.001");
        assert!(sweep.runs.iter().all(|r| r.config.train.episodes == 3));
        assert_eq!(sweep.runs[1].dir, d.path().join("out/dqn.epsilon.per=step_dqn.lr=0.001/seed2"));
        let dirs: std::collections::HashSet<_> = sweep.runs.iter().map(|r| r.dir.clone()).collect();
        assert_eq!(dirs.len(), 8);
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_sweep() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "");
        let s = write(d.path(), "s.toml", "base = \"base.toml\"\nseeds = [1, 2, 3]\n[grid]\n\"dqn.lr\" = [0.1, 0.2, 0.3]\n");
        let all: Vec<PathBuf> = plan(&s, None).unwrap().runs.into_iter().map(|r| r.dir).collect();
        let mut union = Vec::new();
        for i in 1..=4 {
            union.extend(shard(plan(&s, None).unwrap().runs, i, 4).into_iter().map(|r| r.dir));
        }
        union.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(union, sorted);
        assert!(parse_shard("0/2").is_err() && parse_shard("3/2").is_err() && parse_shard("x").is_err());
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
    }

    #[test]
    fn a_panicking_run_fails_alone_and_the_others_run() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "");
        let s = write(d.path(), "s.toml", "base = \"base.toml\"\nseeds = [1, 2, 3]\n");
        let runs = plan(&s, Some(&d.path().join("out"))).unwrap().runs;
        let ran = Mutex::new(Vec::new());
        let outcome = execute_with(
            &runs,
            2,
            &|r| {
                if r.seed == 1 {
                    panic!("planted failure");
                }
                ran.lock().unwrap().push(r.seed);
                Ok(RunStatus::Done)
            },
            &|_, _| {},
        );
        assert_eq!(outcome.done, 2);
        assert_eq!(outcome.failed.len(), 1);
        assert!(outcome.failed[0].1.contains("planted failure"), "{:?}", outcome.failed);
        let error = std::fs::read_to_string(runs[0].dir.join("error.txt")).unwrap();
        assert!(error.contains("the run crashed: planted failure"), "{error}");
        let mut ran = ran.into_inner().unwrap();
        ran.sort();
        assert_eq!(ran, [2, 3]);
        // Run again, the failing run succeeds: its error.txt goes.
        let again = execute_with(&runs, 2, &|_| Ok(RunStatus::Done), &|_, _| {});
        assert!(again.failed.is_empty());
        assert!(!runs[0].dir.join("error.txt").exists(), "error.txt stays after the run succeeded");
    }

    #[test]
    fn folder_names_are_one_to_one() {
        let v = |s: &str| toml::Value::String(s.into());
        assert_eq!(slug("dqn.epsilon.per", &v("step")), "dqn.epsilon.per=step");
        assert_eq!(slug("dqn.lr", &toml::Value::Float(0.001)), "dqn.lr=0.001");
        assert_ne!(slug("k", &v("a b")), slug("k", &v("a-b")));
        assert_ne!(slug("k", &v("a/b")), slug("k", &v("a%2Fb")));
        assert_eq!(slug("k", &v("a=b")), "k=a%3Db");
    }

    #[test]
    fn one_bad_value_fails_the_whole_sweep_before_it_starts() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "");
        let s = write(d.path(), "s.toml", "base = \"base.toml\"\nseeds = [1]\n[grid]\n\"dqn.gamma\" = [0.9, 0.99, 1.5]\n");
        let e = plan(&s, None).unwrap_err().to_string();
        assert!(e.contains("1 of 3 runs are invalid") && e.contains("dqn.gamma"), "{e}");
        let s = write(d.path(), "t.toml", "base = \"base.toml\"\nseeds = []\n");
        assert!(plan(&s, None).unwrap_err().to_string().contains("`seeds` is empty"));
        let s = write(d.path(), "u.toml", "base = \"base.toml\"\nseeds = [1]\nextra = 1\n");
        assert!(plan(&s, None).unwrap_err().to_string().contains("unknown field `extra`"));
    }
}
