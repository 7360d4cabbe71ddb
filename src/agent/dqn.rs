//! The deep Q-network agent (docs/model.md: State, DQN): embeddings for the categorical state,
//! an MLP over [numerical ‖ embeddings] with one Q-value per candidate slot, uniform
//! experience replay, epsilon-greedy exploration on a configurable schedule, Adam, MSE or
//! Huber loss, and the target network the prototype promised and never had.

use std::sync::Mutex;

use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

use crate::config::{Checked, DecayUnit, DeviceKind, DqnConfig, LossKind, PolicyKind, QHead};
use crate::env::{cat, num, Observation, State};
use crate::rng::{stream, SimRng, Stream};
use crate::{Error, Result};

use super::adam::Adam;
use super::epsilon::Epsilon;
use super::replay::{Batch, ReplayBuffer};
use super::{Policy, Transition};

/// libtorch's weight initialisation draws from one global generator: building networks
/// under this lock, right after seeding it, keeps initial weights reproducible even when
/// several agents are built at once (parallel tests, sweeps).
static TORCH_INIT: Mutex<()> = Mutex::new(());

/// Sizes of the categorical vocabularies, from the world config.
#[derive(Debug, Clone, Copy)]
struct Vocab {
    genders: i64,
    regions: i64,
    categories: i64,
    slots: i64,
    /// Numbers per slot, from the observation layout.
    per_slot: i64,
    /// The session history's steps and numbers per step (0 without the GRU encoder).
    history_steps: i64,
    history_features: i64,
    /// Video ids in the state (`dqn.embeddings.video` > 0): the starting catalogue's
    /// videos and one id for every later upload; 0 without them.
    videos: i64,
}

/// The GRU session encoder (`dqn.session_encoder = "gru"`): reads the history block of
/// the numbers and gives its final state.
struct SessionGru {
    gru: nn::GRU,
    start: i64,
    steps: i64,
    features: i64,
}

impl std::fmt::Debug for SessionGru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionGru({} steps x {})", self.steps, self.features)
    }
}

impl SessionGru {
    /// The final state [batch, hidden] over the history in `numeric` [batch, n_num].
    fn encode(&self, numeric: &Tensor) -> Tensor {
        let batch = numeric.size()[0];
        let x = numeric.narrow(1, self.start, self.steps * self.features).view([batch, self.steps, self.features]);
        let (out, _) = nn::RNN::seq(&self.gru, &x);
        out.select(1, self.steps - 1)
    }
}

/// One categorical feature's slice of the flat embedding table.
#[derive(Debug, Clone, Copy)]
struct EmbField {
    /// Index into the state's categorical ids.
    column: usize,
    /// For a crossed feature: another column, and how many ids `column` has; the row is
    /// then `ids[cross.0] * cross.1 + ids[column]`.
    cross: Option<(usize, i64)>,
    /// First element of this feature's table in the flat table.
    base: i64,
    width: i64,
}

/// The Q-network: embeddings, then either one MLP over the whole state with one output
/// per slot (`slots`), or one MLP shared by all candidates over [user ‖ candidate] with one
/// output (`items`).
///
/// Every categorical feature has its own embedding table of its own width, but the tables
/// live in one flat parameter, read by a single `index_select` with indices computed on
/// the CPU side: one kernel instead of two per feature, forward and backward. (Interest 1
/// and 2 share one table.)
#[derive(Debug)]
struct QNet {
    head: QHead,
    table: Tensor,
    /// The user's features, in order, then one candidate-category field per slot.
    user_fields: Vec<EmbField>,
    slot_fields: Vec<EmbField>,
    user_emb: i64,
    slot_emb: i64,
    slots: i64,
    layers: Vec<nn::Linear>,
    value: Option<(nn::Linear, nn::Linear)>,
    session: Option<SessionGru>,
    /// Column indices into a row [numeric ‖ embeddings] that give the user's part
    /// [user numbers ‖ user embeddings], and every slot's part [slot numbers ‖ slot
    /// embeddings] one after another; with the `slots` head, `layout` is the two together,
    /// the MLP's whole input. One `index_select` then lays out the input, where narrowing,
    /// viewing and concatenating took a dozen libtorch calls per forward pass (the values,
    /// and so every result, are the same).
    user_cols: Tensor,
    slot_cols: Tensor,
    layout: Tensor,
}

fn linear(x: &Tensor, l: &nn::Linear) -> Tensor {
    // libtorch's `linear` is `addmm(bias, x, weight^T)` for 2-D input: one call instead of two.
    x.linear(&l.ws, l.bs.as_ref())
}

