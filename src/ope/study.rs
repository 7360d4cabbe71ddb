//! The off-policy evaluation study (docs/ope.md: The study): for each logging policy,
//! many independent logs at each size, every estimator on each for every target, and per
//! estimator its bias, spread, relative error and interval coverage against the truths.
//!
//! Log j (of a logging policy) is the evaluation episodes `j * largest .. j * largest + n_j`
//! of the config's seed, where n_j is the largest size that wants more than j logs; its
//! first `size` sessions are its log of that size. The logs of one size are disjoint in
//! their episodes, so independent; the two logging policies meet the same users (common
//! random numbers). The session truth of a target is its on-policy return over episodes
//! `0 .. truth_sessions`, computed once and shared by every logging policy.
//!
//! Each finished log's estimates are written to `parts/` as soon as they exist, and a
//! study started again in the same folder skips what is there: an interrupted study
//! loses at most the logs under way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::estimators::{self, Estimand, Options};
use super::{generate, on_policy_returns, one_decision_truth, target_probabilities, PolicySpec, SpecPolicy};
use crate::config::Checked;
use crate::{Error, Result};

/// A study file (`configs/ope/*.toml`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// The world's config, relative to the study file.
    pub config: PathBuf,
    /// The logging policies (policy specs, docs/ope.md).
    pub logging: Vec<String>,
    /// The target policies, nearest to the logging policies first.
    pub targets: Vec<String>,
    /// Log sizes in sessions, increasing.
    pub sizes: Vec<usize>,
    /// Independent logs per size (same length as `sizes`, not increasing).
    pub logs: Vec<usize>,
    /// Bootstrap resamples per estimate (100 to 100,000).
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// On-policy sessions per target for its session truth.
    pub truth_sessions: usize,
    /// The fitted models' ridge penalty.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
}

fn default_bootstrap() -> usize {
    100
}

fn default_ridge() -> f64 {
    1.0
}

/// The most logs of one size, sessions of one log, and truth sessions a study may ask for.
pub const MAX_LOGS: usize = 10_000;
pub const MAX_SIZE: usize = 1_000_000;
pub const MAX_TRUTH: usize = 100_000_000;

impl StudyFile {
    /// Reads and checks a study file; every problem names the key and what is allowed.
    pub fn load(path: &Path) -> Result<StudyFile> {
        let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
        let s: StudyFile =
            toml::from_str(&text).map_err(|e| Error::Other(format!("{}: not a valid study file: {e}", path.display())))?;
        let bad = |key: &str, what: String| Err(Error::Other(format!("{}: `{key}` {what}", path.display())));
        if s.logging.is_empty() || s.targets.is_empty() {
            return bad("logging/targets", "must each name at least one policy".into());
        }
        for spec in s.logging.iter().chain(&s.targets) {
            PolicySpec::parse(spec)?;
        }
        if s.sizes.is_empty() || s.sizes.len() != s.logs.len() {
            return bad(
                "sizes",
                format!("and `logs` must be non-empty lists of one length (got {} and {})", s.sizes.len(), s.logs.len()),
            );
        }
        if s.sizes[0] < 2 || s.sizes.windows(2).any(|w| w[0] >= w[1]) || *s.sizes.last().unwrap() > MAX_SIZE {
            return bad("sizes", format!("= {:?}: increasing, from 2 to {MAX_SIZE} sessions", s.sizes));
        }
        if s.logs.iter().any(|l| !(2..=MAX_LOGS).contains(l)) || s.logs.windows(2).any(|w| w[0] < w[1]) {
            return bad("logs", format!("= {:?}: from 2 to {MAX_LOGS} logs per size, never more for a larger size", s.logs));
        }
        if !(estimators::MIN_BOOTSTRAP..=estimators::MAX_BOOTSTRAP).contains(&s.bootstrap) {
            return bad(
                "bootstrap",
                format!("= {}: from {} to {}", s.bootstrap, estimators::MIN_BOOTSTRAP, estimators::MAX_BOOTSTRAP),
            );
        }
        if !(2..=MAX_TRUTH).contains(&s.truth_sessions) {
            return bad("truth_sessions", format!("= {}: from 2 to {MAX_TRUTH}", s.truth_sessions));
        }
        if !(s.ridge.is_finite() && s.ridge > 0.0) {
            return bad("ridge", format!("= {}: a finite number > 0", s.ridge));
        }
        Ok(s)
    }

