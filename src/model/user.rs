//! The user model (docs/model.md: Response model, Users with memory): the one place that
//! says how a user responds to a video. It owns the rules of a user's latent state and
//! answers four questions: the expected reward of showing a video now, the response draw,
//! how the latent state changes after a response, and whether the session goes on. The
//! logged history, the environment, the oracles, the planner and `fypsim eval --choices`
//! all ask it, so they cannot disagree.
//!
//! With every dynamic off (the `instatok` preset) the model makes exactly the draws, and
//! computes exactly the numbers, of the memoryless response model: p = clamp(U + shift,
//! 0, 1), then watched / skipped / liked / session_end.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::entities::{User, Video};
use super::response::{Action, ResponseModel};
use crate::config::{Checked, DynamicsConfig, EnvConfig};
use crate::model::response::{draw_history_response, draw_session_response, expected_clamped_uniform};

/// What the user model knows of a video: its category and creator (public) and its
/// duration and hidden quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoTraits {
    pub category: u16,
    pub creator: u32,
    pub duration_s: f64,
    pub quality: f64,
}

/// One user's latent state: what the user remembers. Empty vectors stand for dynamics
/// that are off, so an `instatok` user costs nothing to copy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Latent {
    /// Exposure per category (satiation), as of `as_of_s` on the user's clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub satiation: Vec<f64>,
    #[serde(default)]
    pub as_of_s: f64,
    /// Interest weight per category in [0, 1] (interest drift); empty: the profile's two
    /// interests weigh 1, the other categories 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interest: Vec<f64>,
    /// Creators the user follows, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed: Vec<u32>,
}

/// One drawn response and what it does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Response {
    pub action: Action,
    /// The drawn probability of watching.
    pub p: f64,
    /// Seconds of the video watched (0 unless watched or liked).
    pub watch_s: f64,
    /// Seconds the user's clock moves on.
    pub dt: f64,
    pub shared: bool,
    pub followed: bool,
    /// The session ends after this step: a session_end response, or the user leaves
    /// after watching or skipping (fatigue, poor quality).
    pub left: bool,
    pub reward: f64,
}