impl QNet {
    fn new(p: &nn::Path, cfg: &DqnConfig, v: Vocab) -> QNet {
        let e = &cfg.embeddings;
        // (vocabulary, width) of each table; interest 1 and 2 share table 2.
        let tables = [
            (v.genders, e.gender),
            (v.regions, e.region),
            (v.categories, e.interest),
            (v.categories + 1, e.last_category),
            (4, e.last_action),
            (v.categories + 1, e.candidate_category),
            (v.regions * (v.categories + 1), e.region_category),
            (v.videos, e.video),
        ];
        let mut bases = Vec::new();
        let mut total = 0i64;
        for &(n, w) in &tables {
            bases.push(total);
            total += n * w as i64;
        }
        let field = |column: usize, t: usize| EmbField { column, cross: None, base: bases[t], width: tables[t].1 as i64 };
        let user_fields = vec![
            field(cat::GENDER, 0),
            field(cat::REGION, 1),
            field(cat::INTEREST_1, 2),
            field(cat::INTEREST_2, 2),
            field(cat::LAST_CATEGORY, 3),
            field(cat::LAST_ACTION, 4),
        ];
        // Per slot: the candidate's category, then its (region, category) cross.
        let mut slot_fields: Vec<EmbField> = Vec::new();
        for k in 0..v.slots as usize {
            if e.candidate_category > 0 {
                slot_fields.push(field(cat::CANDIDATES + k, 5));
            }
            if e.region_category > 0 {
                slot_fields.push(EmbField { cross: Some((cat::REGION, v.categories + 1)), ..field(cat::CANDIDATES + k, 6) });
            }
            if e.video > 0 {
                slot_fields.push(field(cat::CANDIDATES + v.slots as usize + k, 7));
            }
        }
        let user_emb: i64 = user_fields.iter().map(|f| f.width).sum();
        let slot_emb = (e.candidate_category + e.region_category + e.video) as i64;
        // Like nn::Embedding: standard normal initial values.
        let table = p.var("embeddings", &[total.max(1)], nn::Init::Randn { mean: 0.0, stdev: 1.0 });

        let n_num_slots = num::SLOTS as i64 + v.per_slot * v.slots;
        let session = (v.history_steps > 0).then(|| SessionGru {
            gru: nn::gru(p / "session_gru", v.history_features, cfg.session_hidden as i64, Default::default()),
            start: n_num_slots,
            steps: v.history_steps,
            features: v.history_features,
        });
        let session_width = if session.is_some() { cfg.session_hidden as i64 } else { 0 };
        let user = num::SLOTS as i64 + user_emb + session_width;
        let item = v.per_slot + slot_emb;
        let (input, outputs) = match cfg.head {
            QHead::Slots => (user + v.slots * item, v.slots),
            QHead::Items => (user + item, 1),
        };
        let mut layers = Vec::new();
        let mut width = input;
        for (k, &h) in cfg.hidden.iter().enumerate() {
            layers.push(nn::linear(p / format!("hidden{k}"), width, h as i64, Default::default()));
            width = h as i64;
        }
        layers.push(nn::linear(p / "q", width, outputs, Default::default()));
        let value = cfg.dueling.then(|| {
            let h = cfg.hidden[0] as i64;
            (nn::linear(p / "value0", user, h, Default::default()), nn::linear(p / "value1", h, 1, Default::default()))
        });
        // Columns of [numeric ‖ embeddings]: the numbers first (the session history, when
        // the GRU reads it, last among them), then the table rows.
        let n_num = n_num_slots + v.history_steps * v.history_features;
        let user_cols: Vec<i64> = (0..num::SLOTS as i64).chain(n_num..n_num + user_emb).collect();
        let slot_cols: Vec<i64> = (0..v.slots)
            .flat_map(|k| {
                let nums = num::SLOTS as i64 + k * v.per_slot;
                let embs = n_num + user_emb + k * slot_emb;
                (nums..nums + v.per_slot).chain(embs..embs + slot_emb)
            })
            .collect();
        let layout: Vec<i64> = user_cols.iter().chain(&slot_cols).copied().collect();
        let on = |cols: &[i64]| Tensor::from_slice(cols).to_device(p.device());
        QNet {
            head: cfg.head,
            table,
            user_fields,
            slot_fields,
            user_emb,
            slot_emb,
            slots: v.slots,
            layers,
            value,
            session,
            user_cols: on(&user_cols),
            slot_cols: on(&slot_cols),
            layout: on(&layout),
        }
    }

    /// Flat-table indices of a batch of categorical states (row-major, `n_cat` ids each).
    fn indices(&self, categorical: &[i64], n_cat: usize) -> Vec<i64> {
        let per = (self.user_emb + self.slot_emb * self.slots) as usize;
        let mut out = Vec::with_capacity(categorical.len() / n_cat.max(1) * per);
        for row in categorical.chunks(n_cat) {
            for f in self.user_fields.iter().chain(&self.slot_fields) {
                let id = match f.cross {
                    Some((other, n)) => row[other] * n + row[f.column],
                    None => row[f.column],
                };
                let start = f.base + id * f.width;
                out.extend(start..start + f.width);
            }
        }
        out
    }

    fn mlp(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = x.shallow_clone();
        for (k, l) in self.layers.iter().enumerate() {
            h = linear(&h, l);
            if k < last {
                h = h.relu();
            }
        }
        h
    }

    /// Q-values [batch, slots] from numeric [batch, n_num] and flat-table indices
    /// [batch * n_idx] (from [`QNet::indices`], row after row).
    fn forward(&self, numeric: &Tensor, indices: &Tensor) -> Tensor {
        let batch = numeric.size()[0];
        let emb = self.table.index_select(0, indices).view([batch, -1]);
        let row = Tensor::cat(&[numeric, &emb], 1);
        let session = self.session.as_ref().map(|s| s.encode(numeric));
        let with_session = |x: Tensor| match &session {
            Some(h) => Tensor::cat(&[&x, h], 1),
            None => x,
        };
        // The user's part is needed by the items head and by the dueling value stream.
        let (q, user) = match self.head {
            QHead::Slots => (self.mlp(&with_session(row.index_select(1, &self.layout))), None),
            QHead::Items => {
                let user = with_session(row.index_select(1, &self.user_cols));
                let item = row.index_select(1, &self.slot_cols).view([batch, self.slots, -1]);
                let width = user.size()[1];
                let u = user.unsqueeze(1).expand([batch, self.slots, width], false);
                let x = Tensor::cat(&[u, item], 2).view([batch * self.slots, -1]);
                (self.mlp(&x).view([batch, self.slots]), Some(user))
            }
        };
        match &self.value {
            // Dueling: the network's output is the advantage.
            Some((v0, v1)) => {
                let user = user.unwrap_or_else(|| with_session(row.index_select(1, &self.user_cols)));
                linear(&linear(&user, v0).relu(), v1) + &q - q.mean_dim(1, true, Kind::Float)
            }
            None => q,
        }
    }
}

/// `t` on `device`; on the CPU without a call into libtorch (`to_device` to the same device
/// returns the tensor itself, but costs a call each time).
fn on_device(t: Tensor, device: Device) -> Tensor {
    if device == Device::Cpu && t.device() == Device::Cpu {
        t
    } else {
        t.to_device(device)
    }
}

