//! `fypsim._native`: the Rust side of the Python package. It wraps the public environment
//! API (`fypsim::drive::api::SimEnv`) for one environment (`Env`) and for a batch stepped
//! in parallel with the GIL released (`VecEnv`), writes observations straight into numpy
//! arrays, and reports every failure as a Python exception with the message the command
//! line gives: no Rust panic crosses into Python (each entry point catches them).
//!
//! The Gymnasium classes, spaces and helpers are Python (python/fypsim/); this module only
//! does what must be fast or must be the simulator's own rule.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use numpy::ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use fypsim::config::{features, Checked, Config, PolicyKind};
use fypsim::drive::api::{ResetOptions, SimEnv, StartWorld, StepResult, Streams};
use fypsim::drive::steplog::{step_columns, Column};
use fypsim::env::{num, Layout, Observation};
use fypsim::error::ConfigError;
use fypsim::Error;

// ---------------------------------------------------------------------------------------
// Errors: the CLI's messages, as the Python exception a Python user expects.

fn err(e: Error) -> PyErr {
    match e {
        Error::Config(ConfigError::Read { path, reason }) => {
            PyFileNotFoundError::new_err(ConfigError::Read { path, reason }.to_string())
        }
        e => PyValueError::new_err(e.to_string()),
    }
}

fn cfg_err(e: ConfigError) -> PyErr {
    err(Error::Config(e))
}

