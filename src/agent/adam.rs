//! Adam with its state in plain tensors, over one flat parameter buffer.
//!
//! Two reasons not to use tch's `nn::Optimizer`: libtorch keeps its Adam moments where they
//! cannot be saved (and a checkpoint that loses them does not resume to the same result),
//! and it updates parameter tensors one by one, a dozen small kernels each, which for a
//! network this small costs more than the forward and backward passes together. Here
//! every parameter of the store is re-pointed into one flat buffer, so a step is a handful
//! of operations on three flat tensors whatever the number of parameter tensors.

use std::collections::BTreeMap;

use tch::{nn, Kind, Tensor};

/// Adam (Kingma and Ba), as torch.optim.Adam with default betas and no weight decay, with
/// gradient-norm clipping folded into the step.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i64,
    /// The store's parameters, by name; each is a view into `flat`.
    params: Vec<(String, Tensor)>,
    flat: Tensor,
    m: Tensor,
    v: Tensor,
}

impl Adam {
    /// Takes over the parameters of `vs`: their data move into one flat buffer.
    pub fn new(vs: &nn::VarStore, lr: f64) -> Adam {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let flat = tch::no_grad(|| {
            let parts: Vec<Tensor> = params.iter().map(|(_, p)| p.detach().reshape([-1])).collect();
            Tensor::cat(&parts, 0)
        });
        let mut offset = 0;
        for (_, p) in params.iter_mut() {
            let n = p.numel() as i64;
            let view = flat.narrow(0, offset, n).view(p.size().as_slice());
            p.set_data(&view);
            offset += n;
        }
        let m = flat.zeros_like();
        let v = flat.zeros_like();
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0, params, flat, m, v }
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Changes the learning rate of the following steps (the moments are kept).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The gradients of `loss` with respect to every parameter, in the order of the flat
    /// buffer. Taken straight from the backward pass rather than accumulated into each
    /// parameter's `.grad`: the same values, without zeroing and reading a dozen `.grad`
    /// tensors around every step.
    pub fn gradients(&self, loss: &Tensor) -> Vec<Tensor> {
        let params: Vec<&Tensor> = self.params.iter().map(|(_, p)| p).collect();
        Tensor::run_backward(&[loss], &params, false, false)
    }

    /// One Adam step on `grads` (from [`Adam::gradients`]), their global norm first
    /// clipped to `clip` (no clipping when `clip` is 0).
    pub fn step(&mut self, grads: &[Tensor], clip: f64) {
        self.step += 1;
        let t = self.step as f64;
        let (b1, b2) = (self.beta1, self.beta2);
        let step_size = self.lr / (1.0 - b1.powf(t));
        let bias2 = (1.0 - b2.powf(t)).sqrt();
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .zip(grads)
                .map(
                    |((_, p), g)| {
                        if g.defined() {
                            g.reshape([-1])
                        } else {
                            Tensor::zeros([p.numel() as i64], (Kind::Float, p.device()))
                        }
                    },
                )
                .collect();
            let mut g = Tensor::cat(&grads, 0);
            if clip > 0.0 {
                let norm = g.norm().double_value(&[]);
                if norm > clip {
                    let _ = g.g_mul_scalar_(clip / (norm + 1e-6));
                }
            }
            let _ = self.m.lerp_(&g, 1.0 - b1);
            let _ = self.v.g_mul_scalar_(b2).addcmul_(&(&g * (1.0 - b2)), &g);
            let mut denom = self.v.sqrt();
            let _ = denom.g_div_scalar_(bias2).g_add_scalar_(self.eps);
            let _ = self.flat.addcdiv_(&(&self.m * -step_size), &denom);
        });
    }

    /// The moments and the step count, for a checkpoint.
    pub fn state(&self) -> (Vec<(String, Tensor)>, i64) {
        (vec![("adam.m".into(), self.m.shallow_clone()), ("adam.v".into(), self.v.shallow_clone())], self.step)
    }

    /// Restores the moments and step count saved by [`Adam::state`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: i64) -> Result<(), String> {
        for (key, dst) in [("adam.m", &mut self.m), ("adam.v", &mut self.v)] {
            let src = tensors.get(key).ok_or_else(|| format!("checkpoint lacks {key}"))?;
            if src.size() != dst.size() {
                return Err(format!("{key} has shape {:?}, the network needs {:?}", src.size(), dst.size()));
            }
            tch::no_grad(|| dst.copy_(src));
        }
        self.step = step;
        Ok(())
    }
}
