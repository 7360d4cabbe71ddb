//! `fypsim learn next-action`: from a run's step log, the response to each shown video
//! (watched, skipped, liked, left) predicted from the user's interactions before it.

use std::path::Path;

use polars::prelude::*;
use serde_json::json;

use super::metrics::{self, Estimate};
use super::seq::{self, Model, Sequence, Windows};
use super::{split_users, LearnConfig, LearnObserver, LearnOutcome, Mode, Task};
use crate::config::Checked;
use crate::model::user::UserModel;
use crate::world::Action;
use crate::{Error, Result};

/// The outcome classes, in the order of the model's outputs and steps.parquet's `p_*`.
pub const CLASSES: [&str; 4] = ["watched", "skipped", "liked", "left"];
const K: usize = 4;

/// The step log as `fypsim learn` reads it: one entry per step, in file order.
#[derive(Debug, Clone, Default)]
pub struct StepLog {
    pub user: Vec<u32>,
    pub episode: Vec<u32>,
    pub t: Vec<u32>,
    pub video: Vec<u32>,
    pub category: Vec<u16>,
    /// Index into [`CLASSES`].
    pub class: Vec<usize>,
    pub watch_s: Vec<f64>,
    pub time_s: Vec<f64>,
    /// The true outcome probabilities before the step's draws.
    pub bayes: Vec<[f64; 4]>,
}

/// Features of the shown video's record so far (see [`video_record`]).
pub const VIDEO_FEATURES: usize = 5;

/// What a platform knows of each shown video when it is shown: its record over every
/// earlier step of the log (any user's; steps in time order, episode then step): how
/// often it was shown, the share of showings watched, the share of views liked, the share
/// of views after which the viewer left, and the mean log watch time of its views. A
/// video's hidden quality shows in these, as it would in a real platform's counters.
pub fn video_record(log: &StepLog) -> Vec<[f32; VIDEO_FEATURES]> {
    #[derive(Default, Clone, Copy)]
    struct Counts {
        shows: f64,
        views: f64,
        likes: f64,
        left: f64,
        log_watch: f64,
    }
    let mut order: Vec<usize> = (0..log.user.len()).collect();
    order.sort_by_key(|&i| (log.episode[i], log.t[i], log.user[i]));
    // Keyed by id, not indexed: a damaged log's id far out of range costs nothing (a
    // vector up to the largest id once asked for 160 GB).
    let mut counts: std::collections::HashMap<u32, Counts> = std::collections::HashMap::new();
    let mut out = vec![[0f32; VIDEO_FEATURES]; log.user.len()];
    for i in order {
        let c = counts.entry(log.video[i]).or_default();
        out[i] = [
            (c.shows.ln_1p() / 5.0) as f32,
            ((c.views + 1.0) / (c.shows + 2.0)) as f32,
            ((c.likes + 0.2) / (c.views + 1.0)) as f32,
            ((c.left + 0.1) / (c.views + 1.0)) as f32,
            ((c.log_watch + 2.0) / (c.views + 1.0) / 5.0) as f32,
        ];
        c.shows += 1.0;
        if log.watch_s[i] > 0.0 || matches!(log.class[i], 0 | 2) {
            c.views += 1.0;
            c.likes += f64::from(log.class[i] == 2);
            c.left += f64::from(log.class[i] == 3);
            c.log_watch += log.watch_s[i].ln_1p();
        }
    }
    out
}

/// What the features need of a user: the profile a platform holds.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub region: u16,
    pub interests: [u16; 2],
}

/// The sizes the feature layout depends on.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub categories: usize,
    pub regions: usize,
    pub max_steps: usize,
}

impl Layout {
    /// Features per step: the shown category (one-hot) and whether it is one of the
    /// user's interests; the user's region (one-hot); the hour of day (sine, cosine);
    /// the time since the previous interaction of the session; the position in the
    /// session and whether it is the session's first step; the previous response
    /// (one-hot, or none) and the previous watch time; the shown video's record so far
    /// ([`video_record`]).
    pub fn features(&self) -> usize {
        self.categories + 1 + self.regions + 2 + 1 + 2 + K + 1 + 1 + VIDEO_FEATURES
    }
}

fn column<'a>(df: &'a DataFrame, name: &str, path: &Path) -> Result<&'a Column> {
    df.column(name).map_err(|_| {
        Error::Other(format!(
            "{} has no column `{name}`: `fypsim learn next-action` needs the step log's detail columns \
             (time_s, p_watched, p_skipped, p_liked, p_left), written by runs with a dynamic on or with \
             output.step_detail = true (e.g. fypsim run configs/default.toml --set output.step_detail=true)",
            path.display()
        ))
    })
}

