//! The logged history the world starts with (docs/model.md: Logged history).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Normal, Zipf};

use crate::config::{Checked, Popularity};

use super::{Interaction, World};
use crate::model::response::Action;

/// Appends every user's logged history to `world.history`, counting views and leaving each
/// user's clock and next session id where the history ends.
pub fn generate_history(config: &Checked, world: &mut World, rng: &mut impl Rng) {
    let h = &config.history;
    let count = Normal::new(h.interactions_mean, h.interactions_std).expect("validated: std >= 0");
    let gap = Normal::new(h.session_gap_mean_s, h.session_gap_std_s).expect("validated: std >= 0");
    let n_videos = world.videos.len();
    // Popularity: uniform, or Zipf over a random ranking of the catalogue (so the popular
    // videos are not simply the lowest ids).
    let zipf = match h.popularity {
        Popularity::Uniform => None,
        Popularity::Zipf => {
            let mut ranking: Vec<u32> = (0..n_videos as u32).collect();
            ranking.shuffle(rng);
            let z = Zipf::new(n_videos as f64, h.zipf_exponent).expect("validated: n >= 1, s >= 0");
            Some((ranking, z))
        }
    };
    let expected_rows = (h.interactions_mean.max(h.interactions_min as f64) * world.users.len() as f64) as usize;
    world.history.reserve(expected_rows);

    for ui in 0..world.users.len() {
        let n = (count.sample(rng).round().max(0.0) as usize).max(h.interactions_min);
        let mut session = 0u32;
        let mut clock = 0.0f64;
        for _ in 0..n {
            let vi = match &zipf {
                None => rng.random_range(0..n_videos),
                Some((ranking, z)) => ranking[(z.sample(rng) as usize - 1).min(n_videos - 1)] as usize,
            };
            let user = &world.users[ui];
            let (response, dt, ends) = world.model.history_step(user, &world.start.latent[ui], vi as u32, clock, rng);
            if response.counts_view() {
                world.videos[vi].views += 1;
            }
            let timestamp = clock;
            clock += dt;
            world.model.update(&mut world.start.latent[ui], vi as u32, response, false, timestamp);
            let action = if ends { Action::Done } else { response };
            if let Some(log) = world.start.logs.get_mut(vi) {
                log.record(response.counts_view(), world.model.watch_fraction(vi as u32), ends);
            }
            world.history.push(Interaction {
                user: ui as u32,
                video: vi as u32,
                session,
                action,
                score: action.score(&config.scores),
                timestamp,
            });
            if ends {
                session += 1;
                clock += gap.sample(rng).max(0.0);
            }
        }
        world.start.next_session[ui] = session + 1;
        world.start.clock[ui] = clock;
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn zipf_popularity_is_skewed() {
        let c = Config::from_toml_str(
            "[world]\nn_videos = 1000\nn_users = 500\n[history]\npopularity = \"zipf\"\nzipf_exponent = 1.0\n",
            &[],
        )
        .unwrap();
        let w = World::generate(&c);
        let mut counts = vec![0usize; 1000];
        for i in &w.history {
            counts[i.video as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: usize = counts.iter().sum();
        // Zipf(1) over 1,000 items: the top 10 hold about 39% of the draws (H_10 / H_1000).
        let top10 = counts[..10].iter().sum::<usize>() as f64 / total as f64;
        assert!((0.33..0.45).contains(&top10), "{top10}");
        // And uniform draws do not concentrate so.
        let u = World::generate(&Config::from_toml_str("[world]\nn_videos = 1000\nn_users = 500\n", &[]).unwrap());
        let mut uc = vec![0usize; 1000];
        for i in &u.history {
            uc[i.video as usize] += 1;
        }
        uc.sort_unstable_by(|a, b| b.cmp(a));
        assert!((uc[..10].iter().sum::<usize>() as f64 / u.history.len() as f64) < 0.05);
    }
    use crate::world::{Action, World};

    #[test]
    fn sessions_increment_and_time_moves_forward() {
        let c = Config::default().check().unwrap();
        let w = World::generate(&c);
        for u in 0..w.users.len() as u32 {
            let rows: Vec<_> = w.history.iter().filter(|i| i.user == u).collect();
            assert!(rows.len() >= 5);
            for pair in rows.windows(2) {
                assert!(pair[1].timestamp > pair[0].timestamp);
                let expected = pair[0].session + u32::from(pair[0].action == Action::Done);
                assert_eq!(pair[1].session, expected);
            }
        }
        // Scores follow the table.
        for i in &w.history {
            assert_eq!(i.score, i.action.score(&c.scores));
            assert_ne!(i.action, Action::SessionEnd);
        }
    }
}
