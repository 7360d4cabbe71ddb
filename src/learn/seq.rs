//! Sequences cut into windows, and the masked training loop shared by both tasks.

use std::time::Instant;

use rand::seq::SliceRandom;
use tch::{nn, Device, Kind, Tensor};

use super::net::SeqNet;
use super::{EpochRow, LearnConfig, LearnObserver, Mode};
use crate::agent::adam::Adam;
use crate::{Error, Result};

/// One user's sequence: a feature row and a label per step, and which steps are scored
/// targets (the rest are context only: earlier steps, or another split's).
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    pub features: Vec<Vec<f32>>,
    pub labels: Vec<i64>,
    pub scored: Vec<bool>,
}

/// Windows of sequences, padded to one length, ready for the network.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub n: usize,
    pub steps: usize,
    pub features: usize,
    /// [n, steps, features], row-major; padded steps are zero.
    pub x: Vec<f32>,
    /// [n, steps]; 0 at padded steps.
    pub y: Vec<i64>,
    /// [n, steps]: 1 at the targets the loss and the metrics count.
    pub mask: Vec<f32>,
    /// (sequence, step) of every target, in row-major order of `mask`.
    pub origin: Vec<(usize, usize)>,
}

impl Windows {
    /// Cuts `seqs` into windows of `window` steps. Many-to-many: consecutive windows, a
    /// target wherever a step is scored. Many-to-one: one window per `stride`-th scored
    /// step, ending at it (the steps before it as context), its one target the last step.
    /// Windows without a target are dropped.
    pub fn build(seqs: &[Sequence], mode: Mode, window: usize, stride: usize, features: usize) -> Windows {
        let mut w = Windows { steps: window, features, ..Default::default() };
        for (s, seq) in seqs.iter().enumerate() {
            let len = seq.labels.len();
            match mode {
                Mode::ManyToMany => {
                    let mut start = 0;
                    while start < len {
                        let end = (start + window).min(len);
                        if seq.scored[start..end].iter().any(|&b| b) {
                            let targets: Vec<bool> = seq.scored[start..end].to_vec();
                            w.push(seq, s, start, end, &targets);
                        }
                        start = end;
                    }
                }
                Mode::ManyToOne => {
                    let mut k = 0;
                    for i in 0..len {
                        if !seq.scored[i] {
                            continue;
                        }
                        if k % stride == 0 {
                            let start = (i + 1).saturating_sub(window);
                            let mut targets = vec![false; i + 1 - start];
                            *targets.last_mut().expect("a window holds its target") = true;
                            w.push(seq, s, start, i + 1, &targets);
                        }
                        k += 1;
                    }
                }
            }
        }
        w
    }

    /// Refuses settings whose network and training batch would not fit in half of this
    /// machine's memory (libtorch aborts, or tch panics, on an allocation it cannot
    /// make): the parameters with Adam's two moments and their gradient, and a batch's
    /// activations kept for backpropagation, about `gates + 2` numbers per step, layer and
    /// unit (the gates and the states).
    pub fn fits_model(cfg: &super::LearnConfig, features: usize) -> Result<()> {
        let gates = match cfg.cell {
            super::Cell::Rnn => 1.0,
            super::Cell::Gru => 3.0,
            super::Cell::Lstm => 4.0,
        };
        let (h, layers) = (cfg.hidden as f64, cfg.layers as f64);
        let params = gates * (h * (features as f64 + h) + 2.0 * h) + (layers - 1.0) * gates * (2.0 * h * h + 2.0 * h);
        let activations = cfg.batch as f64 * cfg.window as f64 * layers * h * (gates + 2.0) * 2.0;
        let bytes = 4.0 * (4.0 * params + activations);
        if let Some(physical) = crate::drive::preflight::physical_memory() {
            if bytes > physical / 2.0 {
                return Err(Error::Other(format!(
                    "hidden = {}, layers = {}, window = {}, batch = {} would need about {:.1} GiB for the network and a batch, \
                     more than half of this machine's {:.1} GiB: lower hidden, layers, window or batch",
                    cfg.hidden,
                    cfg.layers,
                    cfg.window,
                    cfg.batch,
                    bytes / f64::from(1u32 << 30),
                    physical / f64::from(1u32 << 30)
                )));
            }
        }
        Ok(())
    }

