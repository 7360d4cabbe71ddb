//! When a user comes back after a session (docs/model.md: Days and weeks): the return
//! hazard, churn and reactivation.

use rand::Rng;
use rand_distr::{Distribution, Exp};

use crate::config::CalendarConfig;

/// Seconds in a simulated day.
pub const DAY_S: f64 = 86_400.0;

/// When a user comes back (docs/model.md: Days and weeks).
///
/// A user's return hazard at calendar time t is
/// `sessions_per_day / 86400 * exp(coupling * (satisfaction - reference)) * (1 + rhythm *
/// cos(2 pi (hour(t) - peak) / 24))` per second, from `min_gap_s` after the session's end;
/// satisfaction is an exponentially weighted mean of the user's session returns. A user
/// whose next return would come more than `churn_days` after the last session's end has
/// churned at that moment; a churned user comes back at rate `reactivation_per_day`.
#[derive(Debug, Clone)]
pub struct ReturnModel {
    cfg: CalendarConfig,
}

/// What follows a session's end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// The next session opens at this calendar time.
    Return(f64),
    /// The user churns at this calendar time (`churn_days` after the session's end).
    Churn(f64),
}

/// The hour of the day (in [0, 24)) at calendar time `t` seconds.
pub fn hour_of(t: f64) -> f64 {
    (t / 3600.0).rem_euclid(24.0)
}

impl ReturnModel {
    pub fn new(cfg: &CalendarConfig) -> ReturnModel {
        ReturnModel { cfg: cfg.clone() }
    }

    /// Satisfaction after a session that returned `session_return`.
    pub fn satisfaction_after(&self, satisfaction: f64, session_return: f64) -> f64 {
        self.cfg.memory * satisfaction + (1.0 - self.cfg.memory) * session_return
    }

    /// The day-average return rate per second at `satisfaction`.
    pub fn base_rate(&self, satisfaction: f64) -> f64 {
        // The exponent is capped so that an extreme satisfaction cannot overflow the rate.
        let x = (self.cfg.coupling * (satisfaction - self.cfg.reference)).clamp(-50.0, 50.0);
        self.cfg.sessions_per_day / DAY_S * x.exp()
    }

    /// The return hazard per second at calendar time `t` for a user of peak hour `peak`.
    pub fn hazard(&self, satisfaction: f64, peak: f64, t: f64) -> f64 {
        let phase = 2.0 * std::f64::consts::PI * (hour_of(t) - peak) / 24.0;
        self.base_rate(satisfaction) * (1.0 + self.cfg.rhythm * phase.cos())
    }

    /// The next return of a user whose last session ended at `end` (no return before
    /// `earliest`), drawn by thinning the hazard's inhomogeneous Poisson process, or the
    /// churn when it would come more than `churn_days` after `end`.
    pub fn next(&self, satisfaction: f64, peak: f64, end: f64, earliest: f64, rng: &mut impl Rng) -> Next {
        let churn_at = end + self.cfg.churn_days as f64 * DAY_S;
        let max = self.base_rate(satisfaction) * (1.0 + self.cfg.rhythm);
        let Ok(gaps) = Exp::new(max) else { return Next::Churn(churn_at) };
        let mut t = earliest;
        loop {
            t += gaps.sample(rng);
            if t >= churn_at {
                return Next::Churn(churn_at);
            }
            if rng.random::<f64>() * max <= self.hazard(satisfaction, peak, t) {
                return Next::Return(t);
            }
        }
    }

    /// When a user who churned at `at` comes back, if ever.
    pub fn reactivation(&self, at: f64, rng: &mut impl Rng) -> Option<f64> {
        let rate = self.cfg.reactivation_per_day / DAY_S;
        (rate > 0.0).then(|| at + Exp::new(rate).expect("a positive rate").sample(rng))
    }
}