    /// The world config's path (relative paths are relative to the study file's folder).
    pub fn config_path(&self, study: &Path) -> PathBuf {
        if self.config.is_absolute() {
            self.config.clone()
        } else {
            study.parent().unwrap_or(Path::new(".")).join(&self.config)
        }
    }

    /// How many sessions log j holds (the largest size that wants more than j logs).
    pub fn log_length(&self, j: usize) -> usize {
        self.sizes.iter().zip(&self.logs).filter(|(_, &l)| j < l).map(|(&s, _)| s).max().unwrap_or(0)
    }
}

/// One estimate of one log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRow {
    pub logging: String,
    pub target: String,
    pub sessions: usize,
    pub log: usize,
    pub estimator: String,
    pub session_estimand: bool,
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub ess: f64,
    /// V1 on this log's decisions (exact); the session estimators use the shared truth.
    pub one_decision_truth: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setting: String,
}

/// A target's session truth.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionTruth {
    pub target: String,
    pub value: f64,
    pub se: f64,
    pub sessions: usize,
}

/// One cell of the study: a logging policy, a target, a size, an estimator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    pub logging: String,
    pub target: String,
    pub sessions: usize,
    pub estimator: String,
    pub estimand: Estimand,
    pub logs: usize,
    /// The mean truth over the cell's logs (V1 differs a little from log to log).
    pub truth: f64,
    /// Mean error, and its standard error over the logs.
    pub bias: f64,
    pub bias_se: f64,
    /// The estimates' standard deviation across logs.
    pub spread: f64,
    pub rmse: f64,
    /// rmse / |truth|.
    pub relative_rmse: f64,
    /// The share of logs whose 95% interval holds the truth.
    pub coverage: f64,
    pub mean_ess: f64,
}

/// What a study found.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReport {
    pub study: String,
    pub config: String,
    pub seed: u64,
    pub file: StudyFile,
    pub truths: Vec<SessionTruth>,
    pub cells: Vec<Cell>,
    /// Seconds of wall time and of processor time (user + system) this invocation spent.
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Logs found done in `parts/` from an earlier invocation.
    pub resumed_logs: usize,
}

/// What a study reports while it works.
pub trait StudyObserver: Sync {
    fn stage(&self, message: &str);
    /// `done` of `total` units (logs, or truth chunks) of the current stage finished.
    fn progress(&self, done: usize, total: usize);
}

/// Processor seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

const TRUTH_CHUNK: usize = 50_000;