    /// [`Windows::build`], after checking that the windows fit in a quarter of this
    /// machine's memory (three splits are built, and batches copy from them): a log too
    /// large for the settings gets an error, not an abort.
    pub fn try_build(seqs: &[Sequence], mode: Mode, window: usize, stride: usize, features: usize) -> Result<Windows> {
        let windows: usize = seqs
            .iter()
            .map(|q| match mode {
                Mode::ManyToMany => q.labels.len().div_ceil(window),
                Mode::ManyToOne => q.scored.iter().filter(|&&b| b).count().div_ceil(stride),
            })
            .sum();
        let bytes = windows as f64 * window as f64 * (features as f64 * 4.0 + 12.0);
        if let Some(physical) = crate::drive::preflight::physical_memory() {
            if bytes > physical / 4.0 {
                return Err(Error::Other(format!(
                    "the {} windows of {window} steps would need about {:.1} GiB, more than a quarter of this machine's {:.1} GiB: \
                     lower window{}",
                    windows,
                    bytes / f64::from(1u32 << 30),
                    physical / f64::from(1u32 << 30),
                    if mode == Mode::ManyToOne { " or raise stride" } else { "" }
                )));
            }
        }
        Ok(Windows::build(seqs, mode, window, stride, features))
    }

    fn push(&mut self, seq: &Sequence, s: usize, start: usize, end: usize, targets: &[bool]) {
        let (t, f) = (self.steps, self.features);
        for (j, &m) in targets.iter().enumerate().chain((targets.len()..t).map(|j| (j, &false))) {
            let i = start + j;
            if i < end {
                debug_assert_eq!(seq.features[i].len(), f);
                self.x.extend_from_slice(&seq.features[i]);
                self.y.push(seq.labels[i]);
                self.mask.push(if m { 1.0 } else { 0.0 });
                if m {
                    self.origin.push((s, i));
                }
            } else {
                self.x.extend(std::iter::repeat_n(0.0, f));
                self.y.push(0);
                self.mask.push(0.0);
            }
        }
        self.n += 1;
    }

    pub fn targets(&self) -> usize {
        self.origin.len()
    }

    /// The label of every target, in the order of `origin`.
    pub fn target_labels(&self) -> impl Iterator<Item = i64> + '_ {
        self.mask.iter().zip(&self.y).filter(|(m, _)| **m > 0.0).map(|(_, y)| *y)
    }

    /// The tensors of windows `rows`: x [b, t, f], y [b, t], mask [b, t].
    pub fn batch(&self, rows: &[usize]) -> (Tensor, Tensor, Tensor) {
        let (t, f) = (self.steps, self.features);
        let mut x = Vec::with_capacity(rows.len() * t * f);
        let mut y = Vec::with_capacity(rows.len() * t);
        let mut m = Vec::with_capacity(rows.len() * t);
        for &r in rows {
            x.extend_from_slice(&self.x[r * t * f..(r + 1) * t * f]);
            y.extend_from_slice(&self.y[r * t..(r + 1) * t]);
            m.extend_from_slice(&self.mask[r * t..(r + 1) * t]);
        }
        let b = rows.len() as i64;
        (
            Tensor::from_slice(&x).view([b, t as i64, f as i64]),
            Tensor::from_slice(&y).view([b, t as i64]),
            Tensor::from_slice(&m).view([b, t as i64]),
        )
    }
}

/// The masked mean negative log-likelihood of `logits` [b, t, k] and the number of
/// targets.
pub fn masked_nll(logits: &Tensor, y: &Tensor, mask: &Tensor) -> (Tensor, f64) {
    let logp = logits.log_softmax(-1, Kind::Float);
    let picked = logp.gather(-1, &y.unsqueeze(-1), false).squeeze_dim(-1);
    let n = mask.sum(Kind::Float).double_value(&[]);
    ((-(picked * mask)).sum(Kind::Float) / n.max(1.0), n)
}

/// The class probabilities at every target of `w`, in the order of `w.origin`.
pub fn predict(net: &SeqNet, w: &Windows, classes: usize) -> Vec<Vec<f64>> {
    evaluate(net, w, classes).1
}