/// Reads `steps.parquet` of a run; `categories` names the category column's values.
pub fn read_steps(path: &Path, categories: &[String]) -> Result<StepLog> {
    let df = crate::output::records::read_parquet(path)?;
    let e = crate::output::records::table_err("read", path);
    let u32s = |name: &str| -> Result<Vec<u32>> {
        Ok(column(&df, name, path)?
            .u32()
            .map_err(&e)
            .map(|ca| (0..ca.len()).map(move |i| ca.get(i)))?
            .map(|v| v.unwrap_or(0))
            .collect())
    };
    let f64s = |name: &str| -> Result<Vec<f64>> {
        let c = column(&df, name, path)?.f64().map_err(&e)?;
        (0..c.len())
            .map(|i| c.get(i))
            .enumerate()
            .map(|(i, v)| match v {
                Some(x) if x.is_finite() => Ok(x),
                _ => Err(Error::Other(format!("{}: row {i} has no finite `{name}`", path.display()))),
            })
            .collect()
    };
    let user = u32s("user")?;
    let episode = u32s("episode")?;
    let t = u32s("t")?;
    let video = u32s("video")?;
    let cats = column(&df, "category", path)?.str().map_err(&e)?;
    let mut category = Vec::with_capacity(df.height());
    for (i, c) in (0..cats.len()).map(|i| cats.get(i)).enumerate() {
        let c = c.unwrap_or("");
        let k = categories.iter().position(|x| x == c).ok_or_else(|| {
            Error::Other(format!("{}: row {i} has category `{c}`, not one of the run's categories", path.display()))
        })?;
        category.push(k as u16);
    }
    let left: Vec<bool> = column(&df, "left", path)?
        .bool()
        .map_err(&e)
        .map(|ca| (0..ca.len()).map(move |i| ca.get(i)))?
        .map(|v| v.unwrap_or(false))
        .collect();
    let responses = column(&df, "response", path)?.str().map_err(&e)?;
    let actions = [Action::Watched, Action::Skipped, Action::Liked, Action::SessionEnd];
    let mut class = Vec::with_capacity(df.height());
    for (i, r) in (0..responses.len()).map(|i| responses.get(i)).enumerate() {
        let r = r.unwrap_or("");
        let Some(&action) = actions.iter().find(|a| a.name() == r) else {
            return Err(Error::Other(format!("{}: row {i} has an unknown response `{r}`", path.display())));
        };
        class.push(UserModel::outcome_class(action, left[i]));
    }
    let watch_s = f64s("watch_s")?;
    let time_s = f64s("time_s")?;
    let p: Vec<Vec<f64>> = CLASSES.iter().map(|c| f64s(&format!("p_{c}"))).collect::<Result<_>>()?;
    let bayes: Vec<[f64; 4]> = (0..df.height()).map(|i| [p[0][i], p[1][i], p[2][i], p[3][i]]).collect();
    if bayes.iter().any(|b| (b.iter().sum::<f64>() - 1.0).abs() > 1e-6) {
        return Err(Error::Other(format!(
            "{}: the p_* columns do not sum to 1 on every row (a log written before they were recorded?)",
            path.display()
        )));
    }
    Ok(StepLog { user, episode, t, video, category, class, watch_s, time_s, bayes })
}

/// The users' steps in time order (episode, then step): per user, indices into the log.
pub fn by_user(log: &StepLog) -> Vec<(u32, Vec<usize>)> {
    super::by_user(log.user.len(), |i| log.user[i], |i| (log.episode[i], log.t[i]))
}

