//! Hostile input: every case runs the real binary and checks that it ends by exiting (never
//! by a panic or a signal), with the documented outcome. To add a case, add a row to
//! `CASES` (or a test below for cases that need set-up: checkpoints, locks, signals).

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

fn fypsim() -> Command {
    let mut c = Command::cargo_bin("fypsim").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// What a case must end with.
#[derive(Clone, Copy)]
enum Expect {
    /// Exit 0, and stdout contains this.
    Ok(&'static str),
    /// Exit 1, and stderr contains this.
    Fails(&'static str),
}

/// One hostile invocation: `fypsim ARGS...`, where `{out}` stands for a fresh folder.
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    expect: Expect,
}

const SMOKE: &str = "configs/smoke.toml";

const CASES: &[Case] = &[
    // Class 1: a user who has seen every video.
    Case {
        name: "a tiny catalogue that users exhaust",
        args: &["run", SMOKE, "--quiet", "--out", "{out}", "--set", "world.n_videos=50", "--set", "train.episodes=400"],
        expect: Expect::Ok("results:"),
    },
    Case {
        name: "exhausted users under the random baseline, lockstep",
        args: &[
            "run",
            SMOKE,
            "--quiet",
            "--out",
            "{out}",
            "--set",
            "world.n_videos=20",
            "--set",
            "train.episodes=200",
            "--set",
            "train.sessions=4",
            "--set",
            "train.checkpoint_every=0",
            "--set",
            "policy=random",
        ],
        expect: Expect::Ok("results:"),
    },
    // Class 6: sizes without bounds.
    Case {
        name: "four billion users",
        args: &["run", SMOKE, "--out", "{out}", "--set", "world.n_users=4000000000"],
        expect: Expect::Fails("of memory, more than this machine's"),
    },
    Case {
        name: "a calendar of a million users over ten years",
        args: &["run", SMOKE, "--out", "{out}", "--set", "world.n_users=1000000", "--set", "calendar.days=3650"],
        expect: Expect::Fails("population runs"),
    },
    Case {
        name: "a history std of 1e308",
        args: &["run", SMOKE, "--out", "{out}", "--set", "history.interactions_std=1e308"],
        expect: Expect::Fails("`history.interactions_std`"),
    },
    Case {
        name: "a replay buffer of 1e15 transitions",
        args: &["run", SMOKE, "--out", "{out}", "--set", "dqn.replay_capacity=1000000000000000"],
        expect: Expect::Fails("`dqn.replay_capacity`"),
    },
    Case {
        name: "1e12 neighbours",
        args: &["run", SMOKE, "--out", "{out}", "--set", "candidates.neighbours=1000000000000"],
        expect: Expect::Fails("`candidates.neighbours`"),
    },
    Case {
        name: "1e18 evaluation episodes",
        args: &["run", SMOKE, "--out", "{out}", "--set", "train.eval_episodes=1000000000000000000"],
        expect: Expect::Fails("`train.eval_episodes`"),
    },
    Case {
        name: "the widest documented network",
        args: &["run", SMOKE, "--out", "{out}", "--set", "dqn.hidden=[65536, 65536]"],
        expect: Expect::Fails("Q-networks"),
    },
    // Class 7: numbers that overflow.
    Case {
        name: "a learning rate of 1e20",
        args: &["run", SMOKE, "--quiet", "--out", "{out}", "--set", "dqn.lr=1e20", "--set", "train.episodes=200"],
        expect: Expect::Fails("training diverged"),
    },
    Case {
        name: "scores of 1e308",
        args: &["run", SMOKE, "--out", "{out}", "--set", "scores.watched=1e308"],
        expect: Expect::Fails("`scores.watched`"),
    },
    Case {
        name: "rewards of 1e308",
        args: &["run", SMOKE, "--out", "{out}", "--set", "env.reward_liked=1e308"],
        expect: Expect::Fails("`env.reward_liked`"),
    },
    Case {
        name: "initial views of 1e308",
        args: &["run", SMOKE, "--out", "{out}", "--set", "world.initial_views_mean=1e308"],
        expect: Expect::Fails("`world.initial_views_mean`"),
    },
    // Class 10: the smaller ones.
    Case {
        name: "a baseline listed twice",
        args: &["run", SMOKE, "--out", "{out}", "--set", "train.baselines=[\"random\", \"random\"]"],
        expect: Expect::Fails("distinct baselines"),
    },
    Case {
        name: "bench with no steps",
        args: &["bench", SMOKE, "--steps", "0"],
        expect: Expect::Fails("--steps must be at least 1"),
    },
    Case {
        name: "bench with no repeats",
        args: &["bench", SMOKE, "--repeats", "0"],
        expect: Expect::Fails("--repeats must be at least 1"),
    },
    Case {
        name: "resume of a folder that does not exist",
        args: &["run", "--resume", "{out}/nothing-here"],
        expect: Expect::Fails("cannot resume"),
    },
    Case {
        name: "a config that is a folder",
        args: &["run", "configs", "--out", "{out}"],
        expect: Expect::Fails("cannot read config"),
    },
    Case {
        name: "a user id out of range",
        args: &["inspect", SMOKE, "--user", "999999"],
        expect: Expect::Fails("does not exist"),
    },
];

/// Runs `fypsim args` and checks that it exited by itself, with no panic message.
fn run_checked(args: &[String]) -> Output {
    let o = fypsim().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code().is_some(), "fypsim {args:?} was killed by a signal: {:?}\n{stderr}", o.status);
    assert!(!stderr.contains("panicked"), "fypsim {args:?} panicked:\n{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "fypsim {args:?} panicked:\n{stderr}");
    o
}

fn expand(args: &[&str], out: &Path) -> Vec<String> {
    args.iter().map(|a| a.replace("{out}", &out.display().to_string())).collect()
}

#[test]
fn no_hostile_input_panics_or_kills_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    for (k, case) in CASES.iter().enumerate() {
        let out = tmp.path().join(format!("case{k}"));
        let o = run_checked(&expand(case.args, &out));
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        match case.expect {
            Expect::Ok(text) => {
                assert!(o.status.success(), "{}: expected success, got {:?}\n{stderr}", case.name, o.status);
                assert!(stdout.contains(text), "{}: stdout lacks {text:?}:\n{stdout}", case.name);
            }
            Expect::Fails(text) => {
                assert_eq!(o.status.code(), Some(1), "{}: expected exit 1\n{stdout}\n{stderr}", case.name);
                // A run that fails after it started keeps its config.toml (written first).
                if text == "training diverged" {
                    assert!(out.join("config.toml").is_file(), "{}: no config.toml in the failed run's folder", case.name);
                }
                assert!(stderr.contains(text), "{}: stderr lacks {text:?}:\n{stderr}", case.name);
                // One error, said once.
                assert_eq!(stderr.matches("error:").count(), 1, "{}: the error is printed more than once:\n{stderr}", case.name);
            }
        }
    }
}

fn smoke(out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["run", SMOKE, "--quiet", "--out"].iter().map(|s| s.to_string()).collect();
    args.push(out.display().to_string());
    for e in extra {
        args.push("--set".into());
        args.push(e.to_string());
    }
    run_checked(&args)
}

fn resume(dir: &Path) -> Output {
    run_checked(&["run".into(), "--resume".into(), dir.display().to_string(), "--quiet".into()])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// An interrupted smoke run: 10 of its episodes done and checkpointed.
fn interrupted(dir: &Path, extra: &[&str]) {
    let mut args: Vec<String> =
        ["run", SMOKE, "--quiet", "--max-episodes", "10", "--out"].iter().map(|s| s.to_string()).collect();
    args.push(dir.display().to_string());
    for e in extra {
        args.push("--set".into());
        args.push(e.to_string());
    }
    let o = run_checked(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn run_folders_are_tied_to_their_config_and_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    interrupted(&dir, &[]);

    // A new run over an interrupted one is refused, and says how to go on.
    let o = smoke(&dir, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds an interrupted run") && stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert!(dir.join("checkpoint/MANIFEST.json").is_file(), "the checkpoint is untouched");

    // A hand-edited config.toml is not resumed under.
    let path = dir.join("config.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("seed = 7", "seed = 8")).unwrap();
    let o = resume(&dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match the config"), "{}", stderr(&o));
    // Restored, it resumes.
    std::fs::write(&path, &original).unwrap();
    let o = resume(&dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("summary.json").is_file());
}

#[test]
fn a_multi_seed_rerun_with_other_settings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seeds");
    let o = smoke(&dir, &["train.seeds=[1, 2]", "train.episodes=5", "train.eval_every=0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let o = smoke(&dir, &["train.seeds=[1, 2]", "train.episodes=6", "train.eval_every=0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds a multi-seed run of another config"), "{}", stderr(&o));
    // The same settings finish it, keeping the seeds already done.
    let o = smoke(&dir, &["train.seeds=[1, 2]", "train.episodes=5", "train.eval_every=0"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn damaged_checkpoints_are_named_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    interrupted(&dir, &[]);
    let agent = dir.join("checkpoint/agent.ot");
    let good = std::fs::read(&agent).unwrap();

    // The same size, one byte flipped in the middle.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    std::fs::write(&agent, &flipped).unwrap();
    let o = resume(&dir);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("agent.ot is damaged") && e.contains("SHA-256"), "{e}");

    // Truncated: named, in a few lines (no page of C++ stack frames).
    std::fs::write(&agent, &good[..good.len() / 3]).unwrap();
    let o = resume(&dir);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("agent.ot is damaged") && e.lines().count() <= 3, "{e}");

    // A record segment damaged or missing is named too.
    std::fs::write(&agent, &good).unwrap();
    let segment = std::fs::read_dir(dir.join("checkpoint-records")).unwrap().next().unwrap().unwrap().path();
    let records = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &records[..records.len() - 1]).unwrap();
    let o = resume(&dir);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("checkpoint-records/000000-to-episode-000000010.json is damaged"), "{e}");
    std::fs::remove_file(&segment).unwrap();
    let e = stderr(&resume(&dir));
    assert!(e.contains("000000-to-episode-000000010.json is missing"), "{e}");

    // Whole again, it resumes.
    std::fs::write(&segment, &records).unwrap();
    assert!(resume(&dir).status.success());
}

/// A checkpoint of format 2 (every record in `progress.json`, no segments), as fypsim
/// wrote before record segments, still resumes, to the same results.
#[test]
fn checkpoints_of_format_2_still_resume() {
    use fypsim::experiment::checkpoint::{FileEntry, Manifest};
    use fypsim::files::sha256;
    let tmp = tempfile::tempdir().unwrap();
    let (whole, dir) = (tmp.path().join("whole"), tmp.path().join("run"));
    let settings = ["output.wall_time=false"];
    assert!(smoke(&whole, &settings).status.success());
    interrupted(&dir, &settings);
    // Fold the segments back into progress.json and rewrite the manifest as format 2.
    let ck = dir.join("checkpoint");
    let mut progress: serde_json::Value = serde_json::from_slice(&std::fs::read(ck.join("progress.json")).unwrap()).unwrap();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoint-records")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for name in &names {
        let seg: serde_json::Value = serde_json::from_slice(&std::fs::read(name).unwrap()).unwrap();
        for key in ["episodes", "steps", "curve"] {
            let more = seg[key].as_array().unwrap().clone();
            progress[key].as_array_mut().unwrap().extend(more);
        }
    }
    std::fs::remove_dir_all(dir.join("checkpoint-records")).unwrap();
    let bytes = serde_json::to_vec(&progress).unwrap();
    std::fs::write(ck.join("progress.json"), &bytes).unwrap();
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(ck.join("MANIFEST.json")).unwrap()).unwrap();
    manifest.format = 2;
    manifest.records.clear();
    manifest.files.insert("progress.json".into(), FileEntry { bytes: bytes.len() as u64, sha256: sha256(&bytes) });
    std::fs::write(ck.join("MANIFEST.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let text = std::fs::read_to_string(ck.join("MANIFEST.json")).unwrap();
    assert!(!text.contains("records") && text.contains("\"format\": 2"), "{text}");

    let o = resume(&dir);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["episodes.csv", "eval.csv", "baselines.csv", "eval_episodes.csv"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(dir.join(f)).unwrap(), "{f} differs");
    }
    // Its next checkpoint is written in format 3.
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(ck.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest.format, 3);
}

#[test]
fn a_locked_run_folder_is_left_to_its_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    interrupted(&dir, &[]);
    let _held = fypsim::experiment::run::RunLock::acquire(&dir).unwrap();
    let o = resume(&dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("another fypsim process is working in"), "{}", stderr(&o));
}

#[test]
fn sweep_grids_with_repeated_or_colliding_values_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, grid: &str| -> PathBuf {
        let p = tmp.path().join(name);
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(SMOKE);
        std::fs::write(&p, format!("base = {:?}\nseeds = [1]\n[grid]\n{grid}\n", base.display().to_string())).unwrap();
        p
    };
    let dry = |sweep: &Path| run_checked(&["sweep".into(), sweep.display().to_string(), "--dry-run".into()]);
    let o = dry(&write("dup.toml", "\"dqn.lr\" = [0.001, 0.001]"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("twice"), "{}", stderr(&o));
    // Two distinct values that a lossy folder name would have merged.
    let o = dry(&write("names.toml", "\"output.results_dir\" = [\"a b\", \"a-b\"]"));
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("output.results_dir=a%20b/seed1") && stdout.contains("output.results_dir=a-b/seed1"), "{stdout}");
}

/// A smoke run into `out` with `settings`, sent SIGINT `delay_ms` after `ready` appears in
/// its folder (polled every `poll_ms`, for at most `wait_s` seconds); its output.
fn interrupted_smoke(out: &Path, settings: &[&str], ready: &str, wait_s: u64, poll_ms: u64, delay_ms: u64) -> Output {
    signalled_smoke(out, settings, ready, (wait_s, poll_ms, delay_ms), libc::SIGINT)
}

/// The same with `signal` (SIGINT or SIGTERM).
fn signalled_smoke(
    out: &Path,
    settings: &[&str],
    ready: &str,
    (wait_s, poll_ms, delay_ms): (u64, u64, u64),
    signal: i32,
) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fypsim"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(["run", SMOKE, "--quiet", "--out"]).arg(out);
    for s in settings {
        cmd.args(["--set", s]);
    }
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = std::time::Instant::now();
    while !out.join(ready).exists() && started.elapsed().as_secs() < wait_s {
        std::thread::sleep(std::time::Duration::from_millis(poll_ms));
    }
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    child.wait_with_output().unwrap()
}

/// SIGTERM (a scheduler's stop) checkpoints and says how to go on, as Ctrl-C does.
#[test]
fn sigterm_checkpoints_like_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = ["train.episodes=3000", "train.eval_every=0", "train.checkpoint_every=0", "output.steps=false"];
    let cut = tmp.path().join("cut");
    let o = signalled_smoke(&cut, &settings, "config.toml", (60, 20, 1500), libc::SIGTERM);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!cut.join("summary.json").exists(), "the run finished before the signal; make it longer\n{stdout}");
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("fypsim run --resume") && cut.join("checkpoint/MANIFEST.json").is_file(), "{stdout}");
}