/// The mean negative log-likelihood over the targets of `w` and the class probabilities
/// at each (in the order of `w.origin`), from one forward pass.
pub fn evaluate(net: &SeqNet, w: &Windows, classes: usize) -> (f64, Vec<Vec<f64>>) {
    let mut out = Vec::with_capacity(w.targets());
    let (mut sum, mut count) = (0.0, 0.0);
    tch::no_grad(|| {
        let rows: Vec<usize> = (0..w.n).collect();
        for chunk in rows.chunks(512) {
            let (x, y, m) = w.batch(chunk);
            let logits = net.forward(&x);
            let (loss, n) = masked_nll(&logits, &y, &m);
            sum += loss.double_value(&[]) * n;
            count += n;
            let p = logits.softmax(-1, Kind::Float);
            let p: Vec<f32> = Vec::<f32>::try_from(p.reshape([-1])).expect("a float tensor");
            let m: Vec<f32> = Vec::<f32>::try_from(m.reshape([-1])).expect("a float tensor");
            for (j, &mj) in m.iter().enumerate() {
                if mj > 0.0 {
                    out.push(p[j * classes..(j + 1) * classes].iter().map(|&v| v as f64).collect());
                }
            }
        }
    });
    (sum / count.max(1.0), out)
}

/// What training produced.
#[derive(Debug, Clone)]
pub struct Trained {
    pub rows: Vec<EpochRow>,
    pub best_epoch: usize,
    pub train_s: f64,
}

/// A network and its variables, built from the seed.
pub struct Model {
    pub vs: nn::VarStore,
    pub net: SeqNet,
}

impl Model {
    pub fn new(cfg: &LearnConfig, linear: bool, inputs: usize, classes: usize) -> Model {
        tch::set_num_threads(cfg.threads as i32);
        tch::manual_seed(cfg.seed as i64 ^ 0x5eed);
        let vs = nn::VarStore::new(Device::Cpu);
        let cell = if linear { None } else { Some(cfg.cell) };
        let net = SeqNet::new(&vs.root(), cell, inputs, cfg.hidden, cfg.layers, classes);
        Model { vs, net }
    }
}

