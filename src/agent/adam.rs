//! Adam with its state in plain tensors. tch's `nn::Optimizer` keeps Adam's moments inside
//! libtorch where they cannot be saved, and a checkpoint that loses them does not resume
//! to the same result; this one can be saved and loaded with the weights.

use std::collections::BTreeMap;

use tch::{nn, Tensor};

/// Adam (Kingma and Ba), as torch.optim.Adam with default betas and no weight decay.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i64,
    /// (parameter, first moment, second moment), by variable name.
    params: BTreeMap<String, (Tensor, Tensor, Tensor)>,
}

impl Adam {
    pub fn new(vs: &nn::VarStore, lr: f64) -> Adam {
        let params = vs
            .variables()
            .into_iter()
            .map(|(name, p)| {
                let m = p.zeros_like();
                let v = p.zeros_like();
                (name, (p, m, v))
            })
            .collect();
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0, params }
    }

    pub fn zero_grad(&mut self) {
        for (p, _, _) in self.params.values_mut() {
            p.zero_grad();
        }
    }

    /// Scales gradients so that their global norm is at most `max`.
    pub fn clip_grad_norm(&mut self, max: f64) {
        tch::no_grad(|| {
            let grads: Vec<Tensor> =
                self.params.values().map(|(p, _, _)| p.grad()).filter(|g| g.defined()).collect();
            if grads.is_empty() {
                return;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().unsqueeze(0)).collect();
            let total = Tensor::cat(&norms, 0).norm().double_value(&[]);
            if total > max {
                let scale = max / (total + 1e-6);
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        });
    }

    /// One Adam step on the current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let t = self.step as f64;
        let (b1, b2) = (self.beta1, self.beta2);
        let step_size = self.lr / (1.0 - b1.powf(t));
        let bias2 = (1.0 - b2.powf(t)).sqrt();
        tch::no_grad(|| {
            for (p, m, v) in self.params.values_mut() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let denom = v.sqrt() / bias2 + self.eps;
                let _ = p.g_sub_(&(m.as_ref() / denom * step_size));
            }
        });
    }

    /// The moments as named tensors, and the step count, for a checkpoint.
    pub fn state(&self) -> (Vec<(String, Tensor)>, i64) {
        let mut out = Vec::new();
        for (name, (_, m, v)) in &self.params {
            out.push((format!("adam_m.{name}"), m.shallow_clone()));
            out.push((format!("adam_v.{name}"), v.shallow_clone()));
        }
        (out, self.step)
    }

    /// Restores the moments and step count saved by [`Adam::state`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: i64) -> Result<(), String> {
        for (name, (_, m, v)) in self.params.iter_mut() {
            for (prefix, dst) in [("adam_m", m), ("adam_v", v)] {
                let key = format!("{prefix}.{name}");
                let src = tensors.get(&key).ok_or_else(|| format!("checkpoint lacks {key}"))?;
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Ok(())
    }
}