/// The feature rows of one user's steps `steps` (in time order).
pub fn features(
    log: &StepLog,
    record: &[[f32; VIDEO_FEATURES]],
    steps: &[usize],
    profile: Profile,
    layout: Layout,
) -> Vec<Vec<f32>> {
    let (c, r) = (layout.categories, layout.regions);
    let pos_scale = ((layout.max_steps.max(1) + 1) as f64).ln();
    let mut rows = Vec::with_capacity(steps.len());
    for (j, &i) in steps.iter().enumerate() {
        let mut f = vec![0f32; layout.features()];
        let cat = log.category[i] as usize;
        f[cat] = 1.0;
        f[c] = f32::from(profile.interests.contains(&log.category[i]));
        f[c + 1 + profile.region as usize % r.max(1)] = 1.0;
        let o = c + 1 + r;
        let hour = (log.time_s[i].rem_euclid(86_400.0)) / 3600.0;
        let angle = hour / 24.0 * std::f64::consts::TAU;
        f[o] = angle.sin() as f32;
        f[o + 1] = angle.cos() as f32;
        let prev = j.checked_sub(1).map(|p| steps[p]);
        let same_session = prev.is_some_and(|p| log.episode[p] == log.episode[i]);
        let gap = match prev {
            Some(p) if same_session => (log.time_s[i] - log.time_s[p]).max(0.0),
            _ => 0.0,
        };
        f[o + 2] = (gap.ln_1p() / 5.0) as f32;
        f[o + 3] = ((log.t[i] as f64).ln_1p() / pos_scale) as f32;
        f[o + 4] = f32::from(log.t[i] == 0);
        match prev {
            Some(p) => {
                f[o + 5 + log.class[p]] = 1.0;
                f[o + 5 + K + 1] = (log.watch_s[p].ln_1p() / 5.0) as f32;
            }
            None => f[o + 5 + K] = 1.0,
        }
        f[o + 5 + K + 2..].copy_from_slice(&record[i]);
        rows.push(f);
    }
    rows
}

/// The previous class of every step of a user (K for none), as the Markov chain sees it.
fn previous(log: &StepLog, steps: &[usize]) -> Vec<usize> {
    (0..steps.len()).map(|j| if j == 0 { K } else { log.class[steps[j - 1]] }).collect()
}

/// The sequences of one split. `scored(step)` says which steps are targets; `keep(step)`
/// which steps the sequence holds at all (a training user's future is not in it).
fn sequences(
    log: &StepLog,
    record: &[[f32; VIDEO_FEATURES]],
    users: &[(u32, Vec<usize>)],
    profiles: &dyn Fn(u32) -> Profile,
    layout: Layout,
    keep: &dyn Fn(usize) -> bool,
    scored: &dyn Fn(usize) -> bool,
) -> (Vec<Sequence>, Vec<(u32, Vec<usize>)>) {
    let mut seqs = Vec::new();
    let mut kept_users = Vec::new();
    for (u, steps) in users {
        let steps: Vec<usize> = steps.iter().copied().filter(|&i| keep(i)).collect();
        if steps.is_empty() {
            continue;
        }
        let features = features(log, record, &steps, profiles(*u), layout);
        let labels = steps.iter().map(|&i| log.class[i] as i64).collect();
        let scored = steps.iter().map(|&i| scored(i)).collect();
        seqs.push(Sequence { features, labels, scored });
        kept_users.push((*u, steps));
    }
    (seqs, kept_users)
}

/// The three splits of a log: (windows, the users' kept steps) each.
pub struct Splits {
    pub train: (Windows, Vec<(u32, Vec<usize>)>),
    pub valid: (Windows, Vec<(u32, Vec<usize>)>),
    pub test: (Windows, Vec<(u32, Vec<usize>)>),
    /// Training and validation targets are from episodes below this; test targets from
    /// this one on.
    pub cut_episode: u32,
    pub users: [usize; 3],
}

/// Splits by user (each user in one split) and by time (training and validation targets
/// before the cut, test targets after it; a test user's earlier steps are context only).
pub fn split(log: &StepLog, profiles: &dyn Fn(u32) -> Profile, layout: Layout, cfg: &LearnConfig) -> Result<Splits> {
    let users = by_user(log);
    let ids: Vec<u32> = users.iter().map(|u| u.0).collect();
    let (tr, va, te) = split_users(&ids, cfg);
    let max_ep = log.episode.iter().copied().max().unwrap_or(0);
    let cut = ((max_ep as f64 + 1.0) * cfg.time_split).round() as u32;
    let pick =
        |set: &[u32]| -> Vec<(u32, Vec<usize>)> { users.iter().filter(|(u, _)| set.binary_search(u).is_ok()).cloned().collect() };
    let before = |i: usize| log.episode[i] < cut;
    let after = |i: usize| log.episode[i] >= cut;
    let all = |_: usize| true;
    let (f, mode, w, s) = (layout.features(), cfg.mode, cfg.window, cfg.stride);
    let record = video_record(log);
    let build = |users: Vec<(u32, Vec<usize>)>, keep: &dyn Fn(usize) -> bool, scored: &dyn Fn(usize) -> bool| {
        let (seqs, kept) = sequences(log, &record, &users, profiles, layout, keep, scored);
        Ok::<_, Error>((Windows::try_build(&seqs, mode, w, s, f)?, kept))
    };
    Ok(Splits {
        train: build(pick(&tr), &before, &before)?,
        valid: build(pick(&va), &before, &before)?,
        test: build(pick(&te), &all, &after)?,
        cut_episode: cut,
        users: [tr.len(), va.len(), te.len()],
    })
}