/// The user model of one world (see the module docs).
#[derive(Debug, Clone)]
pub struct UserModel {
    shift: ResponseModel,
    env: EnvConfig,
    like_boost: f64,
    skip_penalty: f64,
    dynamics: DynamicsConfig,
    interest_boost: f64,
    n_categories: usize,
    videos: Vec<VideoTraits>,
    /// Whether a step draws the leave test (fatigue or quality-driven leaving is on).
    leave_draw: bool,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl UserModel {
    /// The model of `config` over the catalogue `videos`.
    pub fn new(config: &Checked, videos: &[Video]) -> UserModel {
        let d = config.dynamics.clone();
        UserModel {
            shift: ResponseModel::new(config),
            env: config.env.clone(),
            like_boost: config.history.like_boost,
            skip_penalty: config.history.skip_penalty,
            leave_draw: d.behaviour.enabled || d.fatigue.rate > 0.0 || (d.quality.leave > 0.0 && d.quality.sd > 0.0),
            dynamics: d,
            interest_boost: config.response.interest_boost,
            n_categories: config.world.categories.len(),
            videos: videos
                .iter()
                .map(|v| VideoTraits { category: v.category, creator: v.creator, duration_s: v.duration_s, quality: v.quality })
                .collect(),
        }
    }

    pub fn dynamics(&self) -> &DynamicsConfig {
        &self.dynamics
    }

    pub fn video(&self, video: u32) -> &VideoTraits {
        &self.videos[video as usize]
    }

    /// A user's latent state before anything happened to them.
    pub fn initial_latent(&self, user: &User) -> Latent {
        let d = &self.dynamics;
        Latent {
            satiation: if d.satiation.strength > 0.0 { vec![0.0; self.n_categories] } else { Vec::new() },
            as_of_s: 0.0,
            interest: if d.drift.rate > 0.0 {
                (0..self.n_categories as u16).map(|c| if user.is_interested_in(c) { 1.0 } else { 0.0 }).collect()
            } else {
                Vec::new()
            },
            followed: Vec::new(),
        }
    }

    /// Exposure to `category` at time `now` on the user's clock.
    pub fn satiation(&self, latent: &Latent, category: u16, now: f64) -> f64 {
        match latent.satiation.get(category as usize) {
            Some(&s) if s > 0.0 => {
                let now_s = s * (-(now - latent.as_of_s).max(0.0) / self.dynamics.satiation.half_life_s).exp2();
                if now_s < 1e-9 {
                    0.0
                } else {
                    now_s
                }
            }
            _ => 0.0,
        }
    }

    /// Everything p adds to the uniform draw for this user and video at time `now`: the
    /// interest boost (times the drifting interest weight), the regional taste, minus
    /// satiation, plus clickbait and the follow boost.
    pub fn shift(&self, user: &User, latent: &Latent, video: u32, now: f64) -> f64 {
        let v = &self.videos[video as usize];
        let c = v.category;
        let mut s = if latent.interest.is_empty() {
            self.shift.shift_for_category(user, c)
        } else {
            self.interest_boost * latent.interest[c as usize] + self.shift.regional(user, c)
        };
        let d = &self.dynamics;
        if d.satiation.strength > 0.0 {
            s -= d.satiation.strength * self.satiation(latent, c, now);
        }
        if d.quality.clickbait != 0.0 {
            s -= d.quality.clickbait * v.quality;
        }
        if d.behaviour.follow_boost != 0.0 && latent.followed.binary_search(&v.creator).is_ok() {
            s += d.behaviour.follow_boost;
        }
        s
    }

    /// E[p] over the uniform draw.
    pub fn expected_p(&self, user: &User, latent: &Latent, video: u32, now: f64) -> f64 {
        expected_clamped_uniform(self.shift(user, latent, video, now))
    }

    /// The share of a watched video that is watched: sigmoid(watch_base + watch * q) with
    /// `behaviour.enabled`, else 1.
    pub fn watch_fraction(&self, video: u32) -> f64 {
        let b = &self.dynamics.behaviour;
        if b.enabled {
            sigmoid(b.watch_base + self.dynamics.quality.watch * self.videos[video as usize].quality)
        } else {
            1.0
        }
    }

    /// The chance that the user leaves after step `t` (counted from 1) of a session that
    /// did not end by a session_end response: 1 - exp(-hazard), the hazard being
    /// fatigue.rate * t, plus quality.leave * max(0, -q) after a watched video, plus with
    /// behaviour on leave_base and, after a skip, leave_skip.
    pub fn leave_probability(&self, t: usize, video: u32, consumed: bool) -> f64 {
        let d = &self.dynamics;
        let mut hazard = d.fatigue.rate * t as f64;
        if consumed {
            hazard += d.quality.leave * (-self.videos[video as usize].quality).max(0.0);
        }
        if d.behaviour.enabled {
            hazard += d.behaviour.leave_base + if consumed { 0.0 } else { d.behaviour.leave_skip };
        }
        -(-hazard).exp_m1()
    }

    /// The chance that the session goes on after showing `video` at step `t` (steps taken
    /// before this one): no session_end response and no leaving, averaged over the response.
    pub fn continue_probability(&self, user: &User, latent: &Latent, t: usize, video: u32, now: f64) -> f64 {
        let ep = self.expected_p(user, latent, video, now);
        let (consumed, skipped) =
            if self.dynamics.behaviour.enabled { (ep, 1.0 - ep) } else { (ep + (1.0 - ep) / 3.0, (1.0 - ep) / 3.0) };
        if !self.leave_draw {
            return consumed + skipped;
        }
        consumed * (1.0 - self.leave_probability(t + 1, video, true))
            + skipped * (1.0 - self.leave_probability(t + 1, video, false))
    }

    /// The index of a step's outcome among [`UserModel::outcome_probabilities`]'s classes:
    /// left (the session ended after the step) takes precedence over the response.
    pub fn outcome_class(action: Action, left: bool) -> usize {
        match action {
            _ if left => 3,
            Action::Watched => 0,
            Action::Skipped => 1,
            Action::Liked => 2,
            Action::SessionEnd | Action::Done => 3,
        }
    }

    /// The true distribution of a step's outcome before its draws, over the classes
    /// watched, skipped, liked and left (the session ended after the step: a session_end
    /// response, or leaving after watching or skipping; it takes precedence over the
    /// response). `t` counts the session's steps before this one. Marginal over p's
    /// uniform draw, so exact: what the response frequencies converge to.
    pub fn outcome_probabilities(&self, user: &User, latent: &Latent, t: usize, video: u32, now: f64) -> [f64; 4] {
        let ep = self.expected_p(user, latent, video, now);
        let b = &self.dynamics.behaviour;
        let (watched, skipped, liked, ended) = if b.enabled {
            let like = (b.like_rate * self.watch_fraction(video)).clamp(0.0, 1.0);
            (ep * (1.0 - like), 1.0 - ep, ep * like, 0.0)
        } else {
            let rest = (1.0 - ep) / 3.0;
            (ep, rest, rest, rest)
        };
        let (lc, ls) = if self.leave_draw {
            (self.leave_probability(t + 1, video, true), self.leave_probability(t + 1, video, false))
        } else {
            (0.0, 0.0)
        };
        [watched * (1.0 - lc), skipped * (1.0 - ls), liked * (1.0 - lc), ended + (watched + liked) * lc + skipped * ls]
    }

    /// The reward of a response action before the behaviour terms.
    fn action_reward(&self, action: Action) -> f64 {
        let e = &self.env;
        match action {
            Action::Watched => e.reward_watched,
            Action::Liked => e.reward_liked,
            Action::Skipped => e.reward_skipped,
            Action::SessionEnd | Action::Done => e.reward_session_end,
        }
    }

    /// The reward of a response as a platform observes it: the response's reward, plus,
    /// with behaviour on and the video watched, the watch-time, share and follow terms
    /// (what [`UserModel::respond`] pays for the same response).
    pub fn reward_of(&self, action: Action, watch_s: f64, shared: bool, followed: bool) -> f64 {
        self.reward_with(action, || self.dynamics.behaviour.reward_watch_s * watch_s, shared, followed)
    }

    /// The reward rule itself, with the watch-time term given as a closure: `reward_of`
    /// prices reported seconds, `respond` the seconds it draws as rate * fraction *
    /// duration, multiplied in that order so that every earlier result stays bit-identical.
    fn reward_with(&self, action: Action, watch_reward: impl FnOnce() -> f64, shared: bool, followed: bool) -> f64 {
        let b = &self.dynamics.behaviour;
        let mut reward = self.action_reward(action);
        if b.enabled && action.counts_view() {
            reward += watch_reward() + if shared { b.reward_share } else { 0.0 } + if followed { b.reward_follow } else { 0.0 };
        }
        reward
    }

    /// E[reward] of showing `video` to the user now: the reward is linear in p, so the
    /// expectation over p's draw is exact. Memoryless responses: E[r] = E[p] r_watched +
    /// (1 - E[p]) / 3 (r_skipped + r_liked + r_session_end). With behaviour on: E[p]
    /// times the reward of a watched video (watched or liked, watch time, share, follow)
    /// plus (1 - E[p]) r_skipped. Leaving is not rewarded: its cost is the session's
    /// future, which a myopic choice does not see.
    pub fn expected_reward(&self, user: &User, latent: &Latent, video: u32, now: f64) -> f64 {
        let e = &self.env;
        let ep = self.expected_p(user, latent, video, now);
        let b = &self.dynamics.behaviour;
        if !b.enabled {
            return ep * e.reward_watched + (1.0 - ep) / 3.0 * (e.reward_skipped + e.reward_liked + e.reward_session_end);
        }
        let f = self.watch_fraction(video);
        let v = &self.videos[video as usize];
        let follows = latent.followed.binary_search(&v.creator).is_ok();
        let like = b.like_rate * f;
        let follow = if follows { 0.0 } else { b.follow_rate * f * b.reward_follow };
        let watched = (1.0 - like) * e.reward_watched
            + like * e.reward_liked
            + b.reward_watch_s * f * v.duration_s
            + b.share_rate * f * b.reward_share
            + follow;
        ep * watched + (1.0 - ep) * e.reward_skipped
    }

    /// Draws the user's response to `video` at step `t` (steps taken before this one) of
    /// a session, at time `now`. Always the same number of draws for a config, so two
    /// policies fed the same stream see the same numbers at every step (common random
    /// numbers): p, the response and the skip time; with behaviour on, like, share and
    /// follow; then the leave test when any dynamic can make the user leave.
    pub fn respond(&self, user: &User, latent: &Latent, t: usize, video: u32, now: f64, rng: &mut impl Rng) -> Response {
        let p = (rng.random::<f64>() + self.shift(user, latent, video, now)).clamp(0.0, 1.0);
        let b = &self.dynamics.behaviour;
        let v = &self.videos[video as usize];
        let (action, skip_time, shared, followed) = if b.enabled {
            let watched = rng.random::<f64>() < p;
            let skip_time = rng.random_range(self.env.skip_time_min_s..self.env.skip_time_max_s);
            let f = self.watch_fraction(video);
            let (u_like, u_share, u_follow) = (rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>());
            let liked = watched && u_like < b.like_rate * f;
            let shared = watched && u_share < b.share_rate * f;
            let followed = watched && u_follow < b.follow_rate * f && latent.followed.binary_search(&v.creator).is_err();
            let action = match (watched, liked) {
                (false, _) => Action::Skipped,
                (true, false) => Action::Watched,
                (true, true) => Action::Liked,
            };
            (action, skip_time, shared, followed)
        } else {
            let action = draw_session_response(p, rng);
            let skip_time = rng.random_range(self.env.skip_time_min_s..self.env.skip_time_max_s);
            (action, skip_time, false, false)
        };
        let reward = self.reward_with(action, || b.reward_watch_s * self.watch_fraction(video) * v.duration_s, shared, followed);
        let consumed = action.counts_view();
        let watch_s = if consumed { self.watch_fraction(video) * v.duration_s } else { 0.0 };
        let mut left = action == Action::SessionEnd;
        if self.leave_draw {
            let u: f64 = rng.random();
            left = left || u < self.leave_probability(t + 1, video, consumed);
        }
        let dt = if consumed { watch_s } else { skip_time };
        Response { action, p, watch_s, dt, shared, followed, left, reward }
    }

    /// The latent state after `user` responded `r` to `video`, shown at time `now`:
    /// exposure decays to `now` and the shown category gains 1; interests drift toward a
    /// watched or liked category and away from a skipped one; a follow is remembered.
    pub fn update(&self, latent: &mut Latent, video: u32, action: Action, followed: bool, now: f64) {
        let c = self.videos[video as usize].category as usize;
        if !latent.satiation.is_empty() {
            let decay = (-(now - latent.as_of_s).max(0.0) / self.dynamics.satiation.half_life_s).exp2();
            for s in &mut latent.satiation {
                // Exposure below 1e-9 is forgotten (it would only print as noise).
                *s = if *s * decay < 1e-9 { 0.0 } else { *s * decay };
            }
            latent.satiation[c] += 1.0;
            latent.as_of_s = now;
        }
        if !latent.interest.is_empty() {
            let rate = self.dynamics.drift.rate;
            let w = &mut latent.interest[c];
            match action {
                Action::Watched | Action::Liked => *w += rate * (1.0 - *w),
                Action::Skipped => *w -= rate * *w,
                Action::SessionEnd | Action::Done => {}
            }
        }
        if followed {
            let creator = self.videos[video as usize].creator;
            if let Err(at) = latent.followed.binary_search(&creator) {
                latent.followed.insert(at, creator);
            }
        }
    }

    /// A new session begins: exposure has decayed over `satiation.session_gap_s`.
    pub fn begin_session(&self, latent: &mut Latent) {
        if !latent.satiation.is_empty() {
            let decay = (-self.dynamics.satiation.session_gap_s / self.dynamics.satiation.half_life_s).exp2();
            for s in &mut latent.satiation {
                *s = if *s * decay < 1e-9 { 0.0 } else { *s * decay };
            }
        }
    }

    /// One logged-history interaction (docs/model.md: Logged history): the response
    /// (watched with weight p, skipped and liked with (1-p)/2 each), the seconds it takes,
    /// and whether the session ends after it (p nudged by a like or a skip, against a
    /// uniform draw).
    pub fn history_step(&self, user: &User, latent: &Latent, video: u32, now: f64, rng: &mut impl Rng) -> (Action, f64, bool) {
        let p = (rng.random::<f64>() + self.shift(user, latent, video, now)).clamp(0.0, 1.0);
        let response = draw_history_response(p, rng);
        let dt = match response {
            Action::Skipped => rng.random_range(self.env.skip_time_min_s..self.env.skip_time_max_s),
            _ => self.watch_fraction(video) * self.videos[video as usize].duration_s,
        };
        let p_stay = match response {
            Action::Liked => p + self.like_boost,
            Action::Skipped => p - self.skip_penalty,
            _ => p,
        };
        let ends = p_stay < rng.random::<f64>();
        (response, dt, ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rng::{stream, Stream};

    fn model(toml: &str) -> (Checked, UserModel, User) {
        let c = Config::from_toml_str(toml, &[]).unwrap();
        let videos: Vec<Video> =
            (0..8).map(|i| Video { id: i, category: i as u16, creator: i, duration_s: 10.0, views: 0, quality: 0.0 }).collect();
        let m = UserModel::new(&c, &videos);
        (c, m, User { id: 0, age: 20, gender: 0, region: 1, interests: [0, 5] })
    }

    #[test]
    fn with_dynamics_off_the_expected_reward_is_the_memoryless_one() {
        let (c, m, u) = model("");
        let l = m.initial_latent(&u);
        assert_eq!(l, Latent::default());
        // comedy (0) is an interest: shift 0.3; animals (5) in the mid region: 0.3 + 0.1.
        let e = &c.env;
        for (video, shift) in [(0u32, 0.3), (5, 0.4), (2, -0.2), (3, 0.0)] {
            let ep = expected_clamped_uniform(shift);
            let want = ep * e.reward_watched + (1.0 - ep) / 3.0 * (e.reward_skipped + e.reward_liked + e.reward_session_end);
            assert!((m.expected_reward(&u, &l, video, 0.0) - want).abs() < 1e-12);
        }
        assert_eq!(m.watch_fraction(0), 1.0);
        assert_eq!(m.leave_probability(40, 0, true), 0.0);
    }

    #[test]
    fn satiation_lowers_the_pull_of_a_category_and_decays_with_time() {
        let (_, m, u) = model("[dynamics.satiation]\nstrength = 0.2\nhalf_life_s = 10.0\nsession_gap_s = 20.0\n");
        let mut l = m.initial_latent(&u);
        let before = m.shift(&u, &l, 0, 0.0);
        m.update(&mut l, 0, Action::Watched, false, 0.0);
        m.update(&mut l, 0, Action::Watched, false, 0.0);
        // Two exposures at t = 0: shift down by 0.4 now, by 0.2 after one half-life.
        assert!((m.shift(&u, &l, 0, 0.0) - (before - 0.4)).abs() < 1e-12);
        assert!((m.shift(&u, &l, 0, 10.0) - (before - 0.2)).abs() < 1e-12);
        // Other categories are untouched; a new session is two half-lives later.
        assert_eq!(m.shift(&u, &l, 5, 0.0), 0.4);
        m.begin_session(&mut l);
        assert!((m.satiation(&l, 0, 0.0) - 0.5).abs() < 1e-12);
        // Smooth: the shift falls linearly in exposure, no blackout.
        assert!(m.expected_p(&u, &l, 0, 0.0) > 0.0);
    }

    #[test]
    fn fatigue_makes_leaving_likelier_with_every_step() {
        let (_, m, _) = model("[dynamics.fatigue]\nrate = 0.05\n");
        let p: Vec<f64> = (1..=4).map(|t| m.leave_probability(t, 0, false)).collect();
        assert!((p[0] - (1.0 - (-0.05f64).exp())).abs() < 1e-12);
        assert!(p.windows(2).all(|w| w[1] > w[0]), "{p:?}");
    }

    #[test]
    fn interests_drift_toward_enjoyed_categories_and_away_from_skipped_ones() {
        let (_, m, u) = model("[dynamics.drift]\nrate = 0.5\n");
        let mut l = m.initial_latent(&u);
        assert_eq!(l.interest, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        m.update(&mut l, 3, Action::Watched, false, 0.0);
        m.update(&mut l, 0, Action::Skipped, false, 0.0);
        assert_eq!(l.interest[3], 0.5);
        assert_eq!(l.interest[0], 0.5);
        // The boost follows the weight: food (3) gains 0.15, comedy (0) loses 0.15.
        assert!((m.shift(&u, &l, 3, 0.0) - 0.15).abs() < 1e-12);
        assert!((m.shift(&u, &l, 0, 0.0) - 0.15).abs() < 1e-12);
    }

    #[test]
    fn quality_drives_watch_time_and_leaving_and_clickbait_the_click() {
        let (c, _, u) = model("");
        let toml = "[dynamics.quality]\nsd = 1.0\nclickbait = 0.1\nleave = 0.5\nwatch = 2.0\n\
                    [dynamics.behaviour]\nenabled = true\nwatch_base = 0.0\n";
        let c2 = Config::from_toml_str(toml, &[]).unwrap();
        let videos = [
            Video { id: 0, category: 1, creator: 0, duration_s: 20.0, views: 0, quality: 1.0 },
            Video { id: 1, category: 1, creator: 0, duration_s: 20.0, views: 0, quality: -1.0 },
        ];
        let m = UserModel::new(&c2, &videos);
        let l = m.initial_latent(&u);
        let _ = c;
        assert!((m.watch_fraction(0) - sigmoid(2.0)).abs() < 1e-12);
        assert!((m.watch_fraction(1) - sigmoid(-2.0)).abs() < 1e-12);
        // The poor video pulls 0.2 more clicks, and makes a viewer leave.
        assert!((m.shift(&u, &l, 1, 0.0) - m.shift(&u, &l, 0, 0.0) - 0.2).abs() < 1e-12);
        assert_eq!(m.leave_probability(1, 0, true), 0.0);
        assert!((m.leave_probability(1, 1, true) - (1.0 - (-0.5f64).exp())).abs() < 1e-12);
        assert_eq!(m.leave_probability(1, 1, false), 0.0);
    }

    /// Eight videos, one per category, of three creators, with durations and hidden
    /// qualities that differ.
    fn varied_videos() -> Vec<Video> {
        (0..8)
            .map(|i| Video {
                id: i,
                category: i as u16,
                creator: i % 3,
                duration_s: 5.0 + 3.0 * i as f64,
                views: 0,
                quality: (i as f64 - 3.5) / 2.0,
            })
            .collect()
    }

    #[test]
    fn the_realised_mean_reward_converges_to_the_expected_reward() {
        // Every dynamic on, a user part-way through a session with some history.
        let toml = "[dynamics.satiation]\nstrength = 0.15\n[dynamics.fatigue]\nrate = 0.02\n[dynamics.drift]\nrate = 0.1\n\
                    [dynamics.quality]\nsd = 1.0\nclickbait = 0.1\nleave = 0.3\nwatch = 1.0\n\
                    [dynamics.behaviour]\nenabled = true\nshare_rate = 0.2\nfollow_rate = 0.1\nfollow_boost = 0.1\n\
                    like_rate = 0.3\nleave_base = 0.05\nleave_skip = 0.2\n\
                    reward_watch_s = 0.05\nreward_share = 1.0\nreward_follow = 2.0\n";
        let c = Config::from_toml_str(toml, &[]).unwrap();
        let m = UserModel::new(&c, &varied_videos());
        let u = User { id: 0, age: 20, gender: 0, region: 1, interests: [0, 5] };
        let mut l = m.initial_latent(&u);
        m.update(&mut l, 0, Action::Watched, true, 0.0);
        m.update(&mut l, 5, Action::Skipped, false, 8.0);
        let mut rng = stream(9, Stream::Responses);
        for video in 0..8u32 {
            let n = 200_000;
            let (mut sum, mut sq) = (0.0, 0.0);
            for _ in 0..n {
                let r = m.respond(&u, &l, 3, video, 12.0, &mut rng).reward;
                sum += r;
                sq += r * r;
            }
            let mean = sum / n as f64;
            let sd = (sq / n as f64 - mean * mean).sqrt();
            let exact = m.expected_reward(&u, &l, video, 12.0);
            assert!((mean - exact).abs() < 5.0 * sd / (n as f64).sqrt(), "video {video}: {mean} vs {exact}");
        }
    }

    #[test]
    fn outcome_frequencies_converge_to_the_outcome_probabilities() {
        let rich = "[dynamics.satiation]\nstrength = 0.15\n[dynamics.fatigue]\nrate = 0.02\n\
                    [dynamics.quality]\nsd = 1.0\nclickbait = 0.1\nleave = 0.3\nwatch = 1.0\n\
                    [dynamics.behaviour]\nenabled = true\nlike_rate = 0.3\nleave_base = 0.05\nleave_skip = 0.2\n";
        for toml in ["", "[dynamics.fatigue]\nrate = 0.05\n", rich] {
            let c = Config::from_toml_str(toml, &[]).unwrap();
            let m = UserModel::new(&c, &varied_videos());
            let u = User { id: 0, age: 20, gender: 0, region: 1, interests: [0, 5] };
            let mut l = m.initial_latent(&u);
            m.update(&mut l, 0, Action::Watched, false, 0.0);
            let mut rng = stream(11, Stream::Responses);
            for video in [0u32, 2, 5, 7] {
                let probs = m.outcome_probabilities(&u, &l, 4, video, 5.0);
                assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{probs:?}");
                let n = 100_000;
                let mut counts = [0usize; 4];
                for _ in 0..n {
                    let r = m.respond(&u, &l, 4, video, 5.0, &mut rng);
                    counts[UserModel::outcome_class(r.action, r.left)] += 1;
                }
                for (k, p) in probs.iter().enumerate() {
                    let f = counts[k] as f64 / n as f64;
                    let sd = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
                    assert!((f - p).abs() < 5.0 * sd + 1e-9, "{toml:?} video {video} class {k}: {f} vs {p}");
                }
            }
        }
    }
}