/// Picks the libtorch device a config asks for.
pub fn resolve_device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Auto => Ok(Device::cuda_if_available()),
        DeviceKind::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(Error::Device("`dqn.device` is \"cuda\" but libtorch finds no CUDA device; use \"cpu\" or \"auto\"".into()))
            }
        }
    }
}

/// What one small libtorch operation costs on `device`, in microseconds: the median over
/// chunks of `ops` ReLUs of a [50, 64] tensor that needs gradients (so autograd records
/// each, as in an update). The network of this project is small enough that an update is
/// bounded by this fixed cost per operation rather than by arithmetic; the bench reports
/// the update as a multiple of it.
pub fn small_op_us(device: Device, ops: usize) -> f64 {
    let ops = ops.max(20);
    let x = Tensor::linspace(-1.0, 1.0, 50 * 64, (Kind::Float, device)).view([50, 64]).set_requires_grad(true);
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for _ in 0..ops / 10 {
        let _ = x.relu();
    }
    sync();
    let chunk = (ops / 20).max(1);
    let mut per_op: Vec<f64> = (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..chunk {
                let _ = x.relu();
            }
            sync();
            t.elapsed().as_secs_f64() * 1e6 / chunk as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op[per_op.len() / 2]
}

/// The learning agent.
pub struct DqnAgent {
    cfg: DqnConfig,
    device: Device,
    online_vs: nn::VarStore,
    online: QNet,
    target_vs: nn::VarStore,
    target: QNet,
    optimizer: Adam,
    replay: ReplayBuffer,
    /// 1 for numeric state columns the network sees, 0 for candidate features left out.
    /// None when the network sees every column (the default): no copy per state.
    feature_mask: Option<Vec<f32>>,
    /// The last up-to-n transitions of the running episode, for n-step returns.
    pending: VecDeque<Transition>,
    target_rule: TargetRule,
    replay_rng: SimRng,
    epsilon: Epsilon,
    slots: usize,
    steps: u64,
    updates: u64,
    /// Training episodes ended (for the learning-rate decay).
    episodes: u64,
    /// Score every observation, explored or not, so that the propensity of each choice
    /// is known (for steps.parquet with a dynamic on); it draws nothing.
    log_propensity: bool,
    /// The greedy slot of each observation of the last act call (when logged).
    last_greedy: Vec<Option<usize>>,
    /// The exploration rate of the last act call's choices (0 when not exploring).
    last_epsilon: f64,
}

impl DqnAgent {
    pub fn new(config: &Checked) -> Result<DqnAgent> {
        let cfg = config.dqn.clone();
        let device = resolve_device(cfg.device)?;
        tch::set_num_threads(cfg.threads as i32);
        let layout = crate::env::Layout::of(config);
        let vocab = Vocab {
            genders: config.world.genders.len() as i64,
            regions: config.world.regions.len() as i64,
            categories: config.world.categories.len() as i64,
            slots: config.candidates.count as i64,
            per_slot: layout.per_slot() as i64,
            history_steps: layout.history_steps as i64,
            history_features: layout.history_features as i64,
            videos: layout.video_ids.map_or(0, |n| n as i64 + 1),
        };
        let torch_seed = stream(config.seed, Stream::Torch).random::<u32>() as i64;
        let (online_vs, online, mut target_vs, target) = {
            let _guard = TORCH_INIT.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(torch_seed);
            let online_vs = nn::VarStore::new(device);
            let online = QNet::new(&online_vs.root(), &cfg, vocab);
            let target_vs = nn::VarStore::new(device);
            let target = QNet::new(&target_vs.root(), &cfg, vocab);
            (online_vs, online, target_vs, target)
        };
        target_vs.copy(&online_vs)?;
        target_vs.freeze();
        let optimizer = Adam::new(&online_vs, cfg.lr);
        let slots = config.candidates.count;
        let mut feature_mask = vec![1.0f32; layout.n_numeric()];
        for (j, name) in crate::config::features::BASE.iter().enumerate() {
            if !cfg.candidate_features.iter().any(|f| f == name) {
                for k in 0..slots {
                    feature_mask[layout.slot(k) + j] = 0.0;
                }
            }
        }
        Ok(DqnAgent {
            feature_mask: feature_mask.contains(&0.0).then_some(feature_mask),
            pending: VecDeque::new(),
            target_rule: TargetRule::Standard,
            replay: ReplayBuffer::with_layout(cfg.replay_capacity, &layout),
            replay_rng: stream(config.seed, Stream::Replay),
            epsilon: Epsilon::new(&cfg.epsilon),
            slots: config.candidates.count,
            cfg,
            device,
            online_vs,
            online,
            target_vs,
            target,
            optimizer,
            steps: 0,
            updates: 0,
            episodes: 0,
            log_propensity: config.output.steps && !config.dynamics.is_off(),
            last_greedy: Vec::new(),
            last_epsilon: 0.0,
        })
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The learning rate of the next update.
    pub fn lr(&self) -> f64 {
        self.optimizer.lr()
    }

    /// Sets the optimiser's rate from `dqn.lr_decay` for the episodes ended so far.
    fn apply_lr_decay(&mut self) {
        if let Some(decay) = &self.cfg.lr_decay {
            self.optimizer.set_lr(decay.lr_at(self.cfg.lr, self.episodes));
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Q-values of one state, for inspection and acting.
    pub fn q_values(&self, state: &State) -> Vec<f32> {
        self.state_q_values(&self.online, state)
    }

    fn state_q_values(&self, net: &QNet, state: &State) -> Vec<f32> {
        self.states_q_values(net, &[state])
    }

    /// Q-values of several states in one forward pass, row after row (`slots` each).
    fn states_q_values(&self, net: &QNet, states: &[&State]) -> Vec<f32> {
        let numeric: Vec<f32> = states.iter().flat_map(|s| self.masked(&s.numeric).into_owned()).collect();
        let categorical: Vec<i64> = states.iter().flat_map(|s| s.categorical.iter().copied()).collect();
        let n_cat = states.first().map_or(1, |s| s.categorical.len());
        tch::no_grad(|| {
            let b = states.len() as i64;
            let x = on_device(Tensor::from_slice(&numeric).view([b, -1]), self.device);
            let idx = on_device(Tensor::from_slice(&net.indices(&categorical, n_cat)), self.device);
            let q = on_device(net.forward(&x, &idx), Device::Cpu).view([-1]);
            Vec::<f32>::try_from(&q).expect("a float vector")
        })
    }

    /// A copy of every online weight, flattened (for tests of the target network).
    pub fn online_weights(&self) -> Vec<f32> {
        flat_weights(&self.online_vs)
    }

    pub fn target_weights(&self) -> Vec<f32> {
        flat_weights(&self.target_vs)
    }

    /// One gradient step on a batch; returns the loss. Reads top to bottom: the TD target
    /// from the target network, the loss, the step.
    pub fn update(&mut self, b: &Batch) -> f64 {
        let t = self.tensors(b);
        let target = self.td_target(&t);

        // Q of the actions taken, and the loss.
        let q = self.online.forward(&t.numeric, &t.indices).gather(1, &t.actions, false).squeeze_dim(1);
        let loss = match self.cfg.loss {
            LossKind::Mse => q.mse_loss(&target, Reduction::Mean),
            LossKind::Huber => q.huber_loss(&target, Reduction::Mean, 1.0),
        };

        // A loss that is not finite takes no step: the parameters stay the last good ones
        // (a training run then stops with an error; a learning served arm stops learning
        // and serves on).
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return value;
        }

        // The step.
        let grads = self.optimizer.gradients(&loss);
        self.optimizer.step(&grads, self.cfg.grad_clip);

        // The target network follows every `target_update_every` updates.
        self.updates += 1;
        if self.updates.is_multiple_of(self.cfg.target_update_every as u64) {
            self.update_target();
        }
        self.epsilon.tick(DecayUnit::Update);
        value
    }
}

/// How the TD target is formed. Only `Standard` is used by fypsim; the broken rules exist
/// so that tests can show that the learning tests catch a broken learner.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRule {
    Standard,
    /// The reward's sign flipped.
    WrongSign,
    /// No TD target at all: every Q-value is regressed to 0.
    NoTarget,
}

/// A batch on the device.
struct BatchTensors {
    numeric: Tensor,
    indices: Tensor,
    actions: Tensor,
    rewards: Tensor,
    next_numeric: Tensor,
    next_indices: Tensor,
    /// 0 for a real next slot, -1e9 for an empty one.
    next_mask: Tensor,
    /// (1 - terminal) * discount.
    bootstrap: Tensor,
}

/// The non-tensor part of a checkpoint of the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentState {
    epsilon: Epsilon,
    steps: u64,
    updates: u64,
    /// Absent from checkpoints written before the learning-rate decay (their runs had none).
    #[serde(default)]
    episodes: u64,
    adam_step: i64,
    replay_rng: SimRng,
    replay_len: usize,
    replay_next: usize,
    pending: Vec<(State, usize, f64, State, bool, bool)>,
}

impl DqnAgent {
    /// Numeric rows (one or many) with the left-out candidate features zeroed.
    fn masked<'a>(&self, numeric: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match &self.feature_mask {
            None => std::borrow::Cow::Borrowed(numeric),
            Some(mask) => {
                let n = mask.len();
                numeric.iter().enumerate().map(|(i, x)| x * mask[i % n]).collect()
            }
        }
    }

    /// A batch as tensors on the agent's device. The masks and bootstrap factors are
    /// formed here on the CPU side: fewer kernels per update.
    fn tensors(&self, b: &Batch) -> BatchTensors {
        let bs = b.size as i64;
        let n_cat = b.categorical.len() / b.size.max(1);
        // All the floats in one buffer and all the integers in another: two copies to the
        // device and a few views, where a tensor each took three calls.
        let numeric = self.masked(&b.numeric);
        let next_numeric = self.masked(&b.next_numeric);
        let mask = b.next_valid.iter().map(|&v| if v > 0.0 { 0.0 } else { -1e9 });
        let bootstrap = b.terminal.iter().zip(&b.discount).map(|(t, g)| (1.0 - t) * g);
        let floats: Vec<f32> = numeric
            .iter()
            .chain(next_numeric.iter())
            .copied()
            .chain(mask)
            .chain(b.rewards.iter().copied())
            .chain(bootstrap)
            .collect();
        let indices = self.online.indices(&b.categorical, n_cat);
        let next_indices = self.online.indices(&b.next_categorical, n_cat);
        let ints: Vec<i64> = indices.iter().chain(&next_indices).chain(&b.actions).copied().collect();
        let f = on_device(Tensor::from_slice(&floats), self.device);
        let i = on_device(Tensor::from_slice(&ints), self.device);
        let (n_num, n_next, n_idx) = (numeric.len() as i64, b.next_valid.len() as i64, indices.len() as i64);
        let [numeric, next_numeric, next_mask, rewards, bootstrap]: [Tensor; 5] =
            f.split_with_sizes([n_num, n_num, n_next, bs, bs], 0).try_into().expect("five parts");
        let [indices, next_indices, actions]: [Tensor; 3] =
            i.split_with_sizes([n_idx, n_idx, bs], 0).try_into().expect("three parts");
        BatchTensors {
            numeric: numeric.view([bs, -1]),
            indices,
            next_indices,
            actions: actions.view([bs, 1]),
            rewards,
            next_numeric: next_numeric.view([bs, -1]),
            next_mask: next_mask.view([bs, -1]),
            bootstrap,
        }
    }

    /// TD targets: r + gamma^n * (1 - terminal) * Q_target(s', a'), with a' the best real
    /// slot of s' by the target network, or by the online network with Double DQN. (For an
    /// n-step transition r already sums n discounted rewards and s' is n steps on.)
    fn td_target(&self, t: &BatchTensors) -> Tensor {
        tch::no_grad(|| {
            let next_q = self.target.forward(&t.next_numeric, &t.next_indices) + &t.next_mask;
            let best = if self.cfg.double {
                let next_online = self.online.forward(&t.next_numeric, &t.next_indices) + &t.next_mask;
                let a = next_online.argmax(1, true);
                next_q.gather(1, &a, false).squeeze_dim(1)
            } else {
                next_q.max_dim(1, false).0
            };
            let target: Tensor = &t.rewards + &t.bootstrap * best;
            match self.target_rule {
                TargetRule::Standard => target,
                TargetRule::WrongSign => target - &t.rewards * 2.0,
                TargetRule::NoTarget => target.zeros_like(),
            }
        })
    }

    /// The TD targets of a batch (for tests and inspection).
    pub fn td_targets(&self, b: &Batch) -> Vec<f32> {
        let t = self.td_target(&self.tensors(b));
        Vec::<f32>::try_from(&t.to_device(Device::Cpu)).expect("a float vector")
    }

    /// Q-values of the target network for one state.
    pub fn target_q_values(&self, state: &State) -> Vec<f32> {
        self.state_q_values(&self.target, state)
    }

    #[doc(hidden)]
    pub fn set_target_rule(&mut self, rule: TargetRule) {
        self.target_rule = rule;
    }

    /// The replay buffer (for tests and inspection).
    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// Stores the oldest pending transition as an n-step one: the discounted rewards of
    /// the pending transitions, bootstrapping from the last one's next state.
    fn store_front(&mut self) {
        let gamma = self.cfg.gamma;
        let mut reward = 0.0;
        let mut discount = 1.0;
        for t in &self.pending {
            reward += discount * t.reward;
            discount *= gamma * t.discount;
        }
        let last = self.pending.back().expect("called with pending transitions");
        let first = self.pending.front().expect("called with pending transitions");
        let stored = Transition {
            state: first.state.clone(),
            action: first.action,
            reward,
            next_state: last.next_state.clone(),
            terminal: last.terminal,
            episode_end: last.episode_end,
            discount: 1.0,
        };
        self.replay.push(&stored, discount);
        self.pending.pop_front();
    }

    /// Saves the whole agent (weights of both networks, Adam's moments, the replay buffer,
    /// epsilon, counters, the replay RNG and any pending n-step transitions) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in self.online_vs.variables() {
            tensors.push((format!("online.{name}"), t));
        }
        for (name, t) in self.target_vs.variables() {
            tensors.push((format!("target.{name}"), t));
        }
        let (adam, adam_step) = self.optimizer.state();
        tensors.extend(adam);
        let (replay_tensors, replay_len, replay_next) = self.replay.to_tensors();
        tensors.extend(replay_tensors);
        // In name order: the variable stores list theirs from a hash map, whose order
        // changes from process to process; sorted, the same state saves the same bytes.
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        // Serialised in memory and written by Rust, so that a failing write (a full disk)
        // is an error naming the file rather than an abort inside libtorch's writer.
        let buffer = SharedBuffer::default();
        Tensor::save_multi_to_stream(&tensors.iter().map(|(n, t)| (n.as_str(), t)).collect::<Vec<_>>(), buffer.clone())?;
        let bytes = buffer.take();
        crate::files::write_file(&dir.join("agent.ot"), &bytes)?;
        let state = AgentState {
            epsilon: self.epsilon.clone(),
            steps: self.steps,
            updates: self.updates,
            episodes: self.episodes,
            adam_step,
            replay_rng: self.replay_rng.clone(),
            replay_len,
            replay_next,
            pending: self
                .pending
                .iter()
                .map(|t| (t.state.clone(), t.action, t.reward, t.next_state.clone(), t.terminal, t.episode_end))
                .collect(),
        };
        let json = serde_json::to_string(&state).expect("agent state serialises");
        crate::files::write_file(&dir.join("agent.json"), json.as_bytes())
    }

    /// Restores an agent saved by [`DqnAgent::save`] (built from the same config).
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("agent.json");
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        let state: AgentState = serde_json::from_str(&text)
            .map_err(|e| Error::Other(format!("{} is not a fypsim agent state: {e}", path.display())))?;
        let path = dir.join("agent.ot");
        let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
        let bad = |e: String| Error::Checkpoint(format!("{} cannot be loaded: {e}", path.display()));
        // libtorch's own message is a page of C++ stack frames: keep its first line.
        let tensors: BTreeMap<String, Tensor> =
            Tensor::load_multi_from_stream_with_device(std::io::Cursor::new(bytes), self.device)
                .map_err(|e| bad(e.to_string().lines().next().unwrap_or("").to_string()))?
                .into_iter()
                .collect();
        for (prefix, vs) in [("online", &mut self.online_vs), ("target", &mut self.target_vs)] {
            for (name, mut t) in vs.variables() {
                let key = format!("{prefix}.{name}");
                let src = tensors.get(&key).ok_or_else(|| bad(format!("checkpoint lacks {key}")))?;
                tch::no_grad(|| t.copy_(src));
            }
        }
        self.optimizer.load_state(&tensors, state.adam_step).map_err(bad)?;
        self.replay.load_tensors(&tensors, state.replay_len, state.replay_next).map_err(bad)?;
        self.epsilon = state.epsilon;
        self.steps = state.steps;
        self.updates = state.updates;
        self.episodes = state.episodes;
        self.apply_lr_decay();
        self.replay_rng = state.replay_rng;
        self.pending = state
            .pending
            .into_iter()
            .map(|(state, action, reward, next_state, terminal, episode_end)| Transition {
                state,
                action,
                reward,
                next_state,
                terminal,
                episode_end,
                discount: 1.0,
            })
            .collect();
        Ok(())
    }

    /// target <- tau * online + (1 - tau) * target (a hard copy when tau = 1).
    fn update_target(&mut self) {
        if self.cfg.tau >= 1.0 {
            self.target_vs.copy(&self.online_vs).expect("the two networks have one shape");
            return;
        }
        let online = self.online_vs.variables();
        let tau = self.cfg.tau;
        tch::no_grad(|| {
            for (name, mut t) in self.target_vs.variables() {
                let o = &online[&name];
                let mixed = o * tau + &t * (1.0 - tau);
                t.copy_(&mixed);
            }
        });
    }
}

