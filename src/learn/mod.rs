//! Sequence models on a run's logs (docs/learn.md): `fypsim learn next-action` predicts a
//! user's response to the next shown video from the interactions before it, `fypsim learn
//! churn` predicts from a user's weeks that they will not come next week. Recurrent cells
//! (RNN, LSTM, GRU, with tch), honest splits (by user and by time), baselines beside every
//! model, and, because the simulator knows its users' true response probabilities, the
//! Bayes-optimal figures a model can at best reach.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::{Error, Result};

pub mod churn;
pub mod metrics;
pub mod net;
pub mod next_action;
pub mod plots;
pub mod seq;

/// The recurrent cell of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// Elman RNN with tanh.
    Rnn,
    Lstm,
    Gru,
}

impl Cell {
    pub fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    pub fn from_name(s: &str) -> Option<Cell> {
        match s {
            "rnn" => Some(Cell::Rnn),
            "lstm" => Some(Cell::Lstm),
            "gru" => Some(Cell::Gru),
            _ => None,
        }
    }
}

/// Where a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A prediction at every step of a window (padded steps masked out).
    ManyToMany,
    /// One prediction per window, after its last step.
    ManyToOne,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::ManyToMany => "many-to-many",
            Mode::ManyToOne => "many-to-one",
        }
    }

    pub fn from_name(s: &str) -> Option<Mode> {
        match s {
            "many-to-many" | "many_to_many" | "m2m" => Some(Mode::ManyToMany),
            "many-to-one" | "many_to_one" | "m2o" => Some(Mode::ManyToOne),
            _ => None,
        }
    }
}

/// What is learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    NextAction,
    Churn,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::NextAction => "next-action",
            Task::Churn => "churn",
        }
    }
}

/// The settings of `fypsim learn` (docs/learn.md: Settings). Every key has a default; a
/// file or `--set` changes some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnConfig {
    pub cell: Cell,
    pub mode: Mode,
    /// Width of the recurrent state.
    pub hidden: usize,
    /// Stacked recurrent layers.
    pub layers: usize,
    /// Steps (next action) or weeks (churn) per window; the state starts at zero in each.
    pub window: usize,
    /// Many-to-one: a window ends at every `stride`-th target of a user.
    pub stride: usize,
    /// Passes over the training windows at most.
    pub epochs: usize,
    /// Early stopping: stop after this many epochs without a better validation loss, and
    /// keep the best epoch's parameters.
    pub patience: usize,
    /// Windows per gradient step.
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// The global gradient norm is clipped to this (0: no clipping).
    pub grad_clip: f64,
    /// Seeds the user split, the initial weights, the batch order and the bootstrap.
    pub seed: u64,
    /// Shares of the users held out for validation and for the test.
    pub valid_users: f64,
    pub test_users: f64,
    /// The time split: training and validation targets come from the first share of the
    /// log (episodes, or weeks for churn), test targets from the rest.
    pub time_split: f64,
    /// Bootstrap resamples (of test users) for the 95% intervals (at least
    /// [`MIN_BOOTSTRAP`]).
    pub bootstrap: usize,
    /// libtorch's CPU threads.
    pub threads: usize,
    /// Churn: the policy whose population is learnt (default: the run's own policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            cell: Cell::Gru,
            mode: Mode::ManyToMany,
            hidden: 64,
            layers: 1,
            window: 32,
            stride: 4,
            epochs: 30,
            patience: 3,
            batch: 64,
            lr: 0.003,
            grad_clip: 1.0,
            seed: 1,
            valid_users: 0.15,
            test_users: 0.15,
            time_split: 0.7,
            bootstrap: 1000,
            threads: 1,
            policy: None,
        }
    }
}

/// The fewest bootstrap resamples `learn` takes: below 100 the 2.5th and 97.5th
/// percentiles rest on one or two resamples each.
pub const MIN_BOOTSTRAP: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_bootstrap_resamples_are_refused() {
        for bad in [0, 1, 99] {
            let e = LearnConfig { bootstrap: bad, ..LearnConfig::default() }.validate().unwrap_err().to_string();
            assert!(e.contains("bootstrap") && e.contains("100 to 1000000"), "{e}");
        }
        assert!(LearnConfig { bootstrap: 100, ..LearnConfig::default() }.validate().is_ok());
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, allowed: &str) -> Error {
    Error::Config(ConfigError::Invalid { key: key.into(), value: value.to_string(), allowed: allowed.into() })
}