/// Runs `f`, turning a panic (a bug: user input never panics) into a RuntimeError, so that
/// PyO3's PanicException (a BaseException that `except Exception` misses) never reaches
/// the caller.
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(PyRuntimeError::new_err(format!(
            "fypsim internal error (please report it): {}",
            fypsim::panic_message(payload.as_ref())
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Configs: a shipped preset (inside the wheel) or a TOML file.

/// The shipped presets, compiled into the extension so that they travel inside the wheel.
const PRESETS: [(&str, &str); 12] = [
    ("default", include_str!("../../configs/default.toml")),
    ("longterm", include_str!("../../configs/longterm.toml")),
    ("prototype", include_str!("../../configs/prototype.toml")),
    ("smoke", include_str!("../../configs/smoke.toml")),
    ("dqn-vs-baselines", include_str!("../../configs/dqn-vs-baselines.toml")),
    ("longterm-evidence", include_str!("../../configs/longterm-evidence.toml")),
    ("scale-100k", include_str!("../../configs/scale-100k.toml")),
    ("scale-1m", include_str!("../../configs/scale-1m.toml")),
    ("scale-1m-learn", include_str!("../../configs/scale-1m-learn.toml")),
    ("calendar", include_str!("../../configs/calendar.toml")),
    ("calendar-dqn", include_str!("../../configs/calendar-dqn.toml")),
    ("churn", include_str!("../../configs/churn.toml")),
];

/// The names of the shipped presets and their TOML text.
#[pyfunction]
fn presets() -> Vec<(&'static str, &'static str)> {
    PRESETS.to_vec()
}

/// Loads a config: `source` is a preset's name or a TOML file's path; `overrides` are
/// `section.key=value` assignments, as the CLI's `--set`.
fn load(source: &str, overrides: &[String]) -> PyResult<Checked> {
    if let Some((_, text)) = PRESETS.iter().find(|(name, _)| *name == source) {
        return Config::from_toml_str(text, overrides)
            .map_err(|e| cfg_err(ConfigError::InFile { path: format!("preset \"{source}\""), inner: Box::new(e) }));
    }
    let looks_like_path = source.ends_with(".toml") || source.contains('/') || source.contains(std::path::MAIN_SEPARATOR);
    if !looks_like_path {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
        return Err(PyValueError::new_err(format!(
            "unknown config \"{source}\": name a shipped preset ({}) or give the path of a TOML file",
            names.join(", ")
        )));
    }
    Config::load(Path::new(source), overrides).map_err(cfg_err)
}

/// A config's resolved TOML (every key, defaults included), for `fypsim.load_config`.
#[pyfunction]
#[pyo3(signature = (source, overrides = Vec::new()))]
fn resolve_config(source: &str, overrides: Vec<String>) -> PyResult<String> {
    guard(|| Ok(load(source, &overrides)?.to_toml()))
}

/// The mean and the half-width of its 95% interval, as `fypsim run` reports them: normal
/// across episodes, Student's t across seeds (`student_t`).
#[pyfunction]
#[pyo3(signature = (xs, student_t = false))]
fn interval(xs: Vec<f64>, student_t: bool) -> PyResult<(f64, f64)> {
    guard(|| {
        if xs.is_empty() {
            return Err(PyValueError::new_err("no values: an interval needs at least one"));
        }
        let critical = if student_t { fypsim::stats::Critical::StudentT } else { fypsim::stats::Critical::Normal };
        let i = fypsim::stats::Interval::with(&xs, critical);
        Ok((i.mean, i.ci95))
    })
}

// ---------------------------------------------------------------------------------------
// The observation: its layout for the spaces, and writing it.

/// The observation's shape, from the config's layout (`fypsim::env::Layout`).
#[derive(Clone)]
struct Spec {
    slots: usize,
    per_slot: usize,
    history_steps: usize,
    history_features: usize,
    /// Each categorical field's number of values (a MultiDiscrete's nvec).
    nvec: Vec<i64>,
    history_start: usize,
}

impl Spec {
    fn of(c: &Checked) -> Spec {
        let l = Layout::of(c);
        let cats = c.world.categories.len() as i64;
        let mut nvec = vec![c.world.genders.len() as i64, c.world.regions.len() as i64, cats, cats, cats + 1, 4];
        nvec.extend(std::iter::repeat_n(cats + 1, l.slots));
        if let Some(n) = l.video_ids {
            nvec.extend(std::iter::repeat_n(n as i64 + 1, l.slots));
        }
        Spec {
            slots: l.slots,
            per_slot: l.per_slot(),
            history_steps: l.history_steps,
            history_features: l.history_features,
            history_start: l.history_start(),
            nvec,
        }
    }
    fn history_len(&self) -> usize {
        self.history_steps * self.history_features
    }
    fn flat_len(&self) -> usize {
        self.slots + self.slots * self.per_slot + self.nvec.iter().sum::<i64>() as usize + self.history_len() + num::SLOTS
    }
    fn names(&self, c: &Checked) -> (Vec<String>, Vec<String>) {
        let l = Layout::of(c);
        let mut per_slot: Vec<String> = features::BASE.iter().map(|s| s.to_string()).collect();
        per_slot.extend(l.logged.iter().map(|f| f.name().to_string()));
        let mut cats: Vec<String> =
            ["gender", "region", "interest_1", "interest_2", "last_category", "last_action"].map(String::from).to_vec();
        cats.extend((0..l.slots).map(|k| format!("category_{k}")));
        if l.video_ids.is_some() {
            cats.extend((0..l.slots).map(|k| format!("video_{k}")));
        }
        (per_slot, cats)
    }
}

/// Where one environment's observation goes: the Dict's arrays, or one flat row.
enum Out<'a> {
    Dict {
        user: &'a mut [f32],
        candidates: &'a mut [f32],
        categorical: &'a mut [i64],
        mask: &'a mut [i8],
        history: &'a mut [f32],
    },
    Flat(&'a mut [f32]),
}

/// Writes `obs` into `out`. The flat row is Gymnasium's `flatten` of the Dict space (its
/// keys in sorted order: action_mask, candidates, categorical one-hot, history, user), in
/// float32.
fn write_obs(spec: &Spec, obs: &Observation, out: Out<'_>) {
    let s = &obs.state;
    let cand = &s.numeric[num::SLOTS..num::SLOTS + spec.slots * spec.per_slot];
    let hist = &s.numeric[spec.history_start..spec.history_start + spec.history_len()];
    match out {
        Out::Dict { user, candidates, categorical, mask, history } => {
            user.copy_from_slice(&s.numeric[..num::SLOTS]);
            candidates.copy_from_slice(cand);
            categorical.copy_from_slice(&s.categorical);
            for (m, &v) in mask.iter_mut().zip(&s.valid) {
                *m = v as i8;
            }
            history.copy_from_slice(hist);
        }
        Out::Flat(row) => {
            row.fill(0.0);
            let mut at = 0;
            for (r, &v) in row[..spec.slots].iter_mut().zip(&s.valid) {
                *r = v as u8 as f32;
            }
            at += spec.slots;
            row[at..at + cand.len()].copy_from_slice(cand);
            at += cand.len();
            for (&v, &width) in s.categorical.iter().zip(&spec.nvec) {
                row[at + v as usize] = 1.0;
                at += width as usize;
            }
            row[at..at + hist.len()].copy_from_slice(hist);
            at += hist.len();
            row[at..at + num::SLOTS].copy_from_slice(&s.numeric[..num::SLOTS]);
        }
    }
}

/// A fresh observation as Python objects: a dict of arrays, or one flat array.
fn obs_to_py<'py>(py: Python<'py>, spec: &Spec, flatten: bool, obs: &Observation) -> PyResult<Bound<'py, PyAny>> {
    if flatten {
        let mut row = vec![0f32; spec.flat_len()];
        write_obs(spec, obs, Out::Flat(&mut row));
        return Ok(row.into_pyarray(py).into_any());
    }
    let mut user = vec![0f32; num::SLOTS];
    let mut candidates = vec![0f32; spec.slots * spec.per_slot];
    let mut categorical = vec![0i64; spec.nvec.len()];
    let mut mask = vec![0i8; spec.slots];
    let mut history = vec![0f32; spec.history_len()];
    write_obs(
        spec,
        obs,
        Out::Dict {
            user: &mut user,
            candidates: &mut candidates,
            categorical: &mut categorical,
            mask: &mut mask,
            history: &mut history,
        },
    );
    let d = PyDict::new(py);
    d.set_item("action_mask", mask.into_pyarray(py))?;
    let cand = Array2::from_shape_vec((spec.slots, spec.per_slot), candidates).expect("slots x per_slot numbers");
    d.set_item("candidates", cand.into_pyarray(py))?;
    d.set_item("categorical", categorical.into_pyarray(py))?;
    if spec.history_steps > 0 {
        let h = Array2::from_shape_vec((spec.history_steps, spec.history_features), history).expect("steps x features");
        d.set_item("history", h.into_pyarray(py))?;
    }
    d.set_item("user", user.into_pyarray(py))?;
    Ok(d.into_any())
}

fn spec_dict<'py>(py: Python<'py>, spec: &Spec, c: &Checked) -> PyResult<Bound<'py, PyDict>> {
    let (per_slot, cats) = spec.names(c);
    let d = PyDict::new(py);
    d.set_item("slots", spec.slots)?;
    d.set_item("user_features", ["age", "watched", "session_length"])?;
    d.set_item("candidate_features", per_slot)?;
    d.set_item("history_shape", (spec.history_steps, spec.history_features))?;
    d.set_item("categorical_fields", cats)?;
    d.set_item("nvec", spec.nvec.clone())?;
    d.set_item("flat_len", spec.flat_len())?;
    d.set_item("max_steps", c.env.max_steps)?;
    d.set_item("name", c.name.clone())?;
    d.set_item("seed", c.seed)?;
    d.set_item("categories", c.world.categories.clone())?;
    // The fixed baselines; the learning ones (the bandits) train beside a run's policy in
    // `fypsim run` and are listed apart.
    let (learning, fixed): (Vec<PolicyKind>, Vec<PolicyKind>) = c.train.baselines.iter().partition(|b| b.learns());
    d.set_item("baselines", fixed.iter().map(|b| b.name()).collect::<Vec<_>>())?;
    d.set_item("learning_baselines", learning.iter().map(|b| b.name()).collect::<Vec<_>>())?;
    d.set_item("eval_episodes", c.train.eval_episodes)?;
    d.set_item("eval_world", if c.train.eval_world == fypsim::config::EvalWorld::Fresh { "fresh" } else { "evolving" })?;
    Ok(d)
}

