//! How a user reacts to a video (docs/model.md: Response model): a probability p of watching, built from a
//! uniform draw, the interest boost and the regional taste table, clamped to [0, 1].

use rand::Rng;

use crate::config::Checked;

pub use super::entities::Action;
use super::entities::{User, Video};

/// The response model of one world: the interest boost and the regional taste table,
/// looked up by category and region index.
#[derive(Debug, Clone)]
pub struct ResponseModel {
    interest_boost: f64,
    n_regions: usize,
    /// `regional[category * n_regions + region]`.
    regional: Vec<f64>,
}

impl ResponseModel {
    pub fn new(config: &Checked) -> ResponseModel {
        let w = &config.world;
        let n_regions = w.regions.len();
        let mut regional = vec![0.0; w.categories.len() * n_regions];
        for t in &config.response.regional_taste {
            // Validation guarantees both names exist.
            let c = w.categories.iter().position(|x| *x == t.category).expect("checked category");
            let r = w.regions.iter().position(|x| *x == t.region).expect("checked region");
            regional[c * n_regions + r] += t.delta;
        }
        ResponseModel { interest_boost: config.response.interest_boost, n_regions, regional }
    }

    /// Everything p adds to the uniform draw for this user and video.
    pub fn shift(&self, user: &User, video: &Video) -> f64 {
        self.shift_for_category(user, video.category)
    }

    /// The shift depends on the video only through its category.
    pub fn shift_for_category(&self, user: &User, category: u16) -> f64 {
        let boost = if user.is_interested_in(category) { self.interest_boost } else { 0.0 };
        boost + self.regional(user, category)
    }

    /// The regional taste for this user's region and `category`.
    pub fn regional(&self, user: &User, category: u16) -> f64 {
        self.regional[category as usize * self.n_regions + user.region as usize]
    }

    /// p = clamp(u + shift, 0, 1) for a uniform draw u. The prototype clamped only the top,
    /// so p could go negative and the response weights became invalid.
    pub fn p_from(&self, user: &User, video: &Video, u: f64) -> f64 {
        (u + self.shift(user, video)).clamp(0.0, 1.0)
    }

    /// Draws p for this user and video.
    pub fn draw_p(&self, user: &User, video: &Video, rng: &mut impl Rng) -> f64 {
        self.p_from(user, video, rng.random::<f64>())
    }

    /// E[p] over the uniform draw: the mean of clamp(U + s, 0, 1) for U ~ Uniform(0, 1).
    pub fn expected_p(&self, user: &User, category: u16) -> f64 {
        expected_clamped_uniform(self.shift_for_category(user, category))
    }
}

/// E[clamp(U + s, 0, 1)] for U ~ Uniform(0, 1), in closed form.
pub fn expected_clamped_uniform(s: f64) -> f64 {
    if s >= 1.0 {
        1.0
    } else if s <= -1.0 {
        0.0
    } else if s >= 0.0 {
        // U + s exceeds 1 on a fraction s of the draws.
        let below = 1.0 - s; // U in [0, 1-s): value U + s
        (s + 1.0) * below / 2.0 * 1.0 + s
    } else {
        // U + s is negative (clamped to 0) for U < -s.
        let above = 1.0 + s; // U in [-s, 1): value from 0 to 1+s
        above * above / 2.0
    }
}

/// A simulated response (docs/model.md: Response model): watched with weight p, skipped, liked
/// and session_end with (1-p)/3 each.
pub fn draw_session_response(p: f64, rng: &mut impl Rng) -> Action {
    let x: f64 = rng.random();
    if x < p {
        return Action::Watched;
    }
    let rest = (x - p) / (1.0 - p).max(f64::MIN_POSITIVE);
    if rest < 1.0 / 3.0 {
        Action::Skipped
    } else if rest < 2.0 / 3.0 {
        Action::Liked
    } else {
        Action::SessionEnd
    }
}

/// A logged-history response (docs/model.md: Logged history): watched with weight p, skipped and liked
/// with (1-p)/2 each.
pub fn draw_history_response(p: f64, rng: &mut impl Rng) -> Action {
    let x: f64 = rng.random();
    if x < p {
        Action::Watched
    } else if (x - p) / (1.0 - p).max(f64::MIN_POSITIVE) < 0.5 {
        Action::Skipped
    } else {
        Action::Liked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rng::{stream, Stream};

    fn user(region: u16, interests: [u16; 2]) -> User {
        User { id: 0, age: 20, gender: 0, region, interests }
    }

    fn video(category: u16) -> Video {
        Video { id: 0, category, creator: 0, duration_s: 6.0, views: 50, quality: 0.0 }
    }

    #[test]
    fn interest_and_regional_taste_shift_p_and_it_stays_in_unit_interval() {
        let c = Config::default().check().unwrap();
        let m = ResponseModel::new(&c);
        // tech = 6, west = 0: +0.1; with tech as an interest also +0.3.
        assert!((m.shift(&user(0, [0, 1]), &video(6)) - 0.1).abs() < 1e-12);
        assert!((m.shift(&user(0, [6, 1]), &video(6)) - 0.4).abs() < 1e-12);
        // educational = 1 in the west: -0.2.
        assert!((m.shift(&user(0, [0, 2]), &video(1)) + 0.2).abs() < 1e-12);
        assert_eq!(m.p_from(&user(0, [0, 2]), &video(1), 0.05), 0.0);
        assert_eq!(m.p_from(&user(0, [6, 1]), &video(6), 0.9), 1.0);
    }

    #[test]
    fn expected_p_matches_monte_carlo() {
        let mut rng = stream(1, Stream::World);
        for s in [-1.5, -0.2, 0.0, 0.1, 0.4, 1.2] {
            let n = 200_000;
            let mc: f64 = (0..n).map(|_| (rng.random::<f64>() + s).clamp(0.0, 1.0)).sum::<f64>() / n as f64;
            let exact = expected_clamped_uniform(s);
            // Standard error is at most 0.5 / sqrt(n) ~ 0.0011; allow 5 of them.
            assert!((mc - exact).abs() < 0.006, "s={s}: mc {mc} vs exact {exact}");
        }
    }

    #[test]
    fn session_response_frequencies_follow_the_weights() {
        let mut rng = stream(2, Stream::Responses);
        let p = 0.4;
        let n = 120_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[match draw_session_response(p, &mut rng) {
                Action::Watched => 0,
                Action::Skipped => 1,
                Action::Liked => 2,
                Action::SessionEnd => 3,
                Action::Done => unreachable!(),
            }] += 1;
        }
        let expect = [p, (1.0 - p) / 3.0, (1.0 - p) / 3.0, (1.0 - p) / 3.0];
        for (c, e) in counts.iter().zip(expect) {
            let f = *c as f64 / n as f64;
            let sd = (e * (1.0 - e) / n as f64).sqrt();
            assert!((f - e).abs() < 5.0 * sd, "{counts:?}");
        }
        assert_eq!(draw_session_response(1.0, &mut rng), Action::Watched);
    }
}