/// The Markov chain over responses: P(class | previous class, or none), from the
/// training targets with add-one smoothing.
pub fn markov(log: &StepLog, w: &Windows, kept: &[(u32, Vec<usize>)]) -> [[f64; K]; K + 1] {
    let mut counts = [[1.0f64; K]; K + 1];
    for &(s, j) in &w.origin {
        let steps = &kept[s].1;
        let prev = if j == 0 { K } else { log.class[steps[j - 1]] };
        counts[prev][log.class[steps[j]]] += 1.0;
    }
    for row in &mut counts {
        let n: f64 = row.iter().sum();
        for v in row.iter_mut() {
            *v /= n;
        }
    }
    counts
}

/// Everything the test metrics need, target by target in the windows' order.
pub struct TestSet {
    pub y: Vec<usize>,
    pub model: Vec<Vec<f64>>,
    pub markov: Vec<Vec<f64>>,
    pub majority: Vec<Vec<f64>>,
    pub bayes: Vec<Vec<f64>>,
    /// Targets by test user.
    pub groups: Vec<Vec<usize>>,
    /// (user, log index) of each target.
    pub at: Vec<(u32, usize)>,
}

impl TestSet {
    pub fn new(
        log: &StepLog,
        w: &Windows,
        kept: &[(u32, Vec<usize>)],
        model: Vec<Vec<f64>>,
        chain: &[[f64; K]; K + 1],
        prior: &[f64; K],
    ) -> TestSet {
        let mut t = TestSet {
            y: Vec::new(),
            model,
            markov: Vec::new(),
            majority: Vec::new(),
            bayes: Vec::new(),
            groups: vec![Vec::new(); kept.len()],
            at: Vec::new(),
        };
        for (n, &(s, j)) in w.origin.iter().enumerate() {
            let steps = &kept[s].1;
            let i = steps[j];
            t.y.push(log.class[i]);
            t.markov.push(chain[previous(log, steps)[j]].to_vec());
            t.majority.push(prior.to_vec());
            t.bayes.push(log.bayes[i].to_vec());
            t.groups[s].push(n);
            t.at.push((kept[s].0, i));
        }
        t.groups.retain(|g| !g.is_empty());
        t
    }

    /// Log-loss, accuracy, macro-F1 and the confusion matrix of one predictor, with
    /// intervals.
    pub fn report(&self, probs: &[Vec<f64>], cfg: &LearnConfig) -> serde_json::Value {
        let all: Vec<usize> = (0..self.y.len()).collect();
        let est = metrics::bootstrap(&self.groups, cfg.bootstrap, cfg.seed, &|idx: &[usize]| {
            vec![metrics::log_loss(probs, &self.y, idx), metrics::accuracy(probs, &self.y, idx)]
        });
        let confusion = metrics::confusion(probs, &self.y, &all, K);
        json!({
            "log_loss": est[0],
            "accuracy": est[1],
            "macro_f1": metrics::macro_f1(&confusion),
            "confusion": confusion,
        })
    }

    /// The share of the Markov chain's log-loss above the Bayes-optimal one that the
    /// model removes, and the model's log-loss minus the Bayes-optimal one.
    pub fn gap(&self, cfg: &LearnConfig) -> (Estimate, Estimate) {
        let est = metrics::bootstrap(&self.groups, cfg.bootstrap, cfg.seed, &|idx: &[usize]| {
            let m = metrics::log_loss(&self.model, &self.y, idx);
            let k = metrics::log_loss(&self.markov, &self.y, idx);
            let b = metrics::log_loss(&self.bayes, &self.y, idx);
            vec![(k - m) / (k - b), m - b]
        });
        (est[0], est[1])
    }
}

/// Loads the run's config and generated world: the categories and the users' profiles.
pub fn run_world(run_dir: &Path) -> Result<(Checked, Vec<Profile>)> {
    super::require_run_dir(run_dir)?;
    let path = run_dir.join("config.toml");
    let config = crate::config::Config::load(&path, &[])?;
    let world = crate::world::World::generate(&config);
    let profiles = world.users.iter().map(|u| Profile { region: u.region, interests: u.interests }).collect();
    Ok((config, profiles))
}

fn layout_of(config: &Checked) -> Layout {
    Layout { categories: config.world.categories.len(), regions: config.world.regions.len(), max_steps: config.env.max_steps }
}

/// The saved model's files and the learn config they were trained with.
fn load_or_none(dir: &Path, cfg: &LearnConfig, inputs: usize) -> Option<Model> {
    let saved = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    if saved != cfg.to_toml() || !dir.join("metrics.json").exists() {
        return None;
    }
    let mut m = Model::new(cfg, false, inputs, K);
    m.vs.load(dir.join("model.ot")).ok()?;
    Some(m)
}