/// A config as JSON (every key, defaults included), for `fypsim.load_config` and
/// `read_run`.
#[pyfunction]
#[pyo3(signature = (source, overrides = Vec::new()))]
fn config_json(source: &str, overrides: Vec<String>) -> PyResult<String> {
    guard(|| {
        let c = load(source, &overrides)?;
        serde_json::to_string(&*c).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    })
}

fn parse_world(world: Option<&str>) -> PyResult<Option<StartWorld>> {
    match world {
        None => Ok(None),
        Some("fresh") => Ok(Some(StartWorld::Fresh)),
        Some("evolving") => Ok(Some(StartWorld::Evolving)),
        Some(w) => Err(PyValueError::new_err(format!("invalid world \"{w}\" (allowed: \"fresh\", \"evolving\")"))),
    }
}

fn parse_baseline(name: &str) -> PyResult<PolicyKind> {
    match PolicyKind::from_name(name) {
        Some(k) if k.learns() => Err(PyValueError::new_err(format!(
            "\"{name}\" learns, so it is not a fixed baseline: name random, greedy, most_viewed, oracle, myopic_oracle, planner or retention_planner"
        ))),
        None => Err(PyValueError::new_err(format!(
            "\"{name}\" is not a baseline: name random, greedy, most_viewed, oracle, myopic_oracle, planner or retention_planner"
        ))),
        Some(k) => Ok(k),
    }
}

/// What to do with an action on a slot that holds no candidate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Invalid {
    Raise,
    FirstValid,
}

fn parse_invalid(s: &str) -> PyResult<Invalid> {
    match s {
        "raise" => Ok(Invalid::Raise),
        "first_valid" => Ok(Invalid::FirstValid),
        _ => Err(PyValueError::new_err(format!("invalid invalid_action \"{s}\" (allowed: \"first_valid\", \"raise\")"))),
    }
}

/// The slot to show for `action` on `obs`, or the error the CLI's API gives: an action
/// outside 0..slots is always an error; a slot past the candidates is one under "raise"
/// and slot 0 (the first valid) under "first_valid".
fn check_action(action: i64, slots: usize, obs: &Observation, invalid: Invalid) -> Result<(usize, bool), String> {
    if action < 0 || action as u64 >= slots as u64 {
        return Err(format!("action {action} is outside the action space: allowed 0..{slots} (a slot)"));
    }
    let a = action as usize;
    if a < obs.candidates.len() {
        return Ok((a, false));
    }
    match invalid {
        Invalid::FirstValid => Ok((0, true)),
        Invalid::Raise => Err(format!(
            "action {a} is not a candidate: allowed 0..{} (slots past the candidates are masked)",
            obs.candidates.len()
        )),
    }
}

fn info_dict<'py>(
    py: Python<'py>,
    c: &Checked,
    episode: u64,
    user: u32,
    s: &StepResult,
    replaced: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let i = &s.info;
    d.set_item("episode", episode)?;
    d.set_item("user", user)?;
    d.set_item("t", i.t)?;
    d.set_item("video", i.video)?;
    d.set_item("category", c.world.categories[i.category as usize].as_str())?;
    d.set_item("slot", i.slot)?;
    d.set_item("action_replaced", replaced)?;
    d.set_item("response", i.response.name())?;
    d.set_item("watch_s", i.watch_s)?;
    d.set_item("time_s", i.time_s)?;
    d.set_item("outcome_p", Array1::from(i.outcome_p.to_vec()).into_pyarray(py))?;
    d.set_item("expected_rewards", i.expected_rewards.clone().into_pyarray(py))?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// One environment.