#[test]
fn sigint_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = ["train.episodes=3000", "train.eval_every=0", "train.checkpoint_every=0", "output.steps=false"];
    let whole = tmp.path().join("whole");
    assert!(smoke(&whole, &settings).status.success());

    let cut = tmp.path().join("cut");
    // Training has started once the baselines are evaluated; give it a moment more.
    let o = interrupted_smoke(&cut, &settings, "config.toml", 60, 20, 1500);
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!cut.join("summary.json").exists(), "the run finished before the signal; make it longer\n{stdout}");
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{err}");
    assert!(stdout.contains("interrupted after episode") && stdout.contains("fypsim run --resume"), "{stdout}");
    assert!(cut.join("checkpoint/MANIFEST.json").is_file());

    let o = resume(&cut);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["episodes.csv", "eval.csv", "eval_episodes.csv", "baselines.csv"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(cut.join(f)).unwrap(), "{f} differs after the resume");
    }
}

#[test]
fn a_signal_during_the_population_run_stops_it_and_the_resume_repeats_it_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let settings =
        ["policy=greedy", "output.steps=false", "calendar.days=300", "calendar.sessions_per_day=3.0", "calendar.coupling=0.3"];
    let whole = tmp.path().join("whole");
    let started = std::time::Instant::now();
    assert!(smoke(&whole, &settings).status.success());
    let whole_s = started.elapsed().as_secs_f64();

    let cut = tmp.path().join("cut");
    // The population run starts just after the trained policy's evaluation is written.
    let o = interrupted_smoke(&cut, &settings, "eval.csv", 120, 5, 200);
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(
        !cut.join("summary.json").exists(),
        "the run finished before the signal (an uninterrupted one took {whole_s:.1} s); make it longer\n{stdout}"
    );
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{err}");
    assert!(stdout.contains("fypsim run --resume"), "{stdout}");
    assert!(!cut.join("days.csv").exists(), "no population table is written by an interrupted population run");

    let o = resume(&cut);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["episodes.csv", "eval_episodes.csv", "days.csv", "sessions.parquet", "user_weeks.parquet"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(cut.join(f)).unwrap(), "{f} differs after the resume");
    }
}

