//! The deep Q-network agent (SPEC sections 6 and 7): embeddings for the categorical state,
//! an MLP over [numerical ‖ embeddings] with one Q-value per candidate slot, uniform
//! experience replay, epsilon-greedy exploration on a configurable schedule, Adam, MSE or
//! Huber loss, and the target network the prototype promised and never had.

use std::sync::Mutex;

use rand::Rng;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use crate::config::{Checked, DecayUnit, DeviceKind, DqnConfig, LossKind, PolicyKind};
use crate::env::{cat, Observation, State};
use crate::rng::{stream, SimRng, Stream};
use crate::{Error, Result};

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
}

/// The Q-network: embeddings, hidden ReLU layers, one output per slot.
#[derive(Debug)]
struct QNet {
    gender: nn::Embedding,
    region: nn::Embedding,
    interest: nn::Embedding,
    last_category: nn::Embedding,
    last_action: nn::Embedding,
    candidate_category: Option<nn::Embedding>,
    mlp: nn::Sequential,
}

impl QNet {
    fn new(p: &nn::Path, cfg: &DqnConfig, v: Vocab) -> QNet {
        let e = &cfg.embeddings;
        let emb = |name: &str, n: i64, d: usize| {
            nn::embedding(p / name, n, d as i64, Default::default())
        };
        let candidate_category = (e.candidate_category > 0)
            .then(|| emb("candidate_category", v.categories + 1, e.candidate_category));
        let input = State::n_numeric(v.slots as usize)
            + e.gender
            + e.region
            + 2 * e.interest
            + e.last_category
            + e.last_action
            + v.slots as usize * e.candidate_category;
        let mut mlp = nn::seq();
        let mut width = input as i64;
        for (k, &h) in cfg.hidden.iter().enumerate() {
            mlp = mlp
                .add(nn::linear(p / format!("hidden{k}"), width, h as i64, Default::default()))
                .add_fn(|x| x.relu());
            width = h as i64;
        }
        mlp = mlp.add(nn::linear(p / "q", width, v.slots, Default::default()));
        QNet {
            gender: emb("gender", v.genders, e.gender),
            region: emb("region", v.regions, e.region),
            interest: emb("interest", v.categories, e.interest),
            last_category: emb("last_category", v.categories + 1, e.last_category),
            last_action: emb("last_action", 4, e.last_action),
            candidate_category,
            mlp,
        }
    }

    /// Q-values [batch, slots] from numeric [batch, n_num] and categorical [batch, n_cat].
    fn forward(&self, numeric: &Tensor, categorical: &Tensor) -> Tensor {
        let col = |k: usize| categorical.select(1, k as i64);
        let mut parts = vec![
            numeric.shallow_clone(),
            self.gender.forward(&col(cat::GENDER)),
            self.region.forward(&col(cat::REGION)),
            self.interest.forward(&col(cat::INTEREST_1)),
            self.interest.forward(&col(cat::INTEREST_2)),
            self.last_category.forward(&col(cat::LAST_CATEGORY)),
            self.last_action.forward(&col(cat::LAST_ACTION)),
        ];
        if let Some(cc) = &self.candidate_category {
            let slots = categorical.size()[1] - cat::CANDIDATES as i64;
            let ids = categorical.narrow(1, cat::CANDIDATES as i64, slots);
            parts.push(cc.forward(&ids).flatten(1, 2));
        }
        self.mlp.forward(&Tensor::cat(&parts, 1))
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
                Err(Error::Device(
                    "`dqn.device` is \"cuda\" but libtorch finds no CUDA device; use \"cpu\" or \"auto\""
                        .into(),
                ))
            }
        }
    }
}

/// The learning agent.
pub struct DqnAgent {
    cfg: DqnConfig,
    device: Device,
    online_vs: nn::VarStore,
    online: QNet,
    target_vs: nn::VarStore,
    target: QNet,
    optimizer: nn::Optimizer,
    replay: ReplayBuffer,
    replay_rng: SimRng,
    epsilon: Epsilon,
    slots: usize,
    steps: u64,
    updates: u64,
}