/// One environment (`fypsim.FypsimEnv` wraps it).
#[pyclass(module = "fypsim._native", name = "Env")]
struct PyEnv {
    inner: std::sync::Mutex<SimEnv>,
    spec: Spec,
    flatten: bool,
    invalid: Invalid,
}

impl PyEnv {
    fn env(&self) -> std::sync::MutexGuard<'_, SimEnv> {
        // A panic inside a method is caught by `guard` with the lock held; the state it
        // left is still a state, so the poison is cleared.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl PyEnv {
    #[new]
    #[pyo3(signature = (config, overrides = Vec::new(), flatten = false, invalid_action = "first_valid", streams = "evaluation"))]
    fn new(
        py: Python<'_>,
        config: &str,
        overrides: Vec<String>,
        flatten: bool,
        invalid_action: &str,
        streams: &str,
    ) -> PyResult<PyEnv> {
        guard(|| {
            let invalid = parse_invalid(invalid_action)?;
            let streams = parse_streams(streams)?;
            let c = load(config, &overrides)?;
            refuse_calendar(&c, config)?;
            let mut env = py.detach(|| SimEnv::new(&c)).map_err(err)?;
            env.set_streams(streams);
            Ok(PyEnv { spec: Spec::of(&c), inner: std::sync::Mutex::new(env), flatten, invalid })
        })
    }

