//! A uniform experience-replay ring buffer with flat storage, sampled into batches.

use rand::Rng;

use crate::rng::SimRng;

use super::Transition;

/// A sampled batch, as flat row-major arrays ready to become tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub numeric: Vec<f32>,
    pub categorical: Vec<i64>,
    pub actions: Vec<i64>,
    pub rewards: Vec<f32>,
    pub next_numeric: Vec<f32>,
    pub next_categorical: Vec<i64>,
    /// 1 for slots holding a candidate in the next state.
    pub next_valid: Vec<f32>,
    /// 1 where the session ended.
    pub terminal: Vec<f32>,
    /// The bootstrap discount: gamma^n for an n-step transition.
    pub discount: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    n_num: usize,
    n_cat: usize,
    slots: usize,
    len: usize,
    next: usize,
    numeric: Vec<f32>,
    categorical: Vec<i64>,
    actions: Vec<i64>,
    rewards: Vec<f32>,
    next_numeric: Vec<f32>,
    next_categorical: Vec<i64>,
    next_valid: Vec<f32>,
    terminal: Vec<f32>,
    discount: Vec<f32>,
}

impl ReplayBuffer {
    /// A buffer for states of the base layout with `slots` slots.
    pub fn new(capacity: usize, slots: usize) -> ReplayBuffer {
        ReplayBuffer::with_layout(capacity, &crate::env::Layout::base(slots))
    }