/// Trains and evaluates the configured model on the run in `run_dir`, writing
/// `run_dir/learn/next-action-<cell>-<mode>/`.
pub fn run(run_dir: &Path, cfg: &LearnConfig, observer: &mut dyn LearnObserver) -> Result<LearnOutcome> {
    let (config, profiles) = run_world(run_dir)?;
    let steps_path = run_dir.join("steps.parquet");
    if !steps_path.exists() {
        return Err(Error::Other(format!(
            "{} has no steps.parquet: the run was made with output.steps = false, or has not finished",
            run_dir.display()
        )));
    }
    observer.stage(&format!("reading {}", steps_path.display()));
    let log = read_steps(&steps_path, &config.world.categories)?;
    let layout = layout_of(&config);
    let n_users = profiles.len();
    if let Some(&u) = log.user.iter().find(|&&u| u as usize >= n_users) {
        return Err(Error::Other(format!("steps.parquet names user {u}, but the run's world has {n_users} users")));
    }
    let profile = |u: u32| profiles[u as usize];
    let out = super::out_dir(run_dir, Task::NextAction, cfg);
    learn(&log, &profile, layout, cfg, &out, observer)
}

/// Trains, evaluates and writes every output into `out` (the core of [`run`], on a log
/// in memory).
pub fn learn(
    log: &StepLog,
    profiles: &dyn Fn(u32) -> Profile,
    layout: Layout,
    cfg: &LearnConfig,
    out: &Path,
    observer: &mut dyn LearnObserver,
) -> Result<LearnOutcome> {
    Windows::fits_model(cfg, layout.features())?;
    let final_dir = out;
    let out = &super::begin(final_dir, cfg)?;
    let splits = split(log, profiles, layout, cfg)?;
    let (train_w, train_kept) = &splits.train;
    let (valid_w, _) = &splits.valid;
    let (test_w, test_kept) = &splits.test;
    if splits.users[2] == 0 {
        let n: usize = splits.users.iter().sum();
        return Err(Error::Other(format!(
            "no test users: test_users = {} of the log's {n} users is none (raise test_users; the split needs at least 3 users)",
            cfg.test_users
        )));
    }
    if test_w.targets() == 0 {
        return Err(Error::Other(format!(
            "no test targets: the {} test users have no steps from episode {} on (lower time_split, or raise test_users)",
            splits.users[2], splits.cut_episode
        )));
    }
    observer.stage(&format!(
        "{} {} {}: {} / {} / {} users, {} / {} / {} targets (train / valid / test; test from episode {})",
        Task::NextAction.name(),
        cfg.cell.name(),
        cfg.mode.name(),
        splits.users[0],
        splits.users[1],
        splits.users[2],
        train_w.targets(),
        valid_w.targets(),
        test_w.targets(),
        splits.cut_episode
    ));
    let mut model = Model::new(cfg, false, layout.features(), K);
    let valid_y: Vec<usize> = valid_w.target_labels().map(|y| y as usize).collect();
    let valid_idx: Vec<usize> = (0..valid_y.len()).collect();
    let metric = |p: &[Vec<f64>]| metrics::accuracy(p, &valid_y, &valid_idx);
    let trained = seq::train(&mut model, cfg.cell.name(), train_w, valid_w, cfg, K, &metric, observer)?;

    // Baselines from the training targets.
    let chain = markov(log, train_w, train_kept);
    let mut prior = [1.0f64; K];
    for &(s, j) in &train_w.origin {
        prior[log.class[train_kept[s].1[j]]] += 1.0;
    }
    let total: f64 = prior.iter().sum();
    let majority_class = (0..K).max_by(|&a, &b| prior[a].total_cmp(&prior[b]).then(b.cmp(&a))).unwrap_or(0);
    let prior = prior.map(|v| v / total);
    let probs = seq::predict(&model.net, test_w, K);
    let test = TestSet::new(log, test_w, test_kept, probs, &chain, &prior);
    observer.stage("evaluating on the test users (bootstrap intervals over users)");
    let (gap, excess) = test.gap(cfg);
    let below_bayes = excess.ci95[1] < 0.0;
    let metrics = json!({
        "task": Task::NextAction.name(),
        "cell": cfg.cell.name(),
        "mode": cfg.mode.name(),
        "classes": CLASSES,
        "users": { "train": splits.users[0], "valid": splits.users[1], "test": splits.users[2] },
        "targets": { "train": train_w.targets(), "valid": valid_w.targets(), "test": test_w.targets() },
        "test_from_episode": splits.cut_episode,
        "epochs_run": trained.rows.len(),
        "best_epoch": trained.best_epoch,
        "model": test.report(&test.model, cfg),
        "baselines": {
            "majority": { "class": CLASSES[majority_class], "metrics": test.report(&test.majority, cfg) },
            "markov": test.report(&test.markov, cfg),
        },
        "bayes": test.report(&test.bayes, cfg),
        "markov_to_bayes_gap_closed": gap,
        "model_minus_bayes_log_loss": excess,
        "below_bayes": below_bayes,
    });
    if below_bayes {
        observer.stage(
            "warning: the model's test log-loss is below the Bayes-optimal one by more than its interval: \
             only a leak of the outcome into the features can do that",
        );
    }
    let mut files = write_outputs(out, &trained, &test, log)?;
    files.push(super::save_model(&model, out, "model.ot")?);
    // Last: metrics.json marks the folder's model finished (`--user` loads it then).
    files.push(super::write_json(out, "metrics.json", &metrics)?);
    let files = super::finish(out, final_dir, files)?;
    Ok(LearnOutcome { dir: final_dir.to_path_buf(), metrics, train_s: trained.train_s, files })
}