#[test]
fn learning_across_sessions_resumes_from_its_last_finished_population_run_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = [
        "output.steps=false",
        "train.checkpoint_every=0",
        "calendar.days=4",
        "calendar.train_runs=4",
        "calendar.coupling=0.3",
        "calendar.return_reward=1.0",
    ];
    let whole = tmp.path().join("whole");
    let started = std::time::Instant::now();
    assert!(smoke(&whole, &settings).status.success());
    let whole_s = started.elapsed().as_secs_f64();
    let runs = std::fs::read_to_string(whole.join("calendar_training.csv")).unwrap();
    assert_eq!(runs.lines().count(), 5, "a row per learning run\n{runs}");
    assert_eq!(
        runs.lines().next().unwrap(),
        "run,sessions_per_user_day,watch_s_per_user,reward_per_session,day7_retention,steps,updates,mean_loss,epsilon",
        "docs/run-folder.md's columns"
    );

    let cut = tmp.path().join("cut");
    // The first checkpoint is training's final one; each learning run (about 2 s) then
    // checkpoints when it is done: the signal comes during the second.
    let o = interrupted_smoke(&cut, &settings, "checkpoint/MANIFEST.json", 120, 5, 2500);
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(
        !cut.join("summary.json").exists(),
        "the run finished before the signal (an uninterrupted one took {whole_s:.1} s); make it longer\n{stdout}"
    );
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{err}");
    let o = resume(&cut);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["calendar_training.csv", "eval_episodes.csv", "days.csv", "sessions.parquet"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(cut.join(f)).unwrap(), "{f} differs after the resume");
    }
}