    /// A buffer for states of `layout`.
    pub fn with_layout(capacity: usize, layout: &crate::env::Layout) -> ReplayBuffer {
        let slots = layout.slots;
        let n_num = layout.n_numeric();
        let n_cat = layout.n_categorical();
        ReplayBuffer {
            capacity,
            n_num,
            n_cat,
            slots,
            len: 0,
            next: 0,
            numeric: vec![0.0; capacity * n_num],
            categorical: vec![0; capacity * n_cat],
            actions: vec![0; capacity],
            rewards: vec![0.0; capacity],
            next_numeric: vec![0.0; capacity * n_num],
            next_categorical: vec![0; capacity * n_cat],
            next_valid: vec![0.0; capacity * slots],
            terminal: vec![0.0; capacity],
            discount: vec![0.0; capacity],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores a transition whose bootstrap term is discounted by `discount`, overwriting
    /// the oldest when full.
    pub fn push(&mut self, t: &Transition, discount: f64) {
        let k = self.next;
        let (nn, nc, ns) = (self.n_num, self.n_cat, self.slots);
        self.numeric[k * nn..(k + 1) * nn].copy_from_slice(&t.state.numeric);
        self.categorical[k * nc..(k + 1) * nc].copy_from_slice(&t.state.categorical);
        self.actions[k] = t.action as i64;
        self.rewards[k] = t.reward as f32;
        self.next_numeric[k * nn..(k + 1) * nn].copy_from_slice(&t.next_state.numeric);
        self.next_categorical[k * nc..(k + 1) * nc].copy_from_slice(&t.next_state.categorical);
        for (d, &v) in self.next_valid[k * ns..(k + 1) * ns].iter_mut().zip(&t.next_state.valid) {
            *d = if v { 1.0 } else { 0.0 };
        }
        self.terminal[k] = if t.terminal { 1.0 } else { 0.0 };
        self.discount[k] = discount as f32;
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// Row `k` (in insertion order of the ring): action, reward, terminal, discount.
    pub fn row(&self, k: usize) -> (i64, f32, f32, f32) {
        (self.actions[k], self.rewards[k], self.terminal[k], self.discount[k])
    }

    /// The buffer's arrays as named tensors, with its length and write position.
    #[cfg(feature = "torch")]
    pub fn to_tensors(&self) -> (Vec<(String, tch::Tensor)>, usize, usize) {
        use tch::Tensor;
        // Only the rows written so far: a buffer fills from row 0, so a checkpoint taken
        // early in a run does not write the whole capacity.
        let n = self.len;
        let (nn, nc, ns) = (self.n_num, self.n_cat, self.slots);
        let t = vec![
            ("replay.numeric".to_string(), Tensor::from_slice(&self.numeric[..n * nn])),
            ("replay.categorical".to_string(), Tensor::from_slice(&self.categorical[..n * nc])),
            ("replay.actions".to_string(), Tensor::from_slice(&self.actions[..n])),
            ("replay.rewards".to_string(), Tensor::from_slice(&self.rewards[..n])),
            ("replay.next_numeric".to_string(), Tensor::from_slice(&self.next_numeric[..n * nn])),
            ("replay.next_categorical".to_string(), Tensor::from_slice(&self.next_categorical[..n * nc])),
            ("replay.next_valid".to_string(), Tensor::from_slice(&self.next_valid[..n * ns])),
            ("replay.terminal".to_string(), Tensor::from_slice(&self.terminal[..n])),
            ("replay.discount".to_string(), Tensor::from_slice(&self.discount[..n])),
        ];
        (t, self.len, self.next)
    }

    /// Restores arrays saved by [`ReplayBuffer::to_tensors`] into a buffer of the same
    /// shape: its first `len` rows (checkpoints of earlier versions saved the whole
    /// capacity, and load too).
    #[cfg(feature = "torch")]
    pub fn load_tensors(
        &mut self,
        tensors: &std::collections::BTreeMap<String, tch::Tensor>,
        len: usize,
        next: usize,
    ) -> Result<(), String> {
        fn fill<T: tch::kind::Element + Copy>(
            dst: &mut [T],
            rows: usize,
            width: usize,
            tensors: &std::collections::BTreeMap<String, tch::Tensor>,
            key: &str,
        ) -> Result<(), String> {
            let t = tensors.get(key).ok_or_else(|| format!("checkpoint lacks {key}"))?;
            let t = t.to_device(tch::Device::Cpu);
            let n = t.numel();
            if n != rows * width && n != dst.len() {
                return Err(format!("{key} has {n} values, the buffer {} of {} written", rows * width, dst.len()));
            }
            t.copy_data(&mut dst[..n], n);
            Ok(())
        }
        if len > self.capacity || next >= self.capacity.max(1) {
            return Err(format!("replay length {len} / position {next} exceed capacity {}", self.capacity));
        }
        let (nn, nc, ns) = (self.n_num, self.n_cat, self.slots);
        fill(&mut self.numeric, len, nn, tensors, "replay.numeric")?;
        fill(&mut self.categorical, len, nc, tensors, "replay.categorical")?;
        fill(&mut self.actions, len, 1, tensors, "replay.actions")?;
        fill(&mut self.rewards, len, 1, tensors, "replay.rewards")?;
        fill(&mut self.next_numeric, len, nn, tensors, "replay.next_numeric")?;
        fill(&mut self.next_categorical, len, nc, tensors, "replay.next_categorical")?;
        fill(&mut self.next_valid, len, ns, tensors, "replay.next_valid")?;
        fill(&mut self.terminal, len, 1, tensors, "replay.terminal")?;
        fill(&mut self.discount, len, 1, tensors, "replay.discount")?;
        self.len = len;
        self.next = next;
        Ok(())
    }

    /// `size` transitions drawn uniformly with replacement.
    pub fn sample(&self, size: usize, rng: &mut SimRng) -> Batch {
        assert!(self.len > 0, "sample from an empty replay buffer");
        let (nn, nc, ns) = (self.n_num, self.n_cat, self.slots);
        let mut b = Batch { size, ..Default::default() };
        for _ in 0..size {
            let k = rng.random_range(0..self.len);
            b.numeric.extend_from_slice(&self.numeric[k * nn..(k + 1) * nn]);
            b.categorical.extend_from_slice(&self.categorical[k * nc..(k + 1) * nc]);
            b.actions.push(self.actions[k]);
            b.rewards.push(self.rewards[k]);
            b.next_numeric.extend_from_slice(&self.next_numeric[k * nn..(k + 1) * nn]);
            b.next_categorical.extend_from_slice(&self.next_categorical[k * nc..(k + 1) * nc]);
            b.next_valid.extend_from_slice(&self.next_valid[k * ns..(k + 1) * ns]);
            b.terminal.push(self.terminal[k]);
            b.discount.push(self.discount[k]);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::State;
    use crate::rng::{stream, Stream};

    fn t(i: usize) -> Transition {
        let s = State {
            numeric: vec![i as f32; State::n_numeric(1)],
            categorical: vec![i as i64; State::n_categorical(1)],
            valid: vec![true],
        };
        Transition {
            state: s.clone(),
            action: 0,
            reward: i as f64,
            next_state: s,
            terminal: i.is_multiple_of(2),
            episode_end: i.is_multiple_of(2),
            discount: 1.0,
        }
    }

    #[test]
    fn ring_overwrites_oldest_and_samples_whole_rows() {
        let mut r = ReplayBuffer::new(3, 1);
        for i in 0..5 {
            r.push(&t(i), 0.9);
        }
        assert_eq!(r.len(), 3);
        let b = r.sample(200, &mut stream(1, Stream::Replay));
        for k in 0..b.size {
            let i = b.rewards[k];
            assert!((2.0..=4.0).contains(&i), "0 and 1 were overwritten");
            let n = State::n_numeric(1);
            assert!(b.numeric[k * n..(k + 1) * n].iter().all(|&x| x == i));
            assert_eq!(b.terminal[k], if (i as usize).is_multiple_of(2) { 1.0 } else { 0.0 });
        }
    }

    #[test]
    #[cfg(feature = "torch")]
    fn checkpoints_hold_the_rows_written_and_restore_them_exactly() {
        let mut r = ReplayBuffer::new(10, 1);
        for i in 0..4 {
            r.push(&t(i), 0.9);
        }
        let (tensors, len, next) = r.to_tensors();
        let map: std::collections::BTreeMap<String, tch::Tensor> = tensors.into_iter().collect();
        // Four rows saved, not the capacity of ten.
        assert_eq!(map["replay.rewards"].numel(), 4);
        let mut back = ReplayBuffer::new(10, 1);
        back.load_tensors(&map, len, next).unwrap();
        assert_eq!(
            (back.numeric.clone(), back.rewards.clone(), back.terminal.clone()),
            (r.numeric.clone(), r.rewards.clone(), r.terminal.clone())
        );
        assert_eq!((back.len, back.next), (4, 4));
        // Arrays of the whole capacity (checkpoints of earlier versions) load too.
        let full: std::collections::BTreeMap<String, tch::Tensor> = [
            ("replay.numeric", tch::Tensor::from_slice(&r.numeric)),
            ("replay.categorical", tch::Tensor::from_slice(&r.categorical)),
            ("replay.actions", tch::Tensor::from_slice(&r.actions)),
            ("replay.rewards", tch::Tensor::from_slice(&r.rewards)),
            ("replay.next_numeric", tch::Tensor::from_slice(&r.next_numeric)),
            ("replay.next_categorical", tch::Tensor::from_slice(&r.next_categorical)),
            ("replay.next_valid", tch::Tensor::from_slice(&r.next_valid)),
            ("replay.terminal", tch::Tensor::from_slice(&r.terminal)),
            ("replay.discount", tch::Tensor::from_slice(&r.discount)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut old = ReplayBuffer::new(10, 1);
        old.load_tensors(&full, len, next).unwrap();
        assert_eq!(old.rewards, r.rewards);
        // Anything else is refused with the sizes named.
        let mut short = map;
        short.insert("replay.rewards".into(), tch::Tensor::from_slice(&[1.0f32, 2.0]));
        let e = ReplayBuffer::new(10, 1).load_tensors(&short, len, next).unwrap_err();
        assert!(e.contains("replay.rewards has 2 values"), "{e}");
    }
}