/// Trains `model` on `train` with Adam and early stopping on `valid`'s loss; the best
/// epoch's parameters are kept. `metric` scores the validation predictions (higher is
/// better) for training.csv.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Model,
    name: &str,
    train: &Windows,
    valid: &Windows,
    cfg: &LearnConfig,
    classes: usize,
    metric: &dyn Fn(&[Vec<f64>]) -> f64,
    observer: &mut dyn LearnObserver,
) -> Result<Trained> {
    if train.targets() == 0 || valid.targets() == 0 {
        return Err(Error::Other(format!(
            "{name}: no {} targets to learn from: the log is too short or has too few users for the split \
             (training targets {}, validation targets {})",
            if train.targets() == 0 { "training" } else { "validation" },
            train.targets(),
            valid.targets()
        )));
    }
    let start = Instant::now();
    let mut opt = Adam::new(&model.vs, cfg.lr);
    let mut rng = crate::rng::substream(cfg.seed, crate::rng::Stream::Learn, 1);
    let mut order: Vec<usize> = (0..train.n).collect();
    let mut best: Option<(f64, Vec<(String, Tensor)>)> = None;
    let mut rows = Vec::new();
    let mut best_epoch = 0;
    let mut since_best = 0;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let batches = order.len().div_ceil(cfg.batch);
        observer.epoch_started(epoch, cfg.epochs, batches);
        let (mut sum, mut count) = (0.0, 0.0);
        for chunk in order.chunks(cfg.batch) {
            // Ctrl-C or SIGTERM: stop here (the attempt's outputs are not put in place).
            if crate::stop::stop_requested() {
                return Err(Error::Interrupted);
            }
            let (x, y, m) = train.batch(chunk);
            let (loss, n) = masked_nll(&model.net.forward(&x), &y, &m);
            if n == 0.0 {
                continue;
            }
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(Error::Other(format!(
                    "{name}: training diverged: the loss became {l} in epoch {epoch}; a model whose loss is not \
                     finite has learnt nothing. Lower lr (now {}) or set grad_clip",
                    cfg.lr
                )));
            }
            let grads = opt.gradients(&loss);
            opt.step(&grads, cfg.grad_clip);
            sum += l * n;
            count += n;
            observer.batch(l);
        }
        let (valid_loss, probs) = evaluate(&model.net, valid, classes);
        if !valid_loss.is_finite() {
            return Err(Error::Other(format!("{name}: the validation loss became {valid_loss} in epoch {epoch}")));
        }
        let better = best.as_ref().is_none_or(|(b, _)| valid_loss < *b);
        if better {
            let snapshot = tch::no_grad(|| {
                let mut v: Vec<(String, Tensor)> =
                    model.vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            });
            best = Some((valid_loss, snapshot));
            best_epoch = epoch;
            since_best = 0;
        } else {
            since_best += 1;
        }
        let row = EpochRow {
            model: name.to_string(),
            epoch,
            train_loss: sum / count.max(1.0),
            valid_loss,
            valid_metric: metric(&probs),
            best: better,
        };
        observer.epoch_done(&row);
        rows.push(row);
        if since_best >= cfg.patience {
            break;
        }
    }
    if let Some((_, snapshot)) = best {
        tch::no_grad(|| {
            let vars = model.vs.variables();
            for (k, t) in snapshot {
                let mut v = vars[&k].shallow_clone();
                v.copy_(&t);
            }
        });
    }
    Ok(Trained { rows, best_epoch, train_s: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::{Cell, LearnConfig};

    fn sequence(len: usize, f: usize) -> Sequence {
        Sequence {
            features: (0..len).map(|i| (0..f).map(|j| ((i * 7 + j * 3) % 5) as f32 / 5.0).collect()).collect(),
            labels: (0..len).map(|i| (i % 3) as i64).collect(),
            scored: (0..len).map(|i| i != 1).collect(),
        }
    }

    #[test]
    fn padded_steps_change_neither_the_loss_nor_the_predictions() {
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            let cfg = LearnConfig { cell, hidden: 8, ..Default::default() };
            let model = Model::new(&cfg, false, 3, 4);
            let seqs = vec![sequence(5, 3), sequence(3, 3)];
            let tight = Windows::build(&seqs, Mode::ManyToMany, 5, 1, 3);
            let mut padded = Windows::build(&seqs, Mode::ManyToMany, 9, 1, 3);
            assert_eq!(padded.n, 2);
            // Garbage in every padded step: features, labels.
            for (r, seq) in seqs.iter().enumerate() {
                for j in 0..9 {
                    if padded.mask[r * 9 + j] == 0.0 && j >= seq.labels.len() {
                        padded.y[r * 9 + j] = 3;
                        for k in 0..3 {
                            padded.x[(r * 9 + j) * 3 + k] = 1e3 * (j + k) as f32;
                        }
                    }
                }
            }
            assert_eq!(tight.origin, padded.origin);
            let loss = |w: &Windows| {
                let rows: Vec<usize> = (0..w.n).collect();
                let (x, y, m) = w.batch(&rows);
                let (l, n) = masked_nll(&model.net.forward(&x), &y, &m);
                (l.double_value(&[]), n)
            };
            let (a, na) = loss(&tight);
            let (b, nb) = loss(&padded);
            assert_eq!(na, nb);
            assert!((a - b).abs() < 1e-6, "{cell:?}: {a} vs {b}");
            let (pa, pb) = (predict(&model.net, &tight, 4), predict(&model.net, &padded, 4));
            for (u, v) in pa.iter().zip(&pb) {
                for (x, y) in u.iter().zip(v) {
                    assert!((x - y).abs() < 1e-6, "{cell:?}");
                }
            }
        }
    }

    #[test]
    fn many_to_one_windows_end_at_their_one_target() {
        let seqs = vec![sequence(6, 2)];
        let w = Windows::build(&seqs, Mode::ManyToOne, 3, 2, 2);
        // Scored steps 0, 2, 3, 4, 5; every second of them: 0, 3, 5.
        assert_eq!(w.origin, vec![(0, 0), (0, 3), (0, 5)]);
        assert_eq!(w.mask, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        // The window of step 3 holds steps 1..=3.
        assert_eq!(&w.x[6..8], &seqs[0].features[1][..]);
    }
}