fn write_outputs(out: &Path, trained: &seq::Trained, test: &TestSet, log: &StepLog) -> Result<Vec<std::path::PathBuf>> {
    let mut files = super::write_training(out, &trained.rows, "validation accuracy")?;
    files.push(super::write_json(out, "timing.json", &json!({ "train_s": trained.train_s, "epochs": trained.rows.len() }))?);
    let confusion = metrics::confusion(&test.model, &test.y, &(0..test.y.len()).collect::<Vec<_>>(), K);
    let path = out.join("confusion.png");
    super::plots::confusion_plot(&path, "next action: test confusion matrix", &CLASSES, &confusion)?;
    files.push(path);
    let path = out.join("predictions.parquet");
    let col = |k: usize, p: &[Vec<f64>]| p.iter().map(|v| v[k]).collect::<Vec<f64>>();
    let mut df = crate::output::records::frame(
        df!(
            "user" => test.at.iter().map(|a| a.0).collect::<Vec<_>>(),
            "episode" => test.at.iter().map(|a| log.episode[a.1]).collect::<Vec<_>>(),
            "t" => test.at.iter().map(|a| log.t[a.1]).collect::<Vec<_>>(),
            "actual" => test.y.iter().map(|&y| CLASSES[y]).collect::<Vec<_>>(),
            "p_watched" => col(0, &test.model),
            "p_skipped" => col(1, &test.model),
            "p_liked" => col(2, &test.model),
            "p_left" => col(3, &test.model),
            "bayes_watched" => col(0, &test.bayes),
            "bayes_skipped" => col(1, &test.bayes),
            "bayes_liked" => col(2, &test.bayes),
            "bayes_left" => col(3, &test.bayes),
        ),
        &path,
    )?;
    crate::output::records::write_parquet(&mut df, &path)?;
    files.push(path);
    Ok(files)
}

/// One predicted step of `fypsim learn next-action --user`.
#[derive(Debug, Clone)]
pub struct UserStep {
    pub episode: u32,
    pub t: u32,
    pub category: String,
    pub predicted: Vec<f64>,
    pub bayes: [f64; 4],
    pub actual: &'static str,
}

