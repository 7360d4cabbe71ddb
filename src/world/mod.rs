//! The synthetic world (docs/model.md: World, Logged history): users, videos and the logged history they
//! start with. Everything is a pure function of the checked config and its seed.

mod history;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_distr::{Distribution, Normal, Poisson};
use std::sync::Arc;

use crate::config::Checked;
use crate::model::state::SimState;
use crate::model::user::UserModel;
use crate::rng::{stream, Stream};

pub use crate::model::entities::{Interaction, User, Video};
pub use crate::model::response::{Action, ResponseModel};
pub use history::generate_history;

/// The generated world of one run: users, videos, the logged history and the user model,
/// and the simulation state the history leaves. Simulation never changes it: what
/// simulation changes lives in an environment's own [`SimState`], which starts as a copy
/// of [`World::start`], so one world (behind an `Arc`) serves every environment of a run.
#[derive(Debug, Clone)]
pub struct World {
    pub users: Vec<User>,
    /// The catalogue; `views` counts the views as the logged history leaves them (the
    /// live count is [`SimState::views`]).
    pub videos: Vec<Video>,
    pub history: Vec<Interaction>,
    /// How users respond (shared, immutable).
    pub model: Arc<UserModel>,
    /// Where simulation starts: each video's views and log and each user's clock, next
    /// session id and latent state after the history (docs/model.md: Users with memory),
    /// with nothing added to the matrix and no session in flight.
    pub start: SimState,
    /// When the users and videos that arrive during a calendar arrive.
    pub arrivals: Arrivals,
}

/// The users who sign up and the videos uploaded during a calendar (docs/model.md: Days
/// and weeks). What may arrive is drawn with the world, from its own stream, so every
/// policy meets the same newcomers at the same moments; they are appended to
/// [`World::users`] and [`World::videos`] in the order they arrive. Which of them have
/// arrived is simulation state ([`SimState::signed_up`], [`SimState::uploaded`]): until
/// then they are outside the matrix, so no candidate list, episode or evaluation sees them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrivals {
    /// Calendar time (seconds from day 0, 00:00) of each sign-up, ascending: user
    /// `initial_users + k` signs up at `user_at[k]`.
    pub user_at: Vec<f64>,
    /// Calendar time of each upload, ascending: video `initial_videos + k` at `video_at[k]`.
    pub video_at: Vec<f64>,
}

impl World {
    /// Generates the world of a config from its seed.
    pub fn generate(config: &Checked) -> World {
        let mut rng = stream(config.seed, Stream::World);
        let mut videos = generate_videos(config, &mut rng);
        let users = generate_users(config, &mut rng);
        draw_video_traits(config, &mut videos);
        let model = Arc::new(UserModel::new(config, &videos));
        let start = SimState {
            next_session: vec![0; users.len()],
            clock: vec![0.0; users.len()],
            latent: users.iter().map(|u| model.initial_latent(u)).collect(),
            logs: if config.dynamics.is_off() { Vec::new() } else { vec![Default::default(); videos.len()] },
            ..SimState::default()
        };
        let mut world = World { users, videos, history: Vec::new(), model, start, arrivals: Arrivals::default() };
        let mut hrng = stream(config.seed, Stream::History);
        generate_history(config, &mut world, &mut hrng);
        world.start.views = world.videos.iter().map(|v| v.views).collect();
        if config.calendar.has_arrivals() {
            world.add_arrivals(config);
        }
        world
    }

    /// The users there before any sign-up.
    pub fn initial_users(&self) -> usize {
        self.users.len() - self.arrivals.user_at.len()
    }

    /// The videos there before any upload.
    pub fn initial_videos(&self) -> usize {
        self.videos.len() - self.arrivals.video_at.len()
    }

    /// Draws the calendar's sign-ups and uploads (after the history, from their own stream,
    /// so the rest of the world is the same with and without them).
    fn add_arrivals(&mut self, config: &Checked) {
        let cal = &config.calendar;
        let w = &config.world;
        let mut rng = stream(config.seed, Stream::Arrivals);
        // Arrival times: a Poisson count per day (per creator for uploads), at uniform
        // times of the day, sorted.
        let times = |rate: f64, per: usize, rng: &mut crate::rng::SimRng| -> Vec<(f64, u32)> {
            let mut out = Vec::new();
            if rate > 0.0 {
                let count = Poisson::new(rate).expect("validated: a finite rate > 0");
                for day in 0..cal.days {
                    for who in 0..per {
                        let n: f64 = count.sample(rng);
                        for _ in 0..n as u64 {
                            out.push(((day as f64 + rng.random::<f64>()) * 86_400.0, who as u32));
                        }
                    }
                }
            }
            out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out
        };
        let signups = times(cal.signups_per_day, 1, &mut rng);
        let uploads = times(cal.uploads_per_creator_day, w.n_creators, &mut rng);
        let first_user = self.users.len();
        for (k, &(at, _)) in signups.iter().enumerate() {
            let mut user = draw_user(config, &mut rng);
            user.id = (first_user + k) as u32;
            self.start.latent.push(self.model.initial_latent(&user));
            self.users.push(user);
            self.start.clock.push(0.0);
            self.start.next_session.push(0);
            self.arrivals.user_at.push(at);
        }
        let d = &config.dynamics;
        let quality = Normal::new(0.0, d.quality.sd).expect("validated: sd >= 0 and finite");
        let first_video = self.videos.len();
        for (k, &(at, creator)) in uploads.iter().enumerate() {
            let duration_s = draw_duration(config, &mut rng);
            let category = rng.random_range(0..w.categories.len()) as u16;
            let quality = if d.quality.sd > 0.0 { quality.sample(&mut rng) } else { 0.0 };
            self.videos.push(Video { id: (first_video + k) as u32, category, creator, duration_s, views: 0, quality });
            self.start.views.push(0);
            if !self.start.logs.is_empty() {
                self.start.logs.push(Default::default());
            }
            self.arrivals.video_at.push(at);
        }
        if !uploads.is_empty() {
            self.model = Arc::new(UserModel::new(config, &self.videos));
        }
    }
}

