//! Criterion benches of the simulator's kernels at the prototype's size
//! (`configs/default.toml`): candidate generation (exact and from neighbour lists), one
//! interaction's incremental update, the neighbour-list build, one environment step and
//! one DQN gradient step.
//!
//!   scripts/dev.sh criterion            (or: cargo bench --bench kernels)
//!
//! `fypsim bench` gives the same figures as one table or JSON for any config; these add
//! criterion's statistics (confidence intervals, change against the last run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand::Rng;

use fypsim::agent::dqn::DqnAgent;
use fypsim::config::{Checked, Config};
use fypsim::env::Env;
use fypsim::platform::candidates::{Accumulation, CandidateGenerator, NeighbourIndex};
use fypsim::platform::matrix::InteractionMatrix;
use fypsim::rng::{stream, Stream};
use fypsim::world::World;

fn config() -> Checked {
    Config::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/default.toml")), &[])
        .expect("configs/default.toml is valid")
}

fn matrix_of(world: &World) -> InteractionMatrix {
    InteractionMatrix::from_triplets(
        world.videos.len(),
        world.users.len(),
        world.history.iter().map(|i| (i.video, i.user, i.score)),
    )
}

fn kernels(c: &mut Criterion) {
    let config = config();
    let world = World::generate(&config);
    let matrix = matrix_of(&world);
    let n_users = world.users.len();

    c.bench_function("matrix build (default world)", |b| b.iter(|| black_box(matrix_of(&world))));

    let index = NeighbourIndex::build(&matrix, config.candidates.neighbours, 1);
    c.bench_function("neighbour lists build (1 thread)", |b| {
        b.iter(|| black_box(NeighbourIndex::build(&matrix, config.candidates.neighbours, 1)))
    });

    let mut g = CandidateGenerator::new(world.videos.len());
    let mut rng = stream(1, Stream::Eval);
    c.bench_function("candidates exact / request", |b| {
        b.iter(|| {
            let u = rng.random_range(0..n_users);
            black_box(g.candidates(&matrix, None, &world.users[u], &world.videos, &world.start.views, &config.candidates))
        })
    });
    c.bench_function("candidates from neighbour lists / request", |b| {
        b.iter(|| {
            let u = rng.random_range(0..n_users);
            black_box(g.candidates(&matrix, Some(&index), &world.users[u], &world.videos, &world.start.views, &config.candidates))
        })
    });

    // The same request late in a run: a training run's interactions land in the matrix,
    // so the default run's 500 episodes of shown videos make every request touch most of
    // the catalogue. Grown here by 20,000 greedy steps (slot 0 is the best final score).
    let mut grown = Env::new(&config, world.clone());
    let mut grng = stream(2, Stream::Responses);
    grown.reset_random(&mut grng);
    for _ in 0..20_000 {
        let o = grown.step(0, &mut grng);
        if o.terminal || o.truncated {
            grown.reset_random(&mut grng);
        }
    }
    c.bench_function("candidates exact / request, after 20,000 greedy steps", |b| {
        b.iter(|| {
            let u = rng.random_range(0..n_users);
            black_box(g.candidates(
                &grown.matrix,
                None,
                &grown.world.users[u],
                &grown.world.videos,
                &grown.sim().views,
                &config.candidates,
            ))
        })
    });

    // Both accumulations forced, on both worlds: what the automatic choice chooses between.
    for (label, mx) in [("generated world", &matrix), ("after 20,000 greedy steps", &grown.matrix)] {
        for how in [Accumulation::Sparse, Accumulation::Dense] {
            c.bench_function(&format!("top raw scores, {how:?} accumulation / request, {label}"), |b| {
                b.iter(|| {
                    let u = rng.random_range(0..n_users) as u32;
                    black_box(g.top_raw_with(mx, u, config.candidates.count, how))
                })
            });
        }
    }

    let mut m = matrix.clone();
    c.bench_function("incremental update / interaction", |b| {
        b.iter(|| {
            let (v, u) = (rng.random_range(0..world.videos.len()) as u32, rng.random_range(0..n_users) as u32);
            m.add(v, u, 1.0)
        })
    });

    // Environment steps from the generated world: a session runs on a fresh copy each
    // time (copied outside the timing), so histories do not grow without bound over
    // criterion's many iterations.
    let base = Env::new(&config, world.clone());
    let mut erng = stream(1, Stream::Responses);
    c.bench_function("env: 50 steps (slot 0) from the generated world", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |env| {
                env.reset_random(&mut erng);
                for _ in 0..50 {
                    let o = env.step(0, &mut erng);
                    if o.terminal || o.truncated {
                        env.reset_random(&mut erng);
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });

    let mut agent = DqnAgent::new(&config).expect("a CPU agent");
    let mut env = Env::new(&config, world.clone());
    let replay = fypsim::tools::bench::filled_replay(&config, &mut env, 512, &mut erng);
    let mut rrng = stream(1, Stream::Replay);
    c.bench_function("DQN update (batch of dqn.batch_size)", |b| {
        b.iter(|| {
            let batch = replay.sample(config.dqn.batch_size, &mut rrng);
            black_box(agent.update(&batch))
        })
    });
}

criterion_group!(benches, kernels);
criterion_main!(benches);
