//! Epsilon-greedy exploration schedules: exponential or linear, per update, step or
//! episode (the prototype decayed per update, so exploration was over in a few hundred
//! steps).

use serde::{Deserialize, Serialize};

use crate::config::{DecayShape, DecayUnit, EpsilonConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epsilon {
    config: EpsilonConfig,
    units: u64,
    value: f64,
}

impl Epsilon {
    pub fn new(config: &EpsilonConfig) -> Epsilon {
        Epsilon { config: config.clone(), units: 0, value: config.start }
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    /// Counts one `unit`; decays when it is the configured one.
    pub fn tick(&mut self, unit: DecayUnit) {
        if unit != self.config.per {
            return;
        }
        self.units += 1;
        let c = &self.config;
        self.value = match c.decay {
            DecayShape::Exponential => (self.value * c.rate).max(c.end),
            DecayShape::Linear => {
                let frac = (self.units as f64 / c.linear_units as f64).min(1.0);
                c.start + (c.end - c.start) * frac
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_per_update_ignores_other_units_and_floors_at_end() {
        let c = EpsilonConfig { per: DecayUnit::Update, rate: 0.5, end: 0.1, ..Default::default() };
        let mut e = Epsilon::new(&c);
        e.tick(DecayUnit::Step);
        e.tick(DecayUnit::Episode);
        assert_eq!(e.value(), 1.0);
        e.tick(DecayUnit::Update);
        assert_eq!(e.value(), 0.5);
        for _ in 0..10 {
            e.tick(DecayUnit::Update);
        }
        assert_eq!(e.value(), 0.1);
    }

    #[test]
    fn linear_reaches_end_after_its_units() {
        let c = EpsilonConfig {
            decay: DecayShape::Linear,
            per: DecayUnit::Episode,
            start: 1.0,
            end: 0.0,
            linear_units: 4,
            ..Default::default()
        };
        let mut e = Epsilon::new(&c);
        e.tick(DecayUnit::Episode);
        assert!((e.value() - 0.75).abs() < 1e-12);
        for _ in 0..10 {
            e.tick(DecayUnit::Episode);
        }
        assert_eq!(e.value(), 0.0);
    }
}