impl DqnAgent {
    pub fn new(config: &Checked) -> Result<DqnAgent> {
        let cfg = config.dqn.clone();
        let device = resolve_device(cfg.device)?;
        tch::set_num_threads(cfg.threads as i32);
        let vocab = Vocab {
            genders: config.world.genders.len() as i64,
            regions: config.world.regions.len() as i64,
            categories: config.world.categories.len() as i64,
            slots: config.candidates.count as i64,
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
        let optimizer = nn::Adam::default().build(&online_vs, cfg.lr)?;
        Ok(DqnAgent {
            replay: ReplayBuffer::new(cfg.replay_capacity, config.candidates.count),
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
        })
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Q-values of one state, for inspection and acting.
    pub fn q_values(&self, state: &State) -> Vec<f32> {
        tch::no_grad(|| {
            let n = Tensor::from_slice(&state.numeric).view([1, -1]).to_device(self.device);
            let c = Tensor::from_slice(&state.categorical).view([1, -1]).to_device(self.device);
            let q = self.online.forward(&n, &c).to_device(Device::Cpu).view([-1]);
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
        let d = self.device;
        let bs = b.size as i64;
        let numeric = Tensor::from_slice(&b.numeric).view([bs, -1]).to_device(d);
        let categorical = Tensor::from_slice(&b.categorical).view([bs, -1]).to_device(d);
        let actions = Tensor::from_slice(&b.actions).view([bs, 1]).to_device(d);
        let rewards = Tensor::from_slice(&b.rewards).to_device(d);
        let next_numeric = Tensor::from_slice(&b.next_numeric).view([bs, -1]).to_device(d);
        let next_categorical = Tensor::from_slice(&b.next_categorical).view([bs, -1]).to_device(d);
        let next_valid = Tensor::from_slice(&b.next_valid).view([bs, -1]).to_device(d);
        let terminal = Tensor::from_slice(&b.terminal).to_device(d);

        // TD target: r + gamma * (1 - terminal) * max over the next state's real slots.
        let target = tch::no_grad(|| {
            let next_q = self.target.forward(&next_numeric, &next_categorical);
            let masked = next_q + (next_valid - 1.0) * 1e9;
            let (best, _) = masked.max_dim(1, false);
            rewards + (1.0 - terminal) * self.cfg.gamma * best
        });

        // Q of the actions taken, and the loss.
        let q = self.online.forward(&numeric, &categorical).gather(1, &actions, false).squeeze_dim(1);
        let loss = match self.cfg.loss {
            LossKind::Mse => q.mse_loss(&target, Reduction::Mean),
            LossKind::Huber => q.huber_loss(&target, Reduction::Mean, 1.0),
        };

        // The step.
        self.optimizer.zero_grad();
        loss.backward();
        if self.cfg.grad_clip > 0.0 {
            self.optimizer.clip_grad_norm(self.cfg.grad_clip);
        }
        self.optimizer.step();

        // The target network follows every `target_update_every` updates.
        self.updates += 1;
        if self.updates % self.cfg.target_update_every as u64 == 0 {
            self.target_vs.copy(&self.online_vs).expect("the two networks have one shape");
        }
        self.epsilon.tick(DecayUnit::Update);
        loss.double_value(&[])
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
        let n = obs.candidates.len().min(self.slots);
        if explore && rng.random::<f64>() < self.epsilon.value() {
            return Ok(rng.random_range(0..n));
        }
        let q = self.q_values(&obs.state);
        let mut best = 0;
        for k in 1..n {
            if q[k] > q[best] {
                best = k;
            }
        }
        Ok(best)
    }

    fn observe(&mut self, transition: Transition, _rng: &mut SimRng) -> Result<Option<f64>> {
        self.replay.push(&transition);
        self.steps += 1;
        self.epsilon.tick(DecayUnit::Step);
        let c = &self.cfg;
        if self.steps < c.learning_starts as u64
            || self.steps % c.train_every as u64 != 0
            || self.replay.len() < c.batch_size
        {
            return Ok(None);
        }
        let batch = self.replay.sample(c.batch_size, &mut self.replay_rng);
        Ok(Some(self.update(&batch)))
    }

    fn end_episode(&mut self) {
        self.epsilon.tick(DecayUnit::Episode);
    }

    fn epsilon(&self) -> f64 {
        self.epsilon.value()
    }
}
