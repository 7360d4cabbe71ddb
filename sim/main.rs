//! `fypsim`: the command-line front end. It parses arguments, shows progress and prints;
//! all logic lives in the library.

mod args;
mod cmd;
mod progress;

use crate::args::Cli;
use crate::args::Command;
use crate::cmd::bench::cmd_bench;
use crate::cmd::bench::cmd_bench_learn;
use crate::cmd::bench::BenchArgs;
use crate::cmd::check::cmd_check;
use crate::cmd::eval::cmd_eval;
use crate::cmd::inspect::cmd_anatomy;
use crate::cmd::inspect::cmd_inspect;
use crate::cmd::inspect::cmd_world;
use crate::cmd::learn::cmd_learn;
use crate::cmd::ope::cmd_ope;
use crate::cmd::ope::cmd_ope_study;
use crate::cmd::report::cmd_report;
use crate::cmd::report::cmd_report_ab_log;
use crate::cmd::report::cmd_report_by_session;
use crate::cmd::run::cmd_run;
use crate::cmd::serve::cmd_serve;
use crate::cmd::serve::cmd_traffic;
use crate::cmd::sweep::cmd_sweep;
use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Set while `fypsim learn` runs: a signal then stops its training instead of a run's.
static LEARNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set while `fypsim eval` runs: a signal stops the evaluation, which writes nothing.
static EVALUATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> ExitCode {
    // Behave like other Unix tools when the reader goes away (`fypsim ... | head`):
    // end quietly instead of panicking on a broken pipe.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SIGINT and SIGTERM: runs finish their episode, checkpoint and say how to go on; a
    // second signal quits at once.
    let cli = Cli::parse();
    // `serve` and `traffic` handle SIGINT and SIGTERM themselves (draining requests).
    let own_signals = matches!(cli.command, Command::Serve { .. } | Command::Traffic { .. });
    let _ = (!own_signals).then(|| {
        ctrlc::set_handler(|| {
            if fypsim::stop::stop_requested() {
                eprintln!("\nfypsim: stopping now (the last checkpoint is kept)");
                // _exit, not exit: exit runs libtorch's C++ static destructors from this
                // thread while the main thread may be inside libtorch (a segfault or a tch
                // panic). Rust's own buffers are flushed by neither.
                unsafe { libc::_exit(130) }
            }
            fypsim::stop::request_stop();
            if EVALUATING.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("\nfypsim: stopping the evaluation after the current episode (nothing is written)");
            } else if LEARNING.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("\nfypsim: stopping the training (this attempt is not kept; results already in place stay)");
            } else {
                eprintln!("\nfypsim: stopping after the current episode, with a checkpoint (signal again to quit at once)");
            }
        })
    });
    let result = match &cli.command {
        Command::Run { config, out, resume, max_episodes, quiet } => {
            cmd_run(config, out.as_deref(), resume.as_deref(), *max_episodes, *quiet)
        }
        Command::Eval { dir, episodes, choices } => {
            EVALUATING.store(true, std::sync::atomic::Ordering::Relaxed);
            cmd_eval(dir, *episodes, *choices)
        }
        Command::Inspect { config, user } => cmd_inspect(config, *user),
        Command::Anatomy { config, user, policies, episode, out } => cmd_anatomy(config, *user, policies, *episode, out),
        Command::World { config, out } => cmd_world(config, out),
        Command::Check { configs, print } => cmd_check(configs, *print),
        Command::Ope {
            config,
            logging,
            log,
            targets,
            sessions,
            sizes,
            bootstrap,
            ridge,
            switch_tau,
            shrinkage_lambda,
            truth_max,
            out,
        } => cmd_ope(
            config,
            (logging.as_deref(), log.as_deref()),
            targets,
            *sessions,
            sizes.as_deref(),
            (*bootstrap, *ridge, *switch_tau, *shrinkage_lambda),
            *truth_max,
            out.as_deref(),
        ),
        Command::OpeStudy { study, out } => cmd_ope_study(study, out.as_deref()),
        Command::Learn { task } => {
            LEARNING.store(true, std::sync::atomic::Ordering::Relaxed);
            cmd_learn(task)
        }
        Command::Sweep { sweep, out, jobs, shard, dry_run } => {
            cmd_sweep(sweep, out.as_deref(), *jobs, shard.as_deref(), *dry_run)
        }
        Command::Report { ab_log: Some(log), out, control, by_session, ope_targets, config, overrides, bootstrap, .. } => {
            cmd_report_ab_log(
                log,
                (out.as_deref(), control.as_deref(), *by_session),
                ope_targets,
                (config, overrides),
                *bootstrap,
            )
        }
        Command::Report { dir, by_session: true, reference, .. } => {
            cmd_report_by_session(dir.as_deref().expect("clap requires it"), reference)
        }
        Command::Report { dir, ab, .. } => cmd_report(dir.as_deref().expect("clap requires it"), ab.as_deref()),
        Command::Serve {
            arms,
            split,
            port,
            host,
            log,
            config,
            overrides,
            salt,
            threads,
            read_timeout,
            drain,
            learning_checkpoint,
        } => {
            fypsim::serve::http::HttpOptions::new(*threads, *read_timeout, *drain).map_err(anyhow::Error::from).and_then(|http| {
                cmd_serve(
                    arms,
                    split.as_deref(),
                    (host, *port),
                    log.as_deref(),
                    config.as_deref(),
                    overrides,
                    salt,
                    http,
                    *learning_checkpoint,
                )
            })
        }
        Command::Traffic { url, users, duration, concurrency, rate, config, overrides, seed, json, quiet, plan, control } => {
            cmd_traffic(
                fypsim::serve::traffic::TrafficOptions {
                    url: url.clone(),
                    users: *users,
                    duration_s: *duration,
                    concurrency: *concurrency,
                    rate: *rate,
                    seed: *seed,
                    progress: !*quiet && std::io::stderr().is_terminal(),
                },
                config,
                overrides,
                json.as_deref(),
                plan.map(|sessions| (sessions, control.as_deref())),
            )
        }
        Command::Bench { configs, overrides, json, learn: true, every, seeds, .. } => {
            cmd_bench_learn(configs, overrides, *json, *every, seeds)
        }
        Command::Bench { configs, overrides, scaling, json, repeats, steps, kernels_only, .. } => cmd_bench(BenchArgs {
            configs,
            overrides,
            scaling: scaling.as_deref(),
            json: *json,
            repeats: *repeats,
            steps: *steps,
            kernels_only: *kernels_only,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref::<fypsim::Error>(), Some(fypsim::Error::Interrupted)) => {
            eprintln!("fypsim: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