    /// The observation layout, for the spaces: slots, per-slot features (names), history
    /// shape, categorical fields (names and nvec), the flat length; and the config's name,
    /// seed, step budget, categories, baselines and evaluation episodes.
    fn spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| spec_dict(py, &self.spec, self.env().config()))
    }

    /// The resolved config (TOML).
    fn config_toml(&self) -> PyResult<String> {
        guard(|| Ok(self.env().config().to_toml()))
    }

    #[pyo3(signature = (seed = None, episode = None, world = None))]
    fn reset<'py>(
        &self,
        py: Python<'py>,
        seed: Option<u64>,
        episode: Option<u64>,
        world: Option<&str>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        guard(|| {
            let world = parse_world(world)?;
            let mut env = self.env();
            env.reset(seed, ResetOptions { episode, world }).map_err(err)?;
            let obs = obs_to_py(py, &self.spec, self.flatten, env.observation())?;
            let info = PyDict::new(py);
            info.set_item("episode", env.episode())?;
            info.set_item("user", env.observation().user.id)?;
            Ok((obs, info))
        })
    }

    /// Shows the candidate in slot `action`: (observation, reward, terminated, truncated,
    /// info). `propensity` goes to the step log.
    #[pyo3(signature = (action, propensity = None))]
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &self,
        py: Python<'py>,
        action: i64,
        propensity: Option<f64>,
    ) -> PyResult<(Bound<'py, PyAny>, f64, bool, bool, Bound<'py, PyDict>)> {
        guard(|| {
            let mut env = self.env();
            let Some(k) = env.episode().filter(|_| !env.is_over()) else {
                return Err(PyValueError::new_err("the episode is over (or never began): call reset() first"));
            };
            let (slot, replaced) =
                check_action(action, self.spec.slots, env.observation(), self.invalid).map_err(PyValueError::new_err)?;
            let user = env.observation().user.id;
            let s = env.step_with(slot, propensity).map_err(err)?;
            let obs = obs_to_py(py, &self.spec, self.flatten, env.observation())?;
            let info = info_dict(py, env.config(), k, user, &s, replaced)?;
            Ok((obs, s.reward, s.terminated, s.truncated, info))
        })
    }

    fn action_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i8>>> {
        guard(|| {
            let env = self.env();
            if env.episode().is_none() {
                return Err(PyValueError::new_err("no observation yet: call reset() first"));
            }
            Ok(env.action_mask().into_iter().map(|b| b as i8).collect::<Vec<_>>().into_pyarray(py))
        })
    }

    fn baseline_action(&self, name: &str) -> PyResult<usize> {
        guard(|| {
            let kind = parse_baseline(name)?;
            self.env().baseline_action(kind).map_err(err)
        })
    }

    fn baseline_probabilities<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
        guard(|| {
            let kind = parse_baseline(name)?;
            Ok(self.env().baseline_probabilities(kind).map_err(err)?.map(|p| p.into_pyarray(py)))
        })
    }

    /// Plays episodes `episodes` with a built-in baseline, in Rust: (return, steps, user)
    /// per episode.
    #[pyo3(signature = (name, episodes, world = None))]
    fn play_baseline(
        &self,
        py: Python<'_>,
        name: &str,
        episodes: Vec<u64>,
        world: Option<&str>,
    ) -> PyResult<Vec<(f64, u32, u32)>> {
        guard(|| {
            let kind = parse_baseline(name)?;
            let world = parse_world(world)?;
            let mut guard = self.env();
            let env: &mut SimEnv = &mut guard;
            py.detach(|| {
                episodes
                    .iter()
                    .map(|&k| env.play_baseline(kind, k, world).map(|p| (p.episode_return, p.steps, p.user)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(err)
        })
    }

    fn set_logging(&self, on: bool) -> PyResult<()> {
        guard(|| {
            self.env().set_logging(on);
            Ok(())
        })
    }

    /// The steps logged since logging began or the last call, as (name, values) columns
    /// (steps.parquet's), and empties the log.
    fn take_log<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        guard(|| {
            let mut env = self.env();
            let rows = env.take_log();
            columns_to_py(py, step_columns(&rows, &env.config().world.categories))
        })
    }
}

fn parse_streams(s: &str) -> PyResult<Streams> {
    match s {
        "evaluation" => Ok(Streams::Evaluation),
        "training" => Ok(Streams::Training),
        _ => Err(PyValueError::new_err(format!("invalid streams \"{s}\" (allowed: \"evaluation\", \"training\")"))),
    }
}

/// A calendar config runs whole populations over days; the environment plays single
/// sessions.
fn refuse_calendar(c: &Checked, source: &str) -> PyResult<()> {
    if c.calendar.days > 0 {
        return Err(PyValueError::new_err(format!(
            "{source}: calendar.days = {} runs a whole population over days (fypsim run); the Gymnasium \
             environment plays one session per episode: use an episodic preset (default, longterm, prototype, \
             smoke) or set calendar.days = 0",
            c.calendar.days
        )));
    }
    Ok(())
}

fn columns_to_py<'py>(py: Python<'py>, cols: Vec<(&'static str, Column)>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (name, values) in cols {
        let v: Bound<'py, PyAny> = match values {
            Column::U32(v) => ("uint32", v.into_pyarray(py).into_any()).into_pyobject(py)?.into_any(),
            Column::F64(v) => ("float64", v.into_pyarray(py).into_any()).into_pyobject(py)?.into_any(),
            Column::OptF64(v) => ("float64?", v.into_pyobject(py)?.into_any()).into_pyobject(py)?.into_any(),
            Column::OptBool(v) => ("bool?", v.into_pyobject(py)?.into_any()).into_pyobject(py)?.into_any(),
            Column::Str(v) => ("str", v.into_pyobject(py)?.into_any()).into_pyobject(py)?.into_any(),
            Column::Name(v) => ("str", v.into_pyobject(py)?.into_any()).into_pyobject(py)?.into_any(),
            Column::ListU32(v) => ("list<uint32>", v.into_pyobject(py)?.into_any()).into_pyobject(py)?.into_any(),
        };
        out.append((name, v))?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// A batch of environments.

/// One sub-environment of a batch.
struct Sub {
    env: SimEnv,
    /// Next-step autoreset: the last step ended the episode, so the next `step` resets.
    pending_reset: bool,
}

/// What one sub-environment's step produced, besides the observation.
#[derive(Default, Clone, Copy)]
struct Stepped {
    reward: f64,
    terminated: bool,
    truncated: bool,
    replaced: bool,
    /// Same-step autoreset: the episode ended and its last observation was saved.
    ended: bool,
}

/// A buffer's elements, without numpy's borrow bookkeeping (a dozen lookups per call).
/// SAFETY: the buffers are made C-contiguous by this module and never resized or handed
/// out writeable (Python sees read-only views: `fypsim.vector` clears their writeable
/// flag), each is sliced at most once per call, and the calls are serialised by the
/// batch's lock.
macro_rules! rw {
    ($py:expr, $a:expr) => {
        unsafe { $a.bind($py).as_slice_mut().expect("the buffers are made contiguous") }
    };
}

/// One observation per sub-environment: the Dict's arrays, or the flat rows.
struct ObsBuffers {
    user: Py<PyArray2<f32>>,
    candidates: Py<PyArray2<f32>>,
    categorical: Py<PyArray2<i64>>,
    mask: Py<PyArray2<i8>>,
    history: Py<PyArray2<f32>>,
    flat: Py<PyArray2<f32>>,
}

impl ObsBuffers {
    /// Arrays for `n` observations of `spec` (zero columns for the form not used).
    fn new(py: Python<'_>, spec: &Spec, n: usize, flatten: bool, used: bool) -> ObsBuffers {
        let dict = used && !flatten;
        let w = |cols: usize, on: bool| if on { cols } else { 0 };
        ObsBuffers {
            user: zeros2(py, n, w(num::SLOTS, dict)),
            candidates: zeros2(py, n, w(spec.slots * spec.per_slot, dict)),
            categorical: zeros2(py, n, w(spec.nvec.len(), dict)),
            mask: zeros2(py, n, w(spec.slots, dict)),
            history: zeros2(py, n, w(spec.history_len(), dict)),
            flat: zeros2(py, n, w(spec.flat_len(), used && flatten)),
        }
    }

    fn views<'a>(&'a self, py: Python<'a>) -> Views<'a> {
        Views {
            user: rw!(py, self.user),
            candidates: rw!(py, self.candidates),
            categorical: rw!(py, self.categorical),
            mask: rw!(py, self.mask),
            history: rw!(py, self.history),
            flat: rw!(py, self.flat),
        }
    }

    fn export(&self, py: Python<'_>, d: &Bound<'_, PyDict>, prefix: &str) -> PyResult<()> {
        d.set_item(format!("{prefix}user"), self.user.bind(py))?;
        d.set_item(format!("{prefix}candidates"), self.candidates.bind(py))?;
        d.set_item(format!("{prefix}categorical"), self.categorical.bind(py))?;
        d.set_item(format!("{prefix}action_mask"), self.mask.bind(py))?;
        d.set_item(format!("{prefix}history"), self.history.bind(py))?;
        d.set_item(format!("{prefix}flat"), self.flat.bind(py))
    }
}

/// The batch's preallocated arrays, shared with Python.
struct Buffers {
    obs: ObsBuffers,
    /// The last observation of episodes that ended this step (same-step autoreset).
    fin: ObsBuffers,
    rewards: Py<PyArray1<f64>>,
    terminated: Py<PyArray1<bool>>,
    truncated: Py<PyArray1<bool>>,
    replaced: Py<PyArray1<bool>>,
    ended: Py<PyArray1<bool>>,
}

/// Mutable views of one observation set (main or final) for all envs.
struct Views<'a> {
    user: &'a mut [f32],
    candidates: &'a mut [f32],
    categorical: &'a mut [i64],
    mask: &'a mut [i8],
    history: &'a mut [f32],
    flat: &'a mut [f32],
}

impl<'a> Views<'a> {
    /// One sub-environment's part of every array.
    fn split(self, spec: &Spec, n: usize, flatten: bool) -> Vec<Out<'a>> {
        if flatten {
            let w = spec.flat_len();
            return self.flat.chunks_mut(w.max(1)).take(n).map(Out::Flat).collect();
        }
        let hl = spec.history_len();
        let mut users = self.user.chunks_mut(num::SLOTS);
        let mut cands = self.candidates.chunks_mut(spec.slots * spec.per_slot);
        let mut cats = self.categorical.chunks_mut(spec.nvec.len());
        let mut masks = self.mask.chunks_mut(spec.slots);
        let mut hist = self.history.chunks_mut(hl.max(1));
        (0..n)
            .map(|_| Out::Dict {
                user: users.next().expect("n rows"),
                candidates: cands.next().expect("n rows"),
                categorical: cats.next().expect("n rows"),
                mask: masks.next().expect("n rows"),
                history: if hl == 0 { &mut [] } else { hist.next().expect("n rows") },
            })
            .collect()
    }
}

