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
use crate::run::{run, Silent};
use crate::{Error, Result};

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

/// A file-name-safe rendering of `key=value`.
fn slug(key: &str, value: &toml::Value) -> String {
    let v = match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("{key}={v}").chars().map(|c| if c.is_ascii_alphanumeric() || "._=-".contains(c) { c } else { '-' }).collect()
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
    for point in &points {
        let label = if point.is_empty() {
            "base".to_string()
        } else {
            point.iter().map(|(k, v)| slug(k, v)).collect::<Vec<_>>().join("_")
        };
        for &seed in &file.seeds {
            let mut overrides = fixed.clone();
            overrides.extend(point.iter().map(|(k, v)| format!("{k}={v}")));
            overrides.push(format!("seed={seed}"));
            match Config::from_toml_str(&base_text, &overrides) {
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
    Skipped,
    Failed(String),
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub done: usize,
    pub skipped: usize,
    pub failed: Vec<(String, String)>,
}

/// Runs `runs` on `jobs` worker threads, skipping complete ones; a failing run leaves
/// `error.txt` in its folder and the sweep goes on. `on_done` is called after each run.
pub fn execute(runs: &[PlannedRun], jobs: usize, on_done: &(dyn Fn(&PlannedRun, &RunStatus) + Sync)) -> SweepOutcome {
    let next = AtomicUsize::new(0);
    let outcome = Mutex::new(SweepOutcome::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(runs.len().max(1)) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = runs.get(k) else { break };
                let status = if is_complete(r) {
                    RunStatus::Skipped
                } else {
                    match run_one(r) {
                        Ok(()) => RunStatus::Done,
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = std::fs::create_dir_all(&r.dir);
                            let _ = std::fs::write(r.dir.join("error.txt"), format!("{msg}\n"));
                            RunStatus::Failed(msg)
                        }
                    }
                };
                {
                    let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                    match &status {
                        RunStatus::Done => o.done += 1,
                        RunStatus::Skipped => o.skipped += 1,
                        RunStatus::Failed(m) => o.failed.push((format!("{} seed {}", r.label, r.seed), m.clone())),
                    }
                }
                on_done(r, &status);
            });
        }
    });
    outcome.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn run_one(r: &PlannedRun) -> Result<()> {
    crate::run::preflight(&r.config)?;
    std::fs::create_dir_all(&r.dir).map_err(Error::io("create folder", &r.dir))?;
    let _ = std::fs::remove_file(r.dir.join("error.txt"));
    // libtorch threads are process-wide; parallel runs each get one.
    run(&r.config, &r.dir, &r.label, &mut Silent).map(|_| ())
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