/// A `Write` whose bytes the caller keeps: libtorch's stream writer takes its writer by
/// value (and for `'static`).
#[derive(Clone, Default)]
struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn flat_weights(vs: &nn::VarStore) -> Vec<f32> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (_, t) in vars {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).view([-1]);
        out.extend(Vec::<f32>::try_from(&t).expect("a float vector"));
    }
    out
}

impl Policy for DqnAgent {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Dqn
    }

    fn act(&mut self, obs: &Observation, explore: bool, rng: &mut SimRng) -> Result<usize> {
        Ok(self.act_batch(&[obs], explore, rng)?[0])
    }

    fn act_batch(&mut self, obs: &[&Observation], explore: bool, rng: &mut SimRng) -> Result<Vec<usize>> {
        // The exploration draws first, in order, as one observation at a time would make
        // them; then one forward pass for every greedy choice (for every observation when
        // propensities are logged: the forward pass draws nothing).
        let mut out: Vec<Option<usize>> = Vec::with_capacity(obs.len());
        for o in obs {
            let n = o.candidates.len().min(self.slots);
            out.push((explore && rng.random::<f64>() < self.epsilon.value()).then(|| rng.random_range(0..n)));
        }
        let scored: Vec<usize> = (0..obs.len()).filter(|&i| self.log_propensity || out[i].is_none()).collect();
        self.last_greedy = vec![None; obs.len()];
        self.last_epsilon = if explore { self.epsilon.value() } else { 0.0 };
        if !scored.is_empty() {
            let states: Vec<&State> = scored.iter().map(|&i| &obs[i].state).collect();
            let q = self.states_q_values(&self.online, &states);
            for (row, &i) in scored.iter().enumerate() {
                let best = first_best(&q[row * self.slots..(row + 1) * self.slots], obs[i].candidates.len().min(self.slots));
                self.last_greedy[i] = Some(best);
                out[i].get_or_insert(best);
            }
        }
        Ok(out.into_iter().map(|x| x.expect("every observation has a slot")).collect())
    }

    /// Epsilon-greedy: epsilon (0 without exploring) spread over the candidates, the rest
    /// on the best Q-value among them (the first best, as `act` picks it).
    fn probabilities(&self, obs: &Observation, explore: bool) -> Option<Vec<f64>> {
        let n = obs.candidates.len().min(self.slots);
        let best = first_best(&self.q_values(&obs.state), n);
        let e = if explore { self.epsilon.value() } else { 0.0 };
        let mut p = super::uniform(obs, n);
        p.iter_mut().for_each(|x| *x *= e);
        p[best] += 1.0 - e;
        Some(p)
    }

    /// The Q-values of the candidates.
    fn scores(&self, obs: &Observation) -> Option<Vec<f64>> {
        let n = obs.candidates.len().min(self.slots);
        Some(self.q_values(&obs.state)[..n].iter().map(|&q| q as f64).collect())
    }

    fn propensity(&self, obs: &Observation, slot: usize, index: usize) -> f64 {
        let n = obs.candidates.len().min(self.slots).max(1) as f64;
        let greedy = self.last_greedy.get(index).copied().flatten();
        let e = self.last_epsilon;
        e / n + if greedy == Some(slot) { 1.0 - e } else { 0.0 }
    }

    fn observe(&mut self, transition: Transition, _rng: &mut SimRng) -> Result<Option<f64>> {
        // A reward that is not a number would poison every batch that samples it.
        if !transition.reward.is_finite() {
            return Err(Error::Other(format!("a step's reward is {}, not a finite number", transition.reward)));
        }
        let end = transition.episode_end;
        self.pending.push_back(transition);
        if self.pending.len() >= self.cfg.n_step {
            self.store_front();
        }
        if end {
            while !self.pending.is_empty() {
                self.store_front();
            }
        }
        self.steps += 1;
        self.epsilon.tick(DecayUnit::Step);
        let c = &self.cfg;
        if self.steps < c.learning_starts as u64
            || !self.steps.is_multiple_of(c.train_every as u64)
            || self.replay.len() < c.batch_size
        {
            return Ok(None);
        }
        let (batch_size, gradient_steps) = (c.batch_size, c.gradient_steps);
        let mut loss = 0.0;
        for _ in 0..gradient_steps {
            let batch = self.replay.sample(batch_size, &mut self.replay_rng);
            loss += self.update(&batch);
        }
        Ok(Some(loss / gradient_steps as f64))
    }

    fn end_episode(&mut self) {
        self.epsilon.tick(DecayUnit::Episode);
        self.episodes += 1;
        self.apply_lr_decay();
    }

    fn epsilon(&self) -> f64 {
        self.epsilon.value()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        DqnAgent::save(self, dir)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        DqnAgent::load(self, dir)
    }

    /// The online network's weights, in variable-name order: what it acts by.
    fn parameters(&self) -> Option<Vec<f32>> {
        Some(flat_weights(&self.online_vs))
    }

    fn set_parameters(&mut self, parameters: &[f32]) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = self.online_vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let total: usize = vars.iter().map(|(_, t)| t.numel()).sum();
        if total != parameters.len() {
            return Err(Error::Other(format!(
                "{} parameters given for a network of {total}: they are of another network",
                parameters.len()
            )));
        }
        let mut at = 0;
        for (_, mut t) in vars {
            let n = t.numel();
            let src =
                Tensor::from_slice(&parameters[at..at + n]).view(t.size().as_slice()).to_kind(t.kind()).to_device(self.device);
            tch::no_grad(|| t.copy_(&src));
            at += n;
        }
        Ok(())
    }
}

