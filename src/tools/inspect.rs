//! What `fypsim inspect` and `fypsim world` show: a user's profile, history and
//! candidates, and the generated world as tables.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::config::Checked;
use crate::env::Env;
use crate::output::records::{self, frame};
use crate::platform::candidates::CandidateGenerator;
use crate::world::World;
use crate::{Error, Result};

#[derive(Debug, Serialize)]
pub struct Profile {
    pub id: u32,
    pub age: u32,
    pub gender: String,
    pub region: String,
    pub interests: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryRow {
    pub video: u32,
    pub category: String,
    pub session: u32,
    pub action: String,
    pub score: f64,
    pub timestamp: f64,
}

#[derive(Debug, Serialize)]
pub struct SummedRow {
    pub video: u32,
    pub category: String,
    pub score: f64,
}

#[derive(Debug, Serialize)]
pub struct CandidateRow {
    pub video: u32,
    pub category: String,
    pub raw: f64,
    pub final_score: f64,
    pub views: u64,
    pub interest_match: bool,
    /// With users with memory: the hidden quality, E[p] and the expected immediate reward
    /// of showing it now (what the myopic oracle ranks by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_reward: Option<f64>,
}

/// A user's latent state (users with memory), as of the user's clock after the history.
#[derive(Debug, Serialize)]
pub struct LatentReport {
    /// The user's clock, seconds.
    pub clock_s: f64,
    /// Per category: exposure now (satiation), present with satiation on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposure: Vec<(String, f64)>,
    /// Per category: the interest weight, present with interest drift on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interest: Vec<(String, f64)>,
    /// Creators the user follows.
    pub followed: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct UserReport {
    pub profile: Profile,
    /// Every logged interaction, in time order.
    pub history: Vec<HistoryRow>,
    /// The user's row of the item-user matrix: summed scores per video.
    pub summed: Vec<SummedRow>,
    /// The top-k candidates ordered by final score.
    pub candidates: Vec<CandidateRow>,
    /// The latent state, with any dynamic on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent: Option<LatentReport>,
}

/// The profile, history and candidates of one user of the generated world.
pub fn inspect_user(config: &Checked, user: u64) -> Result<UserReport> {
    let world = std::sync::Arc::new(World::generate(config));
    if user >= world.initial_users() as u64 {
        return Err(Error::UnknownUser { user, n_users: world.initial_users() });
    }
    let env = Env::new(config, world);
    let w = &config.world;
    let cat = |c: u16| w.categories[c as usize].clone();
    let u = &env.world.users[user as usize];
    let profile = Profile {
        id: u.id,
        age: u.age,
        gender: w.genders[u.gender as usize].clone(),
        region: w.regions[u.region as usize].clone(),
        interests: u.interests.iter().map(|&c| cat(c)).collect(),
    };
    let history = env
        .world
        .history
        .iter()
        .filter(|i| i.user as u64 == user)
        .map(|i| HistoryRow {
            video: i.video,
            category: cat(env.world.videos[i.video as usize].category),
            session: i.session,
            action: i.action.name().into(),
            score: i.score,
            timestamp: i.timestamp,
        })
        .collect();
    let summed = env
        .matrix
        .user_row(user as u32)
        .iter()
        .map(|(v, s)| SummedRow { video: v, category: cat(env.world.videos[v as usize].category), score: s })
        .collect();
    let dynamics = !config.dynamics.is_off();
    let (model, latent, now) = (&env.world.model, &env.sim().latent[user as usize], env.sim().clock[user as usize]);
    let mut generator = CandidateGenerator::new(env.world.initial_videos());
    let candidates = generator
        .candidates(&env.matrix, env.index(), u, &env.world.videos, &env.sim().views, &config.candidates)
        .into_iter()
        .map(|c| CandidateRow {
            video: c.video,
            category: cat(c.category),
            raw: c.raw,
            final_score: c.final_score,
            views: c.views,
            interest_match: c.interest_match,
            quality: dynamics.then(|| env.world.videos[c.video as usize].quality),
            expected_p: dynamics.then(|| model.expected_p(u, latent, c.video, now)),
            expected_reward: dynamics.then(|| model.expected_reward(u, latent, c.video, now)),
        })
        .collect();
    let per_category =
        |values: &[f64]| -> Vec<(String, f64)> { values.iter().enumerate().map(|(c, &v)| (cat(c as u16), v)).collect() };
    let latent = dynamics.then(|| LatentReport {
        clock_s: now,
        exposure: if latent.satiation.is_empty() {
            Vec::new()
        } else {
            (0..w.categories.len() as u16).map(|c| (cat(c), model.satiation(latent, c, now))).collect()
        },
        interest: per_category(&latent.interest),
        followed: latent.followed.clone(),
    });
    Ok(UserReport { profile, history, summed, candidates, latent })
}

/// Writes users.csv, videos.csv and interactions.csv of the generated world into `dir`.
pub fn write_world(config: &Checked, dir: &Path) -> Result<World> {
    fs::create_dir_all(dir).map_err(Error::io("create folder", dir))?;
    let world = World::generate(config);
    let path = dir.join("users.csv");
    records::write_csv(&mut frame(records::users_frame(&world, config), &path)?, &path)?;
    let path = dir.join("videos.csv");
    records::write_csv(&mut frame(records::videos_frame(&world, config), &path)?, &path)?;
    let path = dir.join("interactions.csv");
    records::write_csv(&mut frame(records::interactions_frame(&world), &path)?, &path)?;
    Ok(world)
}

/// One step of a session's anatomy.
#[derive(Debug, Clone, Serialize)]
pub struct AnatomyStep {
    pub t: u32,
    pub video: u32,
    pub category: String,
    pub response: String,
    pub reward: f64,
    pub watch_s: f64,
    /// E[p] of the shown video and the exposure to its category, before the step.
    pub expected_p: f64,
    pub satiation: f64,
    /// The shown video's hidden quality.
    pub quality: f64,
    /// The session ended after this step.
    pub left: bool,
}

/// One session of `user` under each of `policies`, from the generated world and on the
/// same random numbers (evaluation episode `episode`'s streams), step by step: what the
/// dynamics do to the latent state and the rewards under each policy.
pub fn anatomy(
    config: &Checked,
    user: u64,
    policies: &[crate::config::PolicyKind],
    episode: u64,
) -> Result<Vec<(crate::config::PolicyKind, Vec<AnatomyStep>)>> {
    use crate::rng::{substream, Stream};
    let world = std::sync::Arc::new(World::generate(config));
    if user >= world.initial_users() as u64 {
        return Err(Error::UnknownUser { user, n_users: world.initial_users() });
    }
    let base = Env::new(config, world);
    let cats = &config.world.categories;
    let mut out = Vec::new();
    for &kind in policies {
        if kind.learns() {
            return Err(Error::Other(format!(
                "anatomy shows baselines (an untrained {kind} would say nothing); name policies that do not learn"
            )));
        }
        let mut policy = crate::agent::make_policy(kind, config)?;
        let mut env = base.clone();
        let mut rng = substream(config.seed, Stream::Eval, episode);
        let mut policy_rng = substream(config.seed, Stream::Policy, episode);
        let mut steps = Vec::new();
        env.reset(user as u32);
        let mut record = |t: u32, env: &Env, _: &crate::env::Observation, o: &crate::env::StepOutcome| {
            steps.push(AnatomyStep {
                t,
                video: o.video,
                category: cats[o.category as usize].clone(),
                response: o.response.name().into(),
                reward: o.reward,
                watch_s: o.watch_s,
                expected_p: o.expected_p,
                satiation: o.satiation,
                quality: env.world.videos[o.video as usize].quality,
                left: o.terminal,
            })
        };
        crate::drive::session::play_session(
            &mut env,
            &mut *policy,
            false,
            &mut rng,
            &mut policy_rng,
            &mut 0.0,
            Some(&mut record),
        )?;
        out.push((kind, steps));
    }
    Ok(out)
}
