//! The sequence network: a recurrent core (tch's LSTM and GRU, an Elman RNN on libtorch's
//! `rnn_tanh`) and a linear head giving class logits at every step. Without a core the
//! head alone is logistic regression on each step's features.

use tch::nn::{self, Module, RNN};
use tch::Tensor;

use super::Cell;

enum Core {
    /// The Elman RNN's weights in libtorch's order: per layer w_ih, w_hh, b_ih, b_hh.
    Rnn {
        weights: Vec<Tensor>,
        hidden: i64,
        layers: i64,
    },
    Lstm(nn::LSTM),
    Gru(nn::GRU),
    /// Logistic regression (softmax regression for more than two classes).
    Linear,
}

/// A sequence model: inputs [batch, steps, features] to logits [batch, steps, classes].
pub struct SeqNet {
    core: Core,
    head: nn::Linear,
}

impl std::fmt::Debug for SeqNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = match &self.core {
            Core::Rnn { .. } => "rnn",
            Core::Lstm(_) => "lstm",
            Core::Gru(_) => "gru",
            Core::Linear => "linear",
        };
        write!(f, "SeqNet({core})")
    }
}

impl SeqNet {
    /// `cell` None: logistic regression.
    pub fn new(path: &nn::Path, cell: Option<Cell>, inputs: usize, hidden: usize, layers: usize, classes: usize) -> SeqNet {
        let (i, h, l) = (inputs as i64, hidden as i64, layers as i64);
        let config = nn::RNNConfig { num_layers: l, ..Default::default() };
        let core = match cell {
            None => Core::Linear,
            Some(Cell::Lstm) => Core::Lstm(nn::lstm(path / "lstm", i, h, config)),
            Some(Cell::Gru) => Core::Gru(nn::gru(path / "gru", i, h, config)),
            Some(Cell::Rnn) => {
                // As torch.nn.RNN: every weight and bias uniform in ±1/sqrt(hidden).
                let bound = 1.0 / (h as f64).sqrt();
                let init = nn::Init::Uniform { lo: -bound, up: bound };
                let p = path / "rnn";
                let mut weights = Vec::new();
                for k in 0..l {
                    let input = if k == 0 { i } else { h };
                    weights.push(p.var(&format!("weight_ih_l{k}"), &[h, input], init));
                    weights.push(p.var(&format!("weight_hh_l{k}"), &[h, h], init));
                    weights.push(p.var(&format!("bias_ih_l{k}"), &[h], init));
                    weights.push(p.var(&format!("bias_hh_l{k}"), &[h], init));
                }
                Core::Rnn { weights, hidden: h, layers: l }
            }
        };
        let head_in = if cell.is_none() { i } else { h };
        let head = nn::linear(path / "head", head_in, classes as i64, Default::default());
        SeqNet { core, head }
    }

    /// Logits at every step. A step's output depends only on the steps up to it, so
    /// padding after a sequence's end changes nothing before it.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let states = match &self.core {
            Core::Linear => x.shallow_clone(),
            Core::Lstm(m) => m.seq(x).0,
            Core::Gru(m) => m.seq(x).0,
            Core::Rnn { weights, hidden, layers } => {
                let batch = x.size()[0];
                let h0 = Tensor::zeros([*layers, batch, *hidden], (x.kind(), x.device()));
                x.rnn_tanh(&h0, weights, true, *layers, 0.0, true, false, true).0
            }
        };
        self.head.forward(&states)
    }
}