#[test]
fn result_files_are_byte_identical_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    assert!(smoke(&dir, &[]).status.success());
    let first = tmp.path().join("first");
    std::fs::rename(&dir, &first).unwrap();
    assert!(smoke(&dir, &[]).status.success());
    let mut compared = 0;
    for entry in std::fs::read_dir(&first).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        // Wall-clock figures live in timing.json alone (and in the checkpoint's state,
        // which a resume carries on); config.toml holds the provenance.
        if ["timing.json", "checkpoint", "checkpoint-records", ".lock"].contains(&name.as_str()) {
            continue;
        }
        assert_eq!(std::fs::read(first.join(&name)).unwrap(), std::fs::read(dir.join(&name)).unwrap(), "{name} differs");
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} files compared");
    let timing: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("timing.json")).unwrap()).unwrap();
    assert!(timing["steps_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn small_promises_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let o = smoke(&dir, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    // smoke trains 30 episodes: the window says so.
    assert!(stdout.contains("over the last 30 episodes"), "{stdout}");
    let o = run_checked(&["eval".into(), dir.display().to_string(), "--episodes".into(), "0".into()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--episodes must be at least 1"), "{}", stderr(&o));
    // A report over one seed prints "n/a" where an interval is undefined, never NaN.
    let o = run_checked(&["report".into(), tmp.path().display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("n/a") && !out.contains("NaN"), "{out}");
    // report.csv too: an undefined figure is an empty cell.
    let csv = std::fs::read_to_string(tmp.path().join("report.csv")).unwrap();
    assert!(!csv.contains("NaN") && csv.lines().count() >= 2, "{csv}");
    // A count too large to hold is refused with the estimate (it aborted on allocation).
    let o = run_checked(&["eval".into(), dir.display().to_string(), "--episodes".into(), "1000000000000000".into()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--episodes 1000000000000000") && stderr(&o).contains("memory"), "{}", stderr(&o));
    // A finished run is not overwritten.
    let o = smoke(&dir, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already holds a finished run"), "{}", stderr(&o));
    // Its config.toml repeats it, file for file.
    let again = tmp.path().join("again");
    let o = run_checked(&[
        "run".into(),
        dir.join("config.toml").display().to_string(),
        "--quiet".into(),
        "--out".into(),
        again.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["episodes.csv", "eval.csv", "eval_episodes.csv", "baselines.csv"] {
        assert!(std::fs::read(dir.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(), "{f} differs");
    }
    // summary.json too, but for the folder it names.
    let summary = |d: &Path| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("results_dir");
        v
    };
    assert_eq!(summary(&dir), summary(&again));
    // A run that fails before writing anything does not point at files.
    let o = smoke(&tmp.path().join("none"), &["dqn.device=\"cuda\""]);
    if o.status.code() == Some(1) {
        assert!(!stderr(&o).contains("files written so far"), "{}", stderr(&o));
    }
}

/// A write that fails (a disk that fills up: the file-size limit of the process) ends the
/// run with an error that names the file and says where the files written so far are;
/// those stay whole.
#[test]
fn a_failed_write_names_the_file_and_keeps_what_was_written() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fypsim"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(["run", SMOKE, "--quiet", "--out"]).arg(&out);
    // SAFETY: setrlimit and signal are async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit { rlim_cur: 20_000, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_FSIZE, &r);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("files written so far are in") && err.contains("File too large"), "{err}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(fypsim::config::Config::from_toml_str(&config, &[]).is_ok(), "config.toml is whole");
    assert!(!err.contains("panicked"), "{err}");
}

/// One SIGINT stops `fypsim eval` after the current episode (it said so, and went on until
/// a second signal): it exits 130 within seconds and writes nothing.
#[test]
fn one_sigint_stops_eval_after_the_current_episode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    assert!(smoke(&dir, &[]).status.success());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fypsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", &dir.display().to_string(), "--episodes", "3000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sent = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("stopping the evaluation") && err.contains("interrupted"), "{err}");
    assert!(sent.elapsed().as_secs() < 20, "took {:?} after the signal", sent.elapsed());
    assert!(!dir.join("eval_saved_3000000.json").exists());
}

/// `fypsim ARGS`, sent `signals` (each after its delay in ms) once `ready` exists (polled
/// for at most `wait_s` seconds); its output.
fn signalled(args: &[String], ready: &Path, wait_s: u64, signals: &[(u64, i32)]) -> Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fypsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !ready.exists() && started.elapsed().as_secs() < wait_s {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for &(delay_ms, signal) in signals {
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
    }
    child.wait_with_output().unwrap()
}

fn smoke_args(out: &Path, settings: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", SMOKE, "--quiet", "--out"].iter().map(|s| s.to_string()).collect();
    args.push(out.display().to_string());
    for s in settings {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

/// docs/run-folder.md: a second signal quits at once (exit 130), keeping the last
/// checkpoint. The first lands in a long periodic evaluation (which finishes its episodes
/// before the run stops), so the second finds the run still going.
#[test]
fn a_second_signal_quits_at_once_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cut");
    let settings = [
        "train.episodes=3000",
        "train.eval_every=2",
        "train.eval_episodes=4000",
        "train.checkpoint_every=2",
        "train.baselines=[]",
        "output.steps=false",
    ];
    let sent = std::time::Instant::now();
    let o = signalled(
        &smoke_args(&out, &settings),
        &out.join("checkpoint/MANIFEST.json"),
        120,
        &[(300, libc::SIGINT), (20, libc::SIGINT)],
    );
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{err}");
    assert!(err.contains("stopping now (the last checkpoint is kept)"), "the second signal did not quit at once:\n{err}");
    assert!(!stdout.contains("interrupted after episode"), "the run stopped by the first signal's path:\n{stdout}");
    assert!(sent.elapsed().as_secs() < 110);
    // The checkpoint kept is whole: a resume verifies it and goes on from it.
    let o = run_checked(&[
        "run".into(),
        "--resume".into(),
        out.display().to_string(),
        "--quiet".into(),
        "--max-episodes".into(),
        "1".into(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", stderr(&o));
    assert!(stdout.contains("stopped after episode"), "{stdout}");
}

/// docs/run-folder.md: a signal stops a sweep from starting runs, its run in flight
/// checkpoints, and the same command continues it to the results of an uninterrupted sweep.
#[test]
fn a_signalled_sweep_checkpoints_its_run_and_the_same_command_continues_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(SMOKE);
    let file = tmp.path().join("cut.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"cut\"\nbase = {:?}\nseeds = [1, 2]\n[grid]\n\"dqn.lr\" = [0.001]\n[set]\n\"train.episodes\" = 3000\n\
             \"train.eval_every\" = 0\n\"train.checkpoint_every\" = 0\n\"output.steps\" = false\n",
            base.display().to_string()
        ),
    )
    .unwrap();
    let sweep = |out: &Path| -> Vec<String> {
        ["sweep", &file.display().to_string(), "--jobs", "1", "--out", &out.display().to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    let o = run_checked(&sweep(&whole));
    assert!(o.status.success(), "{}", stderr(&o));

    let first = cut.join("dqn.lr=0.001/seed1");
    let o = signalled(&sweep(&cut), &first.join("config.toml"), 60, &[(1500, libc::SIGINT)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{}", stderr(&o));
    assert!(!first.join("summary.json").exists(), "the run finished before the signal; make it longer\n{stdout}");
    assert!(first.join("checkpoint/MANIFEST.json").is_file(), "{stdout}");
    assert!(!cut.join("dqn.lr=0.001/seed2/summary.json").exists(), "a run started after the signal\n{stdout}");
    assert!(stdout.contains("1 runs stopped with a checkpoint, 1 not started; run the same command to continue"), "{stdout}");

    let o = run_checked(&sweep(&cut));
    assert!(o.status.success(), "{}", stderr(&o));
    for seed in ["seed1", "seed2"] {
        for f in ["episodes.csv", "eval_episodes.csv", "baselines.csv"] {
            let path = |root: &Path| root.join("dqn.lr=0.001").join(seed).join(f);
            assert_eq!(std::fs::read(path(&whole)).unwrap(), std::fs::read(path(&cut)).unwrap(), "{seed}/{f} differs");
        }
    }
}

/// docs/run-folder.md: a run with sessions in lockstep stops on a signal without a
/// checkpoint, says it cannot be resumed, and `--resume` refuses it with the reason.
#[test]
fn a_signalled_lockstep_run_stops_without_a_checkpoint_and_is_not_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cut");
    let settings =
        ["train.episodes=3000", "train.sessions=4", "train.eval_every=0", "train.checkpoint_every=0", "output.steps=false"];
    let o = signalled(&smoke_args(&out, &settings), &out.join("config.toml"), 60, &[(1500, libc::SIGINT)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stdout}\n{}", stderr(&o));
    assert!(!out.join("summary.json").exists(), "the run finished before the signal; make it longer\n{stdout}");
    assert!(stdout.contains("cannot be resumed") && stdout.contains("run again to start afresh"), "{stdout}");
    assert!(!out.join("checkpoint").exists(), "a lockstep run wrote a checkpoint");
    let o = resume(&out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("need train.sessions = 1"), "{}", stderr(&o));
}

/// docs/run-folder.md: `fypsim check`, `serve` and `sweep` run the memory preflight too,
/// before anything starts: a world too large for this machine is refused with its estimate.
#[test]
fn check_serve_and_sweep_refuse_a_world_too_large_for_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("huge.toml");
    std::fs::write(&config, "seed = 1\n[world]\nn_users = 4000000000\n").unwrap();
    let sweep = tmp.path().join("huge-sweep.toml");
    std::fs::write(&sweep, format!("name = \"huge\"\nbase = {:?}\nseeds = [1, 2]\n", config.display().to_string())).unwrap();
    let c = config.display().to_string();
    let s = sweep.display().to_string();
    let out = tmp.path().join("out").display().to_string();
    for args in [
        vec!["check", c.as_str()],
        vec!["serve", "--arm", "A=greedy", "--port", "0", "--config", c.as_str()],
        vec!["sweep", s.as_str(), "--out", out.as_str()],
    ] {
        let o = run_checked(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("more than this machine's"), "{args:?}: {err}");
    }
    assert!(!tmp.path().join("out").join("seed1").join("summary.json").exists());
}