fn generate_videos(config: &Checked, rng: &mut impl Rng) -> Vec<Video> {
    let w = &config.world;
    let views = Normal::new(w.initial_views_mean, w.initial_views_std).expect("validated: std >= 0 and finite");
    (0..w.n_videos)
        .map(|id| Video {
            id: id as u32,
            category: rng.random_range(0..w.categories.len()) as u16,
            creator: rng.random_range(0..w.n_creators) as u32,
            duration_s: w.video_duration_s,
            views: views.sample(rng).round().max(0.0) as u64,
            quality: 0.0,
        })
        .collect()
}

/// Hidden quality and varied durations (docs/model.md: Users with memory), from their own
/// stream, so the `instatok` world's draws stay as they were.
fn draw_video_traits(config: &Checked, videos: &mut [Video]) {
    let d = &config.dynamics;
    let b = &d.behaviour;
    let varied = b.duration_max_s > 0.0;
    if d.quality.sd == 0.0 && !varied {
        return;
    }
    let mut rng = stream(config.seed, Stream::VideoTraits);
    let quality = Normal::new(0.0, d.quality.sd).expect("validated: sd >= 0 and finite");
    for v in videos {
        v.quality = quality.sample(&mut rng);
        if varied {
            v.duration_s = draw_duration(config, &mut rng);
        }
    }
}

/// A video's duration: Uniform(`duration_min_s`, `duration_max_s`) when the durations
/// vary (`duration_max_s` > 0; the minimum when the two are equal), else
/// `world.video_duration_s`. Draws only when the range is not empty.
fn draw_duration(config: &Checked, rng: &mut impl Rng) -> f64 {
    let b = &config.dynamics.behaviour;
    if b.duration_max_s > b.duration_min_s {
        rng.random_range(b.duration_min_s..b.duration_max_s)
    } else if b.duration_max_s > 0.0 {
        b.duration_min_s
    } else {
        config.world.video_duration_s
    }
}

fn generate_users(config: &Checked, rng: &mut impl Rng) -> Vec<User> {
    (0..config.world.n_users).map(|id| User { id: id as u32, ..draw_user(config, rng) }).collect()
}

/// One user's profile (id 0).
fn draw_user(config: &Checked, rng: &mut impl Rng) -> User {
    let w = &config.world;
    let age = rng.random_range(w.age_min..w.age_max);
    let gender = rng.random_range(0..w.genders.len()) as u16;
    let region = rng.random_range(0..w.regions.len()) as u16;
    let interests = if w.distinct_interests {
        let categories: Vec<u16> = (0..w.categories.len() as u16).collect();
        let pick: Vec<u16> = categories.choose_multiple(rng, 2).copied().collect();
        [pick[0], pick[1]]
    } else {
        [rng.random_range(0..w.categories.len()) as u16, rng.random_range(0..w.categories.len()) as u16]
    };
    User { id: 0, age, gender, region, interests }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn world_follows_the_preset() {
        let c = Config::default().check().unwrap();
        let w = World::generate(&c);
        assert_eq!(w.users.len(), 200);
        assert_eq!(w.videos.len(), 3000);
        assert!(w.users.iter().all(|u| (18..30).contains(&u.age)));
        assert!(w.users.iter().all(|u| u.interests[0] != u.interests[1]));
        assert!(w.videos.iter().all(|v| v.category < 8 && v.creator < 20 && v.duration_s == 6.0));
        let mean_views = w.videos.iter().map(|v| v.views as f64).sum::<f64>() / w.videos.len() as f64;
        // Initial views ~ Normal(50, 10), plus the history's views: about 2 per video.
        assert!((50.0..56.0).contains(&mean_views), "{mean_views}");
        // The prototype's figure: about 6,100 history rows.
        assert!((5_500..6_700).contains(&w.history.len()), "{}", w.history.len());
    }

    #[test]
    fn same_seed_same_world_other_seed_other_world() {
        let c = Config::default().check().unwrap();
        let a = World::generate(&c);
        let b = World::generate(&c);
        assert_eq!(a.users, b.users);
        assert_eq!(a.videos, b.videos);
        assert_eq!(a.history, b.history);
        let d = World::generate(&c.with_seed(43));
        assert_ne!(a.users, d.users);
    }

    #[test]
    fn prototype_interest_draws_may_repeat() {
        let c = Config::from_toml_str("[world]\ndistinct_interests = false\nn_users = 2000\n", &[]).unwrap();
        let w = World::generate(&c);
        let repeats = w.users.iter().filter(|u| u.interests[0] == u.interests[1]).count();
        // With 8 categories 1/8 of users repeat: 250 expected, sd ~15.
        assert!((170..330).contains(&repeats), "{repeats}");
    }
}