impl LearnConfig {
    /// The defaults, then `file` (a TOML file of these keys) if given, then `overrides`
    /// (`key=value`), validated.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<LearnConfig> {
        let mut table = toml::Table::try_from(LearnConfig::default()).expect("the defaults serialise");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Read { path: path.display().to_string(), reason: e.to_string() })?;
            let t: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::InFile {
                path: path.display().to_string(),
                inner: Box::new(ConfigError::Parse(e.to_string())),
            })?;
            crate::config::merge(&mut table, t);
        }
        for o in overrides {
            crate::config::apply_override(&mut table, o)?;
        }
        let c = LearnConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            let msg = e.to_string().trim_end().replace('\n', " ");
            let inner = ConfigError::Parse(msg);
            match file {
                Some(p) => ConfigError::InFile { path: p.display().to_string(), inner: Box::new(inner) },
                None => inner,
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let range = |key: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                Err(invalid(key, v, &format!("{lo} to {hi}")))
            } else {
                Ok(())
            }
        };
        range("hidden", self.hidden, 1, 4096)?;
        range("layers", self.layers, 1, 8)?;
        range("window", self.window, 1, 4096)?;
        range("stride", self.stride, 1, 4096)?;
        range("epochs", self.epochs, 1, 100_000)?;
        range("patience", self.patience, 1, 100_000)?;
        range("batch", self.batch, 1, 1_000_000)?;
        // A 95% percentile interval needs resamples beyond its 2.5th and 97.5th
        // percentiles: 0 printed zero-width "intervals".
        range("bootstrap", self.bootstrap, MIN_BOOTSTRAP, 1_000_000)?;
        range("threads", self.threads, 1, 1024)?;
        if self.window * self.batch * self.hidden > 2_000_000_000 {
            return Err(invalid("window x batch x hidden", self.window * self.batch * self.hidden, "at most 2e9"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            return Err(invalid("lr", self.lr, "a number in (0, 10]"));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(invalid("grad_clip", self.grad_clip, "a finite number >= 0 (0: no clipping)"));
        }
        for (key, v) in [("valid_users", self.valid_users), ("test_users", self.test_users)] {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                return Err(invalid(key, v, "a share in (0, 1)"));
            }
        }
        if self.valid_users + self.test_users >= 0.9 {
            return Err(invalid(
                "valid_users + test_users",
                self.valid_users + self.test_users,
                "below 0.9 (the rest are the training users)",
            ));
        }
        if !(self.time_split.is_finite() && self.time_split > 0.0 && self.time_split < 1.0) {
            return Err(invalid("time_split", self.time_split, "a share in (0, 1)"));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a LearnConfig serialises")
    }
}

/// What `fypsim learn` reports while it works.
pub trait LearnObserver {
    fn stage(&mut self, _message: &str) {}
    /// An epoch begins; `batches` gradient steps follow.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    fn batch(&mut self, _loss: f64) {}
    fn epoch_done(&mut self, _row: &EpochRow) {}
}

/// Reports nothing.
pub struct Silent;
impl LearnObserver for Silent {}

/// One row of training.csv.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRow {
    pub model: String,
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    /// Next action: validation accuracy; churn: validation ROC-AUC.
    pub valid_metric: f64,
    pub best: bool,
}

/// The folder a task's outputs go to: `RUN_DIR/learn/<task>-<cell>-<mode>/`.
pub fn out_dir(run_dir: &Path, task: Task, cfg: &LearnConfig) -> PathBuf {
    run_dir.join("learn").join(format!("{}-{}-{}", task.name(), cfg.cell.name(), cfg.mode.name()))
}

/// What a learn command wrote and its headline figures.
#[derive(Debug, Clone)]
pub struct LearnOutcome {
    pub dir: PathBuf,
    pub metrics: serde_json::Value,
    pub train_s: f64,
    pub files: Vec<PathBuf>,
}

/// Writes `text` to `dir/name` through a temporary file, so a failure leaves no half file.
pub(crate) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io("rename into place", &path))?;
    Ok(path)
}