/// The user's last `n` logged steps, each predicted by the saved model (trained first
/// when `dir` holds none for `cfg`) from the `window` steps before it.
pub fn predict_user(
    run_dir: &Path,
    cfg: &LearnConfig,
    user: u32,
    n: usize,
    observer: &mut dyn LearnObserver,
) -> Result<(Vec<UserStep>, std::path::PathBuf)> {
    let (config, profiles) = run_world(run_dir)?;
    if user as usize >= profiles.len() {
        return Err(Error::UnknownUser { user: user as u64, n_users: profiles.len() });
    }
    let layout = layout_of(&config);
    let out = super::out_dir(run_dir, Task::NextAction, cfg);
    let model = match load_or_none(&out, cfg, layout.features()) {
        Some(m) => m,
        None => {
            observer.stage(&format!("no saved model for these settings in {}: training one", out.display()));
            run(run_dir, cfg, observer)?;
            load_or_none(&out, cfg, layout.features())
                .ok_or_else(|| Error::Other(format!("cannot load the model just saved in {}", out.display())))?
        }
    };
    let log = read_steps(&run_dir.join("steps.parquet"), &config.world.categories)?;
    let users = by_user(&log);
    let Some((_, steps)) = users.iter().find(|(u, _)| *u == user) else {
        return Err(Error::Other(format!("user {user} has no steps in {}", run_dir.join("steps.parquet").display())));
    };
    let from = steps.len().saturating_sub(n);
    let seqs = vec![Sequence {
        features: features(&log, &video_record(&log), steps, profiles[user as usize], layout),
        labels: steps.iter().map(|&i| log.class[i] as i64).collect(),
        scored: (0..steps.len()).map(|j| j >= from).collect(),
    }];
    let w = Windows::build(&seqs, Mode::ManyToOne, cfg.window, 1, layout.features());
    let probs = seq::predict(&model.net, &w, K);
    let rows = w
        .origin
        .iter()
        .zip(probs)
        .map(|(&(_, j), p)| {
            let i = steps[j];
            UserStep {
                episode: log.episode[i],
                t: log.t[i],
                category: config.world.categories[log.category[i] as usize].clone(),
                predicted: p,
                bayes: log.bayes[i],
                actual: CLASSES[log.class[i]],
            }
        })
        .collect();
    Ok((rows, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::Silent;

    const LAYOUT: Layout = Layout { categories: 4, regions: 2, max_steps: 20 };

    type Outcome<'a> = &'a dyn Fn(&[u16]) -> (usize, [f64; 4]);

    /// A log of `users` users with `episodes` sessions of `steps` steps each, the
    /// category of each step from `category`, the outcome and its true probabilities
    /// from `outcome`.
    fn log(users: u32, episodes: u32, steps: u32, category: &dyn Fn(u32, u32, u32) -> u16, outcome: Outcome) -> StepLog {
        let mut l = StepLog::default();
        for e in 0..episodes {
            let u = e % users;
            let mut shown = Vec::new();
            for t in 0..steps {
                let c = category(u, e, t);
                shown.push(c);
                let (class, p) = outcome(&shown);
                l.user.push(u);
                l.episode.push(e);
                l.t.push(t);
                l.video.push(c as u32);
                l.category.push(c);
                l.class.push(class);
                l.watch_s.push(if class == 0 { 6.0 } else { 0.0 });
                l.time_s.push(e as f64 * 3600.0 + t as f64 * 5.0);
                l.bayes.push(p);
            }
        }
        l
    }

    fn profile(_: u32) -> Profile {
        Profile { region: 0, interests: [0, 1] }
    }

    /// A network and batch too large for the machine are refused before anything is built
    /// (libtorch aborted on the allocation), naming the settings.
    #[test]
    fn settings_too_large_for_the_machine_are_refused_first() {
        use crate::learn::Silent;
        let l = log(4, 20, 4, &|u, e, t| ((u + e + t) % 4) as u16, &|_| (0, [0.7, 0.1, 0.1, 0.1]));
        let dir = tempfile::tempdir().unwrap();
        // Inside every allowed range (window x batch x hidden = 1.6e9 of 2e9), over 500 GiB.
        let cfg = LearnConfig { hidden: 4096, layers: 8, window: 1000, batch: 400, ..Default::default() };
        assert!(cfg.validate().is_ok());
        let e = learn(&l, &profile, LAYOUT, &cfg, &dir.path().join("out"), &mut Silent).unwrap_err().to_string();
        assert!(e.contains("hidden = 4096") && e.contains("GiB"), "{e}");
        assert!(!dir.path().join("out").exists() && std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
    }

    /// Too few users for a test split: the advice says to raise test_users (it said to
    /// lower it).
    #[test]
    fn no_test_users_advises_raising_test_users() {
        use crate::learn::Silent;
        let l = log(2, 20, 4, &|u, e, t| ((u + e + t) % 4) as u16, &|_| (0, [0.7, 0.1, 0.1, 0.1]));
        let dir = tempfile::tempdir().unwrap();
        let cfg = LearnConfig::default();
        let e = learn(&l, &profile, LAYOUT, &cfg, dir.path(), &mut Silent).unwrap_err().to_string();
        assert!(e.contains("no test users") && e.contains("raise test_users"), "{e}");
    }

    /// A damaged log whose video id is far out of range is read at the cost of its rows:
    /// the per-video records are keyed by id (indexed by it, this asked for 160 GB).
    #[test]
    fn a_video_id_far_out_of_range_costs_nothing() {
        let mut l = log(3, 4, 3, &|u, e, t| ((u + e + t) % 4) as u16, &|_| (0, [0.7, 0.1, 0.1, 0.1]));
        l.video[0] = u32::MAX - 1;
        let r = video_record(&l);
        assert_eq!(r.len(), l.video.len());
        assert!(r.iter().flatten().all(|v| v.is_finite()));
    }

    #[test]
    fn splits_keep_users_apart_and_the_future_out_of_training() {
        let l = log(20, 200, 5, &|u, e, t| ((u + e + t) % 4) as u16, &|_| (0, [0.7, 0.1, 0.1, 0.1]));
        let cfg = LearnConfig::default();
        let s = split(&l, &profile, LAYOUT, &cfg).unwrap();
        let users = |k: &[(u32, Vec<usize>)]| k.iter().map(|x| x.0).collect::<std::collections::BTreeSet<_>>();
        let (a, b, c) = (users(&s.train.1), users(&s.valid.1), users(&s.test.1));
        assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        assert_eq!(a.len() + b.len() + c.len(), 20);
        assert_eq!(s.cut_episode, 140);
        for (w, kept) in [(&s.train.0, &s.train.1), (&s.valid.0, &s.valid.1)] {
            // Not a single step after the cut, target or context.
            assert!(kept.iter().flat_map(|k| &k.1).all(|&i| l.episode[i] < 140));
            assert!(w.targets() > 0);
        }
        let (w, kept) = &s.test;
        assert!(w.origin.iter().all(|&(q, j)| l.episode[kept[q].1[j]] >= 140));
        assert!(kept.iter().flat_map(|k| &k.1).any(|&i| l.episode[i] < 140), "a test user's past is context");
    }

    #[test]
    fn the_bayes_figure_of_a_hand_made_log() {
        // Two outcomes alternate with known probabilities.
        let l = log(10, 100, 4, &|_, _, t| (t % 4) as u16, &|shown| {
            if shown.len() % 2 == 1 {
                (0, [0.8, 0.2, 0.0, 0.0])
            } else {
                (1, [0.4, 0.6, 0.0, 0.0])
            }
        });
        let cfg = LearnConfig { bootstrap: 50, ..Default::default() };
        let s = split(&l, &profile, LAYOUT, &cfg).unwrap();
        let (w, kept) = &s.test;
        let chain = markov(&l, &s.train.0, &s.train.1);
        let n = w.targets();
        let t = TestSet::new(&l, w, kept, vec![vec![0.25; 4]; n], &chain, &[0.25; 4]);
        let idx: Vec<usize> = (0..n).collect();
        // Half the targets are watched at 0.8, half skipped at 0.6.
        let want = -(0.8f64.ln() + 0.6f64.ln()) / 2.0;
        assert!((metrics::log_loss(&t.bayes, &t.y, &idx) - want).abs() < 1e-12);
        assert_eq!(metrics::accuracy(&t.bayes, &t.y, &idx), 1.0);
        // The chain learns the alternation exactly (up to smoothing).
        assert!(metrics::accuracy(&t.markov, &t.y, &idx) > 0.99);
    }

    #[test]
    fn a_model_learns_a_planted_pattern_the_baselines_cannot() {
        // Watched exactly when the category repeats the one shown the step before: a
        // pattern in what was shown, which no chain over responses can see.
        let mut rng = crate::rng::stream(5, crate::rng::Stream::World);
        let cats: Vec<u16> = (0..400 * 12).map(|_| rand::Rng::random_range(&mut rng, 0..4u16)).collect();
        let l = log(40, 400, 12, &|_, e, t| cats[(e * 12 + t) as usize], &|shown| {
            let n = shown.len();
            let hit = n >= 2 && shown[n - 1] == shown[n - 2];
            if hit {
                (0, [0.999, 0.001 / 3.0, 0.001 / 3.0, 0.001 / 3.0])
            } else {
                (1, [0.001 / 3.0, 0.999, 0.001 / 3.0, 0.001 / 3.0])
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let cfg = LearnConfig { epochs: 40, patience: 5, hidden: 32, bootstrap: 100, lr: 0.01, ..Default::default() };
        let o = learn(&l, &profile, LAYOUT, &cfg, dir.path(), &mut Silent).unwrap();
        let m = &o.metrics;
        let acc = |v: &serde_json::Value| v["accuracy"]["value"].as_f64().unwrap();
        assert!(acc(&m["model"]) > 0.95, "{m}");
        assert!(acc(&m["baselines"]["markov"]) < 0.85, "{m}");
        assert!(acc(&m["baselines"]["majority"]["metrics"]) < 0.85, "{m}");
        assert_eq!(m["below_bayes"], false);
        for f in
            ["config.toml", "metrics.json", "training.csv", "training.png", "confusion.png", "predictions.parquet", "model.ot"]
        {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }
}