/// One sub-environment's part of a batch step: it, its observation's place, its final
/// observation's place (same-step autoreset), and its (slot, replaced).
type StepJob<'a, 'b> = (((&'a mut Sub, Out<'b>), Option<Out<'b>>), &'a (usize, bool));

/// One environment of the Rust loop: it, its action stream and its observation buffers.
type LoopEnv = (Sub, rand_chacha::ChaCha8Rng, Vec<f32>, Vec<f32>, Vec<i64>, Vec<i8>, Vec<f32>);

/// Steps one sub-environment: a pending reset (next-step mode), or the action, then in
/// same-step mode the reset of an episode that ended (its last observation to `fin`).
fn step_sub(
    sub: &mut Sub,
    spec: &Spec,
    slot: usize,
    replaced: bool,
    same_step: bool,
    out: Out<'_>,
    fin: Option<Out<'_>>,
) -> Result<Stepped, Error> {
    if sub.pending_reset {
        sub.pending_reset = false;
        sub.env.reset(None, ResetOptions::default())?;
        write_obs(spec, sub.env.observation(), out);
        return Ok(Stepped::default());
    }
    let s = sub.env.step(slot)?;
    let mut r = Stepped { reward: s.reward, terminated: s.terminated, truncated: s.truncated, replaced, ended: false };
    if s.terminated || s.truncated {
        if same_step {
            if let Some(fin) = fin {
                write_obs(spec, sub.env.observation(), fin);
            }
            r.ended = true;
            sub.env.reset(None, ResetOptions::default())?;
        } else {
            sub.pending_reset = true;
        }
    }
    write_obs(spec, sub.env.observation(), out);
    Ok(r)
}

/// A batch of environments stepped in one call (`fypsim.FypsimVectorEnv` wraps it).
#[pyclass(module = "fypsim._native", name = "VecEnv")]
struct PyVecEnv {
    inner: std::sync::Mutex<Vec<Sub>>,
    spec: Spec,
    flatten: bool,
    invalid: Invalid,
    same_step: bool,
    pool: Option<rayon::ThreadPool>,
    /// The threads that step the batch (1: the calling thread alone).
    threads: usize,
    buf: Buffers,
    config: Checked,
}

impl PyVecEnv {
    fn subs(&self) -> std::sync::MutexGuard<'_, Vec<Sub>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}

fn zeros2<T: numpy::Element>(py: Python<'_>, rows: usize, cols: usize) -> Py<PyArray2<T>> {
    PyArray2::<T>::zeros(py, [rows, cols], false).unbind()
}

fn zeros1<T: numpy::Element>(py: Python<'_>, n: usize) -> Py<PyArray1<T>> {
    PyArray1::<T>::zeros(py, [n], false).unbind()
}

#[pymethods]
impl PyVecEnv {
    #[new]
    #[pyo3(signature = (config, num_envs, overrides = Vec::new(), flatten = false, invalid_action = "first_valid", autoreset = "next_step", threads = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config: &str,
        num_envs: usize,
        overrides: Vec<String>,
        flatten: bool,
        invalid_action: &str,
        autoreset: &str,
        threads: Option<usize>,
    ) -> PyResult<PyVecEnv> {
        guard(|| {
            let invalid = parse_invalid(invalid_action)?;
            let same_step = match autoreset {
                "next_step" => false,
                "same_step" => true,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "invalid autoreset \"{autoreset}\" (allowed: \"next_step\", \"same_step\")"
                    )))
                }
            };
            let c = load(config, &overrides)?;
            refuse_calendar(&c, config)?;
            let pool = match threads {
                None => None,
                Some(0) => return Err(PyValueError::new_err("threads must be at least 1 (or None: every core)")),
                Some(t) => Some(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(t)
                        .build()
                        .map_err(|e| PyRuntimeError::new_err(format!("cannot start {t} threads: {e}")))?,
                ),
            };
            let envs = py.detach(|| SimEnv::many(&c, num_envs)).map_err(err)?;
            let spec = Spec::of(&c);
            let n = num_envs;
            let buf = Buffers {
                obs: ObsBuffers::new(py, &spec, n, flatten, true),
                fin: ObsBuffers::new(py, &spec, n, flatten, same_step),
                rewards: zeros1(py, n),
                terminated: zeros1(py, n),
                truncated: zeros1(py, n),
                replaced: zeros1(py, n),
                ended: zeros1(py, n),
            };
            let subs = envs.into_iter().map(|env| Sub { env, pending_reset: false }).collect();
            let threads = threads.unwrap_or_else(rayon::current_num_threads);
            Ok(PyVecEnv { inner: std::sync::Mutex::new(subs), spec, flatten, invalid, same_step, pool, threads, buf, config: c })
        })
    }

    /// The arrays this batch writes into (shared: each call overwrites them).
    fn buffers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let b = &self.buf;
        b.obs.export(py, &d, "")?;
        b.fin.export(py, &d, "final_")?;
        d.set_item("rewards", b.rewards.bind(py))?;
        d.set_item("terminated", b.terminated.bind(py))?;
        d.set_item("truncated", b.truncated.bind(py))?;
        d.set_item("action_replaced", b.replaced.bind(py))?;
        d.set_item("ended", b.ended.bind(py))?;
        Ok(d)
    }

    fn num_envs(&self) -> usize {
        self.subs().len()
    }

    fn spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| spec_dict(py, &self.spec, &self.config))
    }

    /// The config's resolved TOML.
    fn config_toml(&self) -> String {
        self.config.to_toml()
    }

    /// Resets every sub-environment: sub-environment `i` with `seeds[i]` (None: its next
    /// episode). Writes the observations; returns each one's (episode, user).
    #[pyo3(signature = (seeds, episode = None, world = None))]
    fn reset(
        &self,
        py: Python<'_>,
        seeds: Vec<Option<u64>>,
        episode: Option<u64>,
        world: Option<&str>,
    ) -> PyResult<Vec<(u64, u32)>> {
        guard(|| {
            let world = parse_world(world)?;
            let mut guard = self.subs();
            let subs: &mut Vec<Sub> = &mut guard;
            if seeds.len() != subs.len() {
                return Err(PyValueError::new_err(format!("{} seeds for {} environments", seeds.len(), subs.len())));
            }
            let n = subs.len();
            let spec = &self.spec;
            let flatten = self.flatten;
            let views = self.buf.obs.views(py);
            let outs = views.split(spec, n, flatten);
            let result: Result<Vec<(u64, u32)>, Error> = py.detach(|| {
                self.run(|| {
                    subs.par_iter_mut()
                        .zip(outs)
                        .zip(seeds)
                        .map(|((sub, out), seed)| {
                            sub.pending_reset = false;
                            sub.env.reset(seed, ResetOptions { episode, world })?;
                            write_obs(spec, sub.env.observation(), out);
                            Ok((sub.env.episode().unwrap_or(0), sub.env.observation().user.id))
                        })
                        .collect()
                })
            });
            result.map_err(err)
        })
    }

    /// Steps every sub-environment with its action (one call; the GIL is released while
    /// the batch steps on the cores). Writes observations, rewards, terminated,
    /// truncated, action_replaced (and with same-step autoreset the final observations
    /// and `ended`).
    fn step(&self, py: Python<'_>, actions: PyReadonlyArray1<'_, i64>) -> PyResult<()> {
        guard(|| {
            let actions = actions.as_slice().map_err(|_| PyValueError::new_err("actions must be a contiguous array"))?;
            let mut guard = self.subs();
            let subs: &mut Vec<Sub> = &mut guard;
            let n = subs.len();
            if actions.len() != n {
                return Err(PyValueError::new_err(format!(
                    "{} actions for {} environments: give one per environment",
                    actions.len(),
                    n
                )));
            }
            // Every action is checked before any environment steps: a refused batch
            // changes nothing.
            let mut slots = Vec::with_capacity(n);
            for (i, (sub, &a)) in subs.iter().zip(actions).enumerate() {
                if sub.pending_reset {
                    slots.push((0, false));
                    continue;
                }
                if sub.env.episode().is_none() || sub.env.is_over() {
                    return Err(PyValueError::new_err("the episodes are not started: call reset() first"));
                }
                slots.push(
                    check_action(a, self.spec.slots, sub.env.observation(), self.invalid)
                        .map_err(|e| PyValueError::new_err(format!("environment {i}: {e}")))?,
                );
            }
            let spec = &self.spec;
            let (flatten, same_step, buf) = (self.flatten, self.same_step, &self.buf);
            let (rw_, te, tr, re, en) = (
                rw!(py, buf.rewards),
                rw!(py, buf.terminated),
                rw!(py, buf.truncated),
                rw!(py, buf.replaced),
                rw!(py, buf.ended),
            );
            let outs = buf.obs.views(py).split(spec, n, flatten);
            let fins: Vec<Option<Out<'_>>> = if same_step {
                buf.fin.views(py).split(spec, n, flatten).into_iter().map(Some).collect()
            } else {
                (0..n).map(|_| None).collect()
            };
            let one = |(((sub, out), fin), &(slot, replaced)): StepJob<'_, '_>| {
                catch_unwind(AssertUnwindSafe(|| step_sub(sub, spec, slot, replaced, same_step, out, fin))).unwrap_or_else(|p| {
                    Err(Error::Other(format!("fypsim internal error (please report it): {}", fypsim::panic_message(p.as_ref()))))
                })
            };
            let results: Vec<Result<Stepped, Error>> = py.detach(|| {
                if self.threads == 1 {
                    // One thread: no pool to wake.
                    subs.iter_mut().zip(outs).zip(fins).zip(&slots).map(one).collect()
                } else {
                    self.run(|| subs.par_iter_mut().zip(outs).zip(fins).zip(&slots).map(one).collect())
                }
            });
            for (i, r) in results.into_iter().enumerate() {
                let s = r.map_err(|e| PyValueError::new_err(format!("environment {i}: {e}")))?;
                rw_[i] = s.reward;
                te[i] = s.terminated;
                tr[i] = s.truncated;
                re[i] = s.replaced;
                en[i] = s.ended;
            }
            Ok(())
        })
    }

    /// Each sub-environment's (episode, user) now.
    fn episodes(&self) -> Vec<(u64, u32)> {
        self.subs()
            .iter()
            .map(|s| (s.env.episode().unwrap_or(0), if s.env.episode().is_some() { s.env.observation().user.id } else { 0 }))
            .collect()
    }
}