/// The greedy slot: the first best Q-value among the first `n` slots (the real candidates).
fn first_best(q: &[f32], n: usize) -> usize {
    let mut best = 0;
    for k in 1..n {
        if q[k] > q[best] {
            best = k;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::env::State;

    fn agent(extra: &[&str]) -> DqnAgent {
        let mut o: Vec<String> = vec!["world.n_videos=50".into(), "candidates.count=3".into()];
        o.extend(extra.iter().map(|s| s.to_string()));
        DqnAgent::new(&Config::from_toml_str("", &o).unwrap()).unwrap()
    }

    fn batch(n: usize) -> Batch {
        let s = State {
            numeric: vec![0.1; State::n_numeric(3)],
            categorical: vec![0; State::n_categorical(3)],
            valid: vec![true; 3],
        };
        let mut r = ReplayBuffer::new(n, 3);
        for k in 0..n {
            let t = Transition {
                state: s.clone(),
                action: k % 3,
                reward: 1.0,
                next_state: s.clone(),
                terminal: k % 2 == 0,
                episode_end: k % 2 == 0,
                discount: 1.0,
            };
            r.push(&t, 0.95);
        }
        r.sample(n, &mut stream(1, Stream::Replay))
    }

    #[test]
    fn small_op_cost_is_a_positive_time() {
        let us = small_op_us(Device::Cpu, 200);
        assert!(us.is_finite() && us > 0.0 && us < 1e5, "{us}");
    }

    #[test]
    fn target_network_changes_only_at_its_period() {
        for head in ["slots", "items"] {
            let mut a = agent(&["dqn.target_update_every=3", &format!("dqn.head={head}")]);
            let b = batch(8);
            let t0 = a.target_weights();
            assert_eq!(t0, a.online_weights(), "{head}: the target starts as a copy");
            a.update(&b);
            a.update(&b);
            assert_eq!(a.target_weights(), t0, "{head}: unchanged before the period");
            assert_ne!(a.online_weights(), t0, "{head}: the online network learns");
            a.update(&b);
            assert_eq!(a.target_weights(), a.online_weights(), "{head}: copied at the period");
        }
    }

    #[test]
    fn soft_updates_move_the_target_part_way() {
        let mut a = agent(&["dqn.target_update_every=1", "dqn.tau=0.25"]);
        let b = batch(8);
        let t0 = a.target_weights();
        a.update(&b);
        let (t1, o1) = (a.target_weights(), a.online_weights());
        for ((t0, t1), o1) in t0.iter().zip(&t1).zip(&o1) {
            assert!((t1 - (0.25 * o1 + 0.75 * t0)).abs() < 1e-5);
        }
    }

    #[test]
    fn items_head_scores_each_candidate_with_shared_weights() {
        let a = agent(&["dqn.head=items"]);
        let mut s = State {
            numeric: vec![0.0; State::n_numeric(3)],
            categorical: vec![0; State::n_categorical(3)],
            valid: vec![true; 3],
        };
        // Two slots with identical features get identical Q-values; permuting the slots
        // permutes the Q-values.
        for k in 0..3 {
            s.numeric[num::SLOTS + num::PER_SLOT * k + num::FINAL] = [0.5, 0.5, 2.0][k];
            s.categorical[cat::CANDIDATES + k] = [1, 1, 4][k];
        }
        let q = a.q_values(&s);
        assert!((q[0] - q[1]).abs() < 1e-6);
        assert!((q[0] - q[2]).abs() > 1e-6);
        s.numeric.swap(num::SLOTS + num::FINAL, num::SLOTS + 2 * num::PER_SLOT + num::FINAL);
        s.categorical.swap(cat::CANDIDATES, cat::CANDIDATES + 2);
        let p = a.q_values(&s);
        assert!((p[0] - q[2]).abs() < 1e-6 && (p[2] - q[0]).abs() < 1e-6);
    }

    #[test]
    fn region_category_cross_reads_one_row_per_pair() {
        // 3 regions, 8 categories: the cross table has 3 x 9 rows of width 2, after the
        // candidate-category table; each slot reads [category (4) | cross (2)].
        let a = agent(&["dqn.embeddings.region_category=2", "dqn.head=items"]);
        let mut row = vec![0i64; State::n_categorical(3)];
        row[cat::REGION] = 2;
        row[cat::CANDIDATES] = 5;
        row[cat::CANDIDATES + 1] = 0;
        let idx = a.online.indices(&row, row.len());
        let net = &a.online;
        assert_eq!(idx.len() as i64, net.user_emb + 3 * (4 + 2));
        let cross = net.slot_fields.iter().find(|f| f.cross.is_some()).unwrap();
        let slot0 = &idx[net.user_emb as usize..net.user_emb as usize + 6];
        let want = cross.base + (2 * 9 + 5) * 2;
        assert_eq!(&slot0[4..], &[want, want + 1], "slot 0: region 2, category id 5");
        let slot1 = &idx[net.user_emb as usize + 6..net.user_emb as usize + 12];
        assert_eq!(slot1[4], cross.base + (2 * 9) * 2, "slot 1: empty (id 0) in region 2");
        // Region 1 reads another row for the same candidate.
        row[cat::REGION] = 1;
        let other = a.online.indices(&row, row.len());
        assert_eq!(other[net.user_emb as usize + 4], cross.base + (9 + 5) * 2);
        // The Q-values stay permutation-equivariant over slots.
        let s = State {
            numeric: vec![0.3; State::n_numeric(3)],
            categorical: {
                let mut r = row.clone();
                r[cat::CANDIDATES + 1] = 3;
                r[cat::CANDIDATES + 2] = 5;
                r
            },
            valid: vec![true; 3],
        };
        let q = a.q_values(&s);
        assert!((q[0] - q[2]).abs() < 1e-6 && (q[0] - q[1]).abs() > 1e-7);
    }

    #[test]
    fn video_embeddings_read_one_row_per_video() {
        // 50 videos: the video table has 51 rows of width 3 (the last for uploads and
        // empty slots), after every other table; each slot reads [category (4) | video (3)].
        let a = agent(&["dqn.embeddings.video=3", "dqn.head=items"]);
        let mut row = vec![0i64; State::n_categorical(3) + 3];
        row[cat::CANDIDATES] = 2;
        row[cat::CANDIDATES + 3] = 7;
        row[cat::CANDIDATES + 4] = 50;
        row[cat::CANDIDATES + 5] = 7;
        let net = &a.online;
        let idx = net.indices(&row, row.len());
        assert_eq!(idx.len() as i64, net.user_emb + 3 * (4 + 3));
        let video = net.slot_fields[1];
        assert_eq!(net.table.size()[0], video.base + 51 * 3, "the video table is the last, 51 rows");
        let u = net.user_emb as usize;
        assert_eq!(&idx[u + 4..u + 7], &[video.base + 21, video.base + 22, video.base + 23], "slot 0: video 7");
        assert_eq!(idx[u + 7 + 4], video.base + 150, "slot 1: the shared row");
        // The same video in two slots with the same numbers gets the same Q-value; another
        // video, another value.
        let s = State { numeric: vec![0.3; State::n_numeric(3)], categorical: row.clone(), valid: vec![true; 3] };
        let mut same = s.clone();
        same.categorical[cat::CANDIDATES + 2] = 2;
        let q = a.q_values(&same);
        assert!((q[0] - q[2]).abs() < 1e-6, "{q:?}");
        let mut other = same.clone();
        other.categorical[cat::CANDIDATES + 5] = 8;
        let q2 = a.q_values(&other);
        assert!((q2[0] - q2[2]).abs() > 1e-7, "{q2:?}");
    }
    #[test]
    fn batched_acting_chooses_and_draws_like_one_at_a_time() {
        let o = ["world.n_videos=200", "world.n_users=30", "candidates.count=5", "dqn.head=items", "dqn.epsilon.start=0.5"];
        let config = Config::from_toml_str("", &o.map(String::from)).unwrap();
        let mut a = DqnAgent::new(&config).unwrap();
        let mut env = crate::env::Env::new(&config, crate::world::World::generate(&config));
        let obs: Vec<Observation> = (0..12).map(|u| env.reset(u).clone()).collect();
        let refs: Vec<&Observation> = obs.iter().collect();
        for explore in [true, false] {
            let (mut r1, mut r2) = (stream(3, Stream::Policy), stream(3, Stream::Policy));
            let one: Vec<usize> = obs.iter().map(|o| a.act(o, explore, &mut r1).unwrap()).collect();
            let batch = a.act_batch(&refs, explore, &mut r2).unwrap();
            assert_eq!(one, batch, "explore = {explore}");
            assert_eq!(r1.random::<u64>(), r2.random::<u64>(), "the same draws were made");
        }
    }

    #[test]
    fn a_few_updates_fit_a_constant_reward() {
        // Every transition pays 1 and ends: Q of every action should approach 1.
        let mut a = agent(&["dqn.lr=0.01", "dqn.head=items"]);
        let b = batch(32);
        let mut b = b;
        b.terminal.iter_mut().for_each(|t| *t = 1.0);
        let first = a.update(&b);
        let mut last = first;
        for _ in 0..300 {
            last = a.update(&b);
        }
        assert!(last < first * 0.05 && last < 1e-2, "loss {first} -> {last}");
    }

    #[test]
    fn the_learning_rate_decays_over_episodes_and_resumes_where_it_was() {
        use crate::agent::Policy;
        let o = ["dqn.lr=0.001", "dqn.lr_decay.end=0.0001", "dqn.lr_decay.from_episode=2", "dqn.lr_decay.episodes=4"];
        let mut a = agent(&o);
        let mut seen = vec![a.lr()];
        for _ in 0..7 {
            a.end_episode();
            seen.push(a.lr());
        }
        let want = [0.001, 0.001, 0.001, 0.000775, 0.00055, 0.000325, 0.0001, 0.0001];
        for (got, want) in seen.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{seen:?}");
        }
        // A checkpoint taken mid-decay resumes at the rate it had.
        let mut b = agent(&o);
        for _ in 0..3 {
            b.end_episode();
        }
        let dir = tempfile::tempdir().unwrap();
        b.save(dir.path()).unwrap();
        let mut c = agent(&o);
        c.load(dir.path()).unwrap();
        assert!((c.lr() - 0.000775).abs() < 1e-12, "{}", c.lr());
        c.end_episode();
        assert!((c.lr() - 0.00055).abs() < 1e-12);
        // Without a decay the rate never moves.
        let mut d = agent(&["dqn.lr=0.001"]);
        (0..10).for_each(|_| d.end_episode());
        assert_eq!(d.lr(), 0.001);
    }

    #[test]
    fn the_dqn_states_the_probabilities_it_acts_by_and_acts_with_them() {
        use crate::agent::tests::{check_policy, config, observations};
        let c = config();
        let obs = observations(&c);
        let mut half = c.inner().clone();
        half.dqn.epsilon.start = 0.5;
        let half = half.check().unwrap();
        let mut d = DqnAgent::new(&half).unwrap();
        for explore in [false, true] {
            check_policy(&mut d, &obs, explore);
        }
        // Exploring with epsilon 0.5: the greedy slot half the time plus its share of the
        // other half, every other candidate 0.5 / n, over many seeded draws.
        let o = &obs[0];
        let p = d.probabilities(o, true).unwrap();
        assert!(p.iter().filter(|&&x| x > 0.0).count() == o.candidates.len() && p.iter().any(|&x| x > 0.5));
        let mut rng = stream(11, Stream::Policy);
        let n = 20_000;
        let mut counts = vec![0usize; p.len()];
        for _ in 0..n {
            counts[d.act(o, true, &mut rng).unwrap()] += 1;
        }
        for (k, &pk) in p.iter().enumerate() {
            let f = counts[k] as f64 / n as f64;
            let sd = (pk * (1.0 - pk) / n as f64).sqrt();
            assert!((f - pk).abs() <= 5.0 * sd + 1e-12, "slot {k}: {f} against {pk}");
        }
        assert_eq!(d.scores(o).unwrap().len(), o.candidates.len());
    }
}