/// Splits `users` into (train, valid, test) by the config's shares, at random from the
/// seed: a user is on exactly one side.
pub fn split_users(users: &[u32], cfg: &LearnConfig) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    use rand::seq::SliceRandom;
    let mut order: Vec<u32> = users.to_vec();
    order.sort_unstable();
    order.dedup();
    let mut rng = crate::rng::stream(cfg.seed, crate::rng::Stream::Learn);
    order.shuffle(&mut rng);
    let n = order.len();
    let n_test = ((n as f64 * cfg.test_users).round() as usize).clamp(usize::from(n >= 3), n);
    let n_valid = ((n as f64 * cfg.valid_users).round() as usize).clamp(usize::from(n >= 3), n - n_test);
    let test = order[..n_test].to_vec();
    let valid = order[n_test..n_test + n_valid].to_vec();
    let train = order[n_test + n_valid..].to_vec();
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    (sorted(train), sorted(valid), sorted(test))
}

/// `value` as pretty JSON in `dir/name` (through [`write_file`]).
pub(crate) fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    write_file(dir, name, (serde_json::to_string_pretty(value).expect("a JSON value serialises") + "\n").as_bytes())
}

/// Saves `model`'s parameters as `out/name`, written aside and renamed into place.
pub(crate) fn save_model(model: &seq::Model, out: &Path, name: &str) -> Result<PathBuf> {
    let path = out.join(name);
    let tmp = out.join(format!(".{name}.tmp"));
    model.vs.save(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(Error::io("rename into place", &path))?;
    Ok(path)
}

/// Refuses a folder that is not a run folder (no `config.toml`).
pub(crate) fn require_run_dir(run_dir: &Path) -> Result<()> {
    if run_dir.join("config.toml").exists() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{} is not a run folder: it has no config.toml (give the folder `fypsim run` wrote)",
        run_dir.display()
    )))
}

/// Rows `0..n` grouped by user, each group in the order `order` gives (time order), the
/// users ascending: the sequences of a log.
pub(crate) fn by_user<K: Ord>(n: usize, user: impl Fn(usize) -> u32, order: impl Fn(usize) -> K) -> Vec<(u32, Vec<usize>)> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| (user(i), order(i)));
    let mut out: Vec<(u32, Vec<usize>)> = Vec::new();
    for i in idx {
        match out.last_mut() {
            Some((u, v)) if *u == user(i) => v.push(i),
            _ => out.push((user(i), vec![i])),
        }
    }
    out
}

/// Starts an attempt whose outputs go to `out`: they are written into a fresh sibling
/// folder (`.<name>.partial`), the resolved learn config first (so even a failed attempt
/// says what it was), and only [`finish`] puts them in place. An attempt that fails or is
/// interrupted leaves the results already in `out` as they were. Returns the folder to
/// write into.
pub(crate) fn begin(out: &Path, cfg: &LearnConfig) -> Result<PathBuf> {
    let name = out.file_name().map_or_else(|| "learn".into(), |n| n.to_string_lossy().into_owned());
    let work = out.with_file_name(format!(".{name}.partial"));
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(Error::io("remove", &work))?;
    }
    std::fs::create_dir_all(&work).map_err(Error::io("create", &work))?;
    write_file(&work, "config.toml", cfg.to_toml().as_bytes())?;
    Ok(work)
}

/// Puts a finished attempt's folder `work` in place of `out` (the previous results, if
/// any, are replaced whole) and returns `files` as they are named there.
pub(crate) fn finish(work: &Path, out: &Path, files: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(Error::io("replace", out))?;
    }
    std::fs::rename(work, out).map_err(Error::io("move into place", out))?;
    Ok(files.iter().filter_map(|f| f.file_name()).map(|n| out.join(n)).collect())
}

/// training.csv and training.png: per model and epoch the training and validation loss
/// and the validation metric.
pub(crate) fn write_training(out: &Path, rows: &[EpochRow], metric: &str) -> Result<Vec<PathBuf>> {
    use polars::prelude::*;
    let path = out.join("training.csv");
    let mut df = crate::output::records::frame(
        df!(
            "model" => rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
            "epoch" => rows.iter().map(|r| r.epoch as u32).collect::<Vec<_>>(),
            "train_loss" => rows.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
            "valid_loss" => rows.iter().map(|r| r.valid_loss).collect::<Vec<_>>(),
            "valid_metric" => rows.iter().map(|r| r.valid_metric).collect::<Vec<_>>(),
            "best" => rows.iter().map(|r| r.best).collect::<Vec<_>>(),
        ),
        &path,
    )?;
    crate::output::records::write_csv(&mut df, &path)?;
    let png = out.join("training.png");
    plots::training_plot(&png, rows, metric)?;
    Ok(vec![path, png])
}