/// The Rust loop the vector env is measured against: `num_envs` environments stepped with
/// random valid actions (drawn in Rust) on `threads` threads, writing observations into
/// Rust buffers, autoresetting as the vector env does; returns steps per second.
#[pyfunction]
#[pyo3(signature = (config, num_envs, steps, threads, overrides = Vec::new(), seed = 0, flatten = false))]
#[allow(clippy::too_many_arguments)]
fn rust_loop_steps_per_s(
    py: Python<'_>,
    config: &str,
    num_envs: usize,
    steps: usize,
    threads: usize,
    overrides: Vec<String>,
    seed: u64,
    flatten: bool,
) -> PyResult<f64> {
    guard(|| {
        let c = load(config, &overrides)?;
        let spec = Spec::of(&c);
        let envs = SimEnv::many(&c, num_envs).map_err(err)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        py.detach(|| -> PyResult<f64> {
            let mut subs: Vec<LoopEnv> = envs
                .into_iter()
                .enumerate()
                .map(|(i, env)| {
                    (
                        Sub { env, pending_reset: false },
                        rand_chacha::ChaCha8Rng::seed_from_u64(seed + i as u64),
                        vec![0f32; num::SLOTS],
                        vec![0f32; spec.slots * spec.per_slot],
                        vec![0i64; spec.nvec.len()],
                        vec![0i8; spec.slots],
                        vec![0f32; if flatten { spec.flat_len() } else { spec.history_len() }],
                    )
                })
                .collect();
            for (i, s) in subs.iter_mut().enumerate() {
                s.0.env.reset(Some(seed + i as u64), ResetOptions::default()).map_err(err)?;
            }
            let started = std::time::Instant::now();
            let rounds = steps.div_ceil(num_envs.max(1));
            // One batch step per round, each its own call into the pool as a batch step
            // API makes them (the threads may sleep between calls); one thread steps
            // without a pool.
            let one = |(sub, rng, u, cnd, cat, m, h): &mut LoopEnv| -> Result<(), Error> {
                let n = if sub.pending_reset { 1 } else { sub.env.observation().candidates.len() };
                let slot = rng.random_range(0..n);
                let out = if flatten {
                    Out::Flat(&mut h[..])
                } else {
                    Out::Dict { user: u, candidates: cnd, categorical: cat, mask: m, history: h }
                };
                step_sub(sub, &spec, slot, false, false, out, None)?;
                Ok(())
            };
            for _ in 0..rounds {
                if threads <= 1 {
                    subs.iter_mut().try_for_each(one)
                } else {
                    pool.install(|| subs.par_iter_mut().try_for_each(one))
                }
                .map_err(err)?;
            }
            Ok((rounds * num_envs) as f64 / started.elapsed().as_secs_f64())
        })
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEnv>()?;
    m.add_class::<PyVecEnv>()?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_config, m)?)?;
    m.add_function(wrap_pyfunction!(config_json, m)?)?;
    m.add_function(wrap_pyfunction!(interval, m)?)?;
    m.add_function(wrap_pyfunction!(rust_loop_steps_per_s, m)?)?;
    Ok(())
}