/// Runs (or finishes) the study of `file` (read from `path`) on `config`, writing into
/// `dir`: `parts/` (each log's estimates), `truth.json`, `logs.csv`, `study.csv`,
/// `study.json` and one `study-<logging>-<target>.png` per pair.
pub fn run_study(config: &Checked, file: &StudyFile, name: &str, dir: &Path, obs: &dyn StudyObserver) -> Result<StudyReport> {
    let wall = std::time::Instant::now();
    let cpu0 = cpu_seconds();
    // Policies are built per task (a policy is not shared between threads); building them
    // all once here refuses a bad one before any work.
    let build = |s: &str| SpecPolicy::new(&PolicySpec::parse(s)?, config);
    for s in file.logging.iter().chain(&file.targets) {
        build(s)?;
    }
    let targets = &file.targets;
    let parts = dir.join("parts");
    std::fs::create_dir_all(&parts).map_err(Error::io("create", &parts))?;

    // The session truths first: they are shared, and a wrong target fails early.
    let truth_path = dir.join("truth.json");
    let mut truths: Vec<SessionTruth> = match std::fs::read(&truth_path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    truths.retain(|t| file.targets.contains(&t.target) && t.sessions == file.truth_sessions);
    for target in targets {
        if truths.iter().any(|t| &t.target == target) {
            continue;
        }
        obs.stage(&format!("session truth of {target}: {} on-policy sessions", file.truth_sessions));
        let chunks = file.truth_sessions.div_ceil(TRUTH_CHUNK);
        let done = AtomicUsize::new(0);
        let sums: Vec<(f64, f64, usize)> = (0..chunks)
            .into_par_iter()
            .map(|c| {
                let first = c * TRUTH_CHUNK;
                let n = TRUTH_CHUNK.min(file.truth_sessions - first);
                let r = on_policy_returns(config, &build(target)?, first as u64, n, &mut |_| {})?;
                obs.progress(done.fetch_add(1, Ordering::Relaxed) + 1, chunks);
                Ok((r.iter().sum::<f64>(), r.iter().map(|x| x * x).sum::<f64>(), r.len()))
            })
            .collect::<Result<_>>()?;
        let (s, s2, n) = sums.iter().fold((0.0, 0.0, 0usize), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        let nf = n as f64;
        let mean = s / nf;
        let var = ((s2 - nf * mean * mean) / (nf - 1.0)).max(0.0);
        truths.push(SessionTruth { target: target.clone(), value: mean, se: (var / nf).sqrt(), sessions: n });
        let json = serde_json::to_vec_pretty(&truths).expect("truths serialise");
        crate::files::write_file(&truth_path, &json)?;
    }

    // Every (logging policy, log), the longest logs first so that the last ones are short.
    let largest = *file.sizes.last().expect("checked non-empty");
    let mut jobs: Vec<(usize, usize)> = (0..file.logging.len()).flat_map(|l| (0..file.logs[0]).map(move |j| (l, j))).collect();
    jobs.sort_by_key(|&(l, j)| (std::cmp::Reverse(file.log_length(j)), j, l));
    let part_of = |l: usize, j: usize| parts.join(format!("{l}-{j}.json"));
    let read_part = |l: usize, j: usize| -> Option<Vec<LogRow>> {
        let rows: Vec<LogRow> = serde_json::from_slice(&std::fs::read(part_of(l, j)).ok()?).ok()?;
        // A part of another study file (other policies or sizes) is not reused.
        let want = targets.len() * estimators::NAMES.len() * file.sizes.iter().filter(|&&s| s <= file.log_length(j)).count();
        (rows.len() == want && rows.iter().all(|r| r.logging == file.logging[l] && r.log == j)).then_some(rows)
    };
    let resumed = jobs.iter().filter(|&&(l, j)| read_part(l, j).is_some()).count();
    let todo: Vec<(usize, usize)> = jobs.iter().copied().filter(|&(l, j)| read_part(l, j).is_none()).collect();
    obs.stage(&format!(
        "{} logs ({} done before), largest {} sessions; each: log, then {} estimators x {} targets x its sizes, {} bootstrap resamples",
        jobs.len(),
        resumed,
        largest,
        estimators::NAMES.len(),
        targets.len(),
        file.bootstrap
    ));
    let features = crate::agent::bandit::BanditFeatures::of(config);
    let done = AtomicUsize::new(0);
    let total = todo.len();
    todo.par_iter()
        .map(|&(l, j)| -> Result<()> {
            let n = file.log_length(j);
            let first = (j * largest) as u64;
            let log = generate(config, &build(&file.logging[l])?, first, n, &mut |_| {})?;
            let mut rows = Vec::new();
            for target in targets {
                let tp = target_probabilities(&log, &build(target)?)?;
                for &size in file.sizes.iter().filter(|&&s| s <= n) {
                    let part = log.prefix(size);
                    let opts = Options {
                        ridge: file.ridge,
                        switch_tau: None,
                        shrinkage_lambda: None,
                        bootstrap: file.bootstrap,
                        seed: config.seed ^ (first.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        fqe_iterations: config.env.max_steps,
                    };
                    let tpp = &tp[..part.decisions.len()];
                    let v1 = one_decision_truth(part, tpp);
                    for e in estimators::estimate(part, tpp, &features, &opts)? {
                        rows.push(LogRow {
                            logging: file.logging[l].clone(),
                            target: target.clone(),
                            sessions: size,
                            log: j,
                            estimator: e.estimator,
                            session_estimand: e.estimand == Estimand::Session,
                            estimate: e.value,
                            ci_low: e.ci_low,
                            ci_high: e.ci_high,
                            ess: e.ess,
                            one_decision_truth: v1,
                            setting: e.setting,
                        });
                    }
                }
            }
            let json = serde_json::to_vec(&rows).expect("rows serialise");
            crate::files::write_file(&part_of(l, j), &json)?;
            obs.progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;

    let mut rows: Vec<LogRow> = Vec::new();
    for &(l, j) in &jobs {
        rows.extend(
            read_part(l, j)
                .ok_or_else(|| Error::Other(format!("{}: missing or damaged after it was written", part_of(l, j).display())))?,
        );
    }
    rows.sort_by(|a, b| (&a.logging, &a.target, a.sessions, a.log).cmp(&(&b.logging, &b.target, b.sessions, b.log)));
    let cells = summarise(file, &rows, &truths);
    let report = StudyReport {
        study: name.to_string(),
        config: config.name.clone(),
        seed: config.seed,
        file: file.clone(),
        truths,
        cells,
        wall_s: wall.elapsed().as_secs_f64(),
        cpu_s: cpu_seconds() - cpu0,
        resumed_logs: resumed,
    };
    write(&report, &rows, dir)?;
    Ok(report)
}

/// Per cell: bias, spread, RMSE, coverage, mean ESS over its logs.
pub fn summarise(file: &StudyFile, rows: &[LogRow], truths: &[SessionTruth]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for logging in &file.logging {
        for target in &file.targets {
            let Some(st) = truths.iter().find(|t| &t.target == target) else { continue };
            for (&size, &nlogs) in file.sizes.iter().zip(&file.logs) {
                for (name, estimand) in estimators::NAMES {
                    let of: Vec<&LogRow> = rows
                        .iter()
                        .filter(|r| {
                            &r.logging == logging
                                && &r.target == target
                                && r.sessions == size
                                && r.estimator == name
                                && r.log < nlogs
                        })
                        .collect();
                    if of.is_empty() {
                        continue;
                    }
                    let truth_of = |r: &LogRow| if r.session_estimand { st.value } else { r.one_decision_truth };
                    let n = of.len() as f64;
                    let errors: Vec<f64> = of.iter().map(|r| r.estimate - truth_of(r)).collect();
                    let bias = errors.iter().sum::<f64>() / n;
                    let sd = |xs: &mut dyn Iterator<Item = f64>, mean: f64| {
                        (xs.map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt()
                    };
                    let mean_est = of.iter().map(|r| r.estimate).sum::<f64>() / n;
                    let truth = of.iter().map(|r| truth_of(r)).sum::<f64>() / n;
                    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
                    cells.push(Cell {
                        logging: logging.clone(),
                        target: target.clone(),
                        sessions: size,
                        estimator: name.to_string(),
                        estimand,
                        logs: of.len(),
                        truth,
                        bias,
                        bias_se: sd(&mut errors.iter().copied(), bias) / n.sqrt(),
                        spread: sd(&mut of.iter().map(|r| r.estimate), mean_est),
                        rmse,
                        relative_rmse: rmse / truth.abs().max(1e-12),
                        coverage: of.iter().filter(|r| r.ci_low <= truth_of(r) && truth_of(r) <= r.ci_high).count() as f64 / n,
                        mean_ess: of.iter().map(|r| r.ess).sum::<f64>() / n,
                    });
                }
            }
        }
    }
    cells
}

/// A file-name-safe form of a policy spec.
fn slug(spec: &str) -> String {
    spec.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect()
}

fn write(report: &StudyReport, rows: &[LogRow], dir: &Path) -> Result<()> {
    use polars::prelude::{Column, DataFrame};
    let path = dir.join("logs.csv");
    let s = |name: &str, f: &dyn Fn(&LogRow) -> String| Column::new(name.into(), rows.iter().map(f).collect::<Vec<String>>());
    let f = |name: &str, g: &dyn Fn(&LogRow) -> f64| Column::new(name.into(), rows.iter().map(g).collect::<Vec<f64>>());
    let u = |name: &str, g: &dyn Fn(&LogRow) -> u64| Column::new(name.into(), rows.iter().map(g).collect::<Vec<u64>>());
    let truth_of = |r: &LogRow| {
        if r.session_estimand {
            report.truths.iter().find(|t| t.target == r.target).map_or(f64::NAN, |t| t.value)
        } else {
            r.one_decision_truth
        }
    };
    let mut df = crate::output::records::frame(
        DataFrame::new_infer_height(vec![
            s("logging", &|r| r.logging.clone()),
            s("target", &|r| r.target.clone()),
            u("sessions", &|r| r.sessions as u64),
            u("log", &|r| r.log as u64),
            s("estimator", &|r| r.estimator.clone()),
            s("estimand", &|r| if r.session_estimand { "session" } else { "one_decision" }.to_string()),
            f("estimate", &|r| r.estimate),
            f("ci_low", &|r| r.ci_low),
            f("ci_high", &|r| r.ci_high),
            f("ess", &|r| r.ess),
            f("truth", &|r| truth_of(r)),
            s("setting", &|r| r.setting.clone()),
        ]),
        &path,
    )?;
    crate::output::records::write_csv(&mut df, &path)?;

    let cells = &report.cells;
    let path = dir.join("study.csv");
    let s = |name: &str, f: &dyn Fn(&Cell) -> String| Column::new(name.into(), cells.iter().map(f).collect::<Vec<String>>());
    let f = |name: &str, g: &dyn Fn(&Cell) -> f64| Column::new(name.into(), cells.iter().map(g).collect::<Vec<f64>>());
    let mut df = crate::output::records::frame(
        DataFrame::new_infer_height(vec![
            s("logging", &|c| c.logging.clone()),
            s("target", &|c| c.target.clone()),
            Column::new("sessions".into(), cells.iter().map(|c| c.sessions as u64).collect::<Vec<u64>>()),
            s("estimator", &|c| c.estimator.clone()),
            s("estimand", &|c| c.estimand.name().to_string()),
            Column::new("logs".into(), cells.iter().map(|c| c.logs as u64).collect::<Vec<u64>>()),
            f("truth", &|c| c.truth),
            f("bias", &|c| c.bias),
            f("bias_se", &|c| c.bias_se),
            f("spread", &|c| c.spread),
            f("rmse", &|c| c.rmse),
            f("relative_rmse", &|c| c.relative_rmse),
            f("coverage", &|c| c.coverage),
            f("mean_ess", &|c| c.mean_ess),
        ]),
        &path,
    )?;
    crate::output::records::write_csv(&mut df, &path)?;
    let json = serde_json::to_string_pretty(report).expect("a report serialises");
    crate::files::write_file(&dir.join("study.json"), json.as_bytes())?;

    for logging in &report.file.logging {
        for target in &report.file.targets {
            let series: Vec<crate::output::plot::Series> = estimators::NAMES
                .iter()
                .map(|(name, _)| crate::output::plot::Series {
                    name: name.to_string(),
                    points: cells
                        .iter()
                        .filter(|c| &c.logging == logging && &c.target == target && c.estimator == *name && c.relative_rmse > 0.0)
                        .map(|c| (c.sessions as f64, c.relative_rmse))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            crate::output::plot::loglog_plot_in(
                &dir.join(format!("study-{}-{}.png", slug(logging), slug(target))),
                &format!("logging {logging}, target {target}: RMSE / |truth|"),
                "logged sessions",
                "relative RMSE over the logs",
                &series,
                &crate::output::plot::WIDE_PALETTE,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> StudyFile {
        StudyFile {
            config: "x.toml".into(),
            logging: vec!["greedy@softmax=1".into()],
            targets: vec!["random".into()],
            sizes: vec![10, 100, 1000],
            logs: vec![20, 20, 3],
            bootstrap: 100,
            truth_sessions: 1000,
            ridge: 1.0,
        }
    }

    struct Quiet;
    impl StudyObserver for Quiet {
        fn stage(&self, _: &str) {}
        fn progress(&self, _: usize, _: usize) {}
    }

    /// A small study end to end: every cell has its logs, the coverage and biases are
    /// numbers, and a second invocation in the same folder reuses every part and writes
    /// byte-identical tables.
    #[test]
    fn a_small_study_runs_and_resumes_to_the_same_tables() {
        let c = crate::config::Config::from_toml_str(
            "seed = 5\n[world]\nn_videos = 300\nn_users = 40\n[env]\nmax_steps = 8\n[dynamics.satiation]\nstrength = 0.5\n",
            &[],
        )
        .unwrap();
        let f = StudyFile {
            config: "unused.toml".into(),
            logging: vec!["greedy@softmax=1".into(), "greedy@softmax=2".into()],
            targets: vec!["greedy@softmax=0.5".into(), "myopic_oracle@epsilon=0.2".into()],
            sizes: vec![20, 60],
            logs: vec![6, 3],
            bootstrap: 100,
            truth_sessions: 3000,
            ridge: 1.0,
        };
        let dir = std::env::temp_dir().join(format!("fypsim-study-run-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let first = run_study(&c, &f, "small", &dir, &Quiet).unwrap();
        assert_eq!(first.resumed_logs, 0);
        // 2 loggings x 2 targets x 2 sizes x every estimator.
        assert_eq!(first.cells.len(), 2 * 2 * 2 * estimators::NAMES.len());
        for cell in &first.cells {
            assert_eq!(cell.logs, if cell.sessions == 20 { 6 } else { 3 }, "{cell:?}");
            assert!(cell.bias.is_finite() && cell.rmse.is_finite() && (0.0..=1.0).contains(&cell.coverage), "{cell:?}");
        }
        let study = std::fs::read(dir.join("study.csv")).unwrap();
        let logs = std::fs::read(dir.join("logs.csv")).unwrap();
        // Lose one part: the second invocation redoes it alone and gets the same bytes.
        std::fs::remove_file(dir.join("parts").join("1-4.json")).unwrap();
        let second = run_study(&c, &f, "small", &dir, &Quiet).unwrap();
        assert_eq!(second.resumed_logs, 2 * 6 - 1);
        assert_eq!(std::fs::read(dir.join("study.csv")).unwrap(), study);
        assert_eq!(std::fs::read(dir.join("logs.csv")).unwrap(), logs);
        assert!(dir.join("study-greedy-softmax-1-greedy-softmax-0.5.png").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn log_lengths_follow_the_sizes_that_want_them() {
        let f = file();
        assert_eq!(f.log_length(0), 1000);
        assert_eq!(f.log_length(2), 1000);
        assert_eq!(f.log_length(3), 100);
        assert_eq!(f.log_length(19), 100);
        assert_eq!(f.log_length(20), 0);
    }

    #[test]
    fn bad_study_files_name_the_key() {
        let dir = std::env::temp_dir().join(format!("fypsim-study-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.toml");
        for (text, key) in [
            ("config='x'\nlogging=[]\ntargets=['random']\nsizes=[10]\nlogs=[5]\ntruth_sessions=10", "logging"),
            ("config='x'\nlogging=['random']\ntargets=['random']\nsizes=[10,5]\nlogs=[5,5]\ntruth_sessions=10", "sizes"),
            ("config='x'\nlogging=['random']\ntargets=['random']\nsizes=[10,50]\nlogs=[5,9]\ntruth_sessions=10", "logs"),
            (
                "config='x'\nlogging=['random']\ntargets=['random']\nsizes=[10]\nlogs=[5]\ntruth_sessions=10\nbootstrap=5",
                "bootstrap",
            ),
            ("config='x'\nlogging=['random']\ntargets=['random']\nsizes=[10]\nlogs=[5]\ntruth_sessions=1", "truth_sessions"),
            (
                "config='x'\nlogging=['random']\ntargets=['random']\nsizes=[10]\nlogs=[5]\ntruth_sessions=10\nsurprise=1",
                "surprise",
            ),
            ("config='x'\nlogging=['random@warm=2']\ntargets=['random']\nsizes=[10]\nlogs=[5]\ntruth_sessions=10", "warm"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = StudyFile::load(&p).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
