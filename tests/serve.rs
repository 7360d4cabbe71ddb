//! `fypsim serve`, `fypsim traffic` and `fypsim report --ab-log` end to end over real
//! HTTP: a trained agent against greedy on an ephemeral port, every endpoint, every kind
//! of bad request (the server keeps serving), a kill -9 and a restart on the same log,
//! SIGTERM with requests in flight, and the A/B report of the log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fypsim::serve::log::read;
use fypsim::serve::Record;
use serde_json::{json, Value};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fypsim"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Starts the server; returns it with its base URL once it listens (the caller waits for it).
fn start(run: &Path, log: &Path) -> (Server, String) {
    let b = format!("B={}", run.display());
    let log = log.display().to_string();
    start_with(&["serve", "--arm", "A=greedy", "--arm", &b, "--port", "0", "--salt", "it", "--log", &log])
}

/// Starts `fypsim ARGS` (a server); returns it with its base URL once it listens.
#[allow(clippy::zombie_processes)]
/// A server a test started: killed when the test lets it go, even by failing (a failing
/// test left its servers running).
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_with(args: &[&str]) -> (Server, String) {
    let mut child = Server(bin().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    // Its stderr through a pipe of the test's own (not the harness's): a test that fails
    // and leaves its server behind does not keep the harness waiting on that output.
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the server says where it listens");
        if let Some(rest) = line.strip_prefix("listening on ") {
            let url = rest.split_whitespace().next().unwrap().to_string();
            // Keep draining its output so that it never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, url);
        }
    }
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn decisions(log: &Path) -> Vec<fypsim::serve::Decision> {
    read(log).unwrap().records.into_iter().filter_map(|r| if let Record::Decision(d) = r { Some(d) } else { None }).collect()
}

#[test]
fn serve_traffic_kill_restart_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let log = tmp.path().join("ab");
    let ok = bin().args(["run", "configs/smoke.toml", "--quiet", "--out"]).arg(&run).status().unwrap();
    assert!(ok.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();

    let (mut server, url) = start(&run, &log);
    // A second server on the same log folder is refused: two writers would interleave
    // their decisions in the same sessions.
    let second = bin()
        .args(["serve", "--arm", "A=greedy", "--arm"])
        .arg(format!("B={}", run.display()))
        .args(["--port", "0", "--salt", "it", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains("another fypsim process is working in"), "{err}");
    assert!(err.contains(&format!("process {}", server.id())), "the message names the holder: {err}");
    let _left_waiting = rt.block_on(async {
        let h: Value = c.get(format!("{url}/health")).send().await.unwrap().json().await.unwrap();
        assert_eq!(h["status"], "ok");
        assert_eq!(h["users"], 40);
        assert_eq!(h["arms"].as_array().unwrap().len(), 2);
        // The version's digest: the saved agent file's SHA-256 (its first 12 hex digits).
        let agent = std::fs::read(run.join("checkpoint/agent.ot")).unwrap();
        let digest = &fypsim::files::sha256(&agent)[..12];
        assert_eq!(h["arms"][1]["version"].as_str().unwrap(), format!("dqn@{digest}"), "{h}");
        assert_eq!(h["world"].as_str().unwrap().len(), 64, "the world's SHA-256: {h}");
        assert!(h["videos"].as_u64().unwrap() > 0 && h["salt"] == "it", "{h}");
        assert_eq!((h["live_sessions"].as_u64(), h["pending_feedback"].as_u64()), (Some(0), Some(0)), "{h}");
        assert!(h["log"].as_str().unwrap().ends_with("ab"), "{h}");

        let good = json!({"user": 1});
        let rec = format!("{url}/recommend");
        let fb = format!("{url}/feedback");
        let (s, first) = post(&c, &rec, &good).await;
        assert_eq!(s, 200, "{first}");
        let (s, ack) =
            post(&c, &fb, &json!({"request_id": first["request_id"], "response": "watched", "watch_time_s": 4.0})).await;
        assert_eq!(s, 200, "{ack}");
        // Every kind of bad request: a 4xx with a JSON error naming the problem, and the
        // server goes on serving.
        let raw = |path: &str, body: &'static str, ct: Option<&'static str>| {
            let mut r = c.post(format!("{url}{path}")).body(body);
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            r
        };
        let big = "x".repeat(200_000);
        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
            ("malformed JSON", raw("/recommend", "{\"user\": ", Some("application/json")), 400, ""),
            ("missing field", raw("/recommend", "{}", Some("application/json")), 422, "user"),
            ("wrongly typed", raw("/recommend", "{\"user\": \"seventeen\"}", Some("application/json")), 422, "user"),
            ("unknown field", raw("/recommend", "{\"user\": 1, \"usr\": 2}", Some("application/json")), 422, "usr"),
            ("unknown user", raw("/recommend", "{\"user\": 999}", Some("application/json")), 404, "unknown user 999"),
            ("no content type", raw("/recommend", "{\"user\": 1}", None), 415, "Content-Type"),
            (
                "unknown request id",
                raw("/feedback", "{\"request_id\": \"zz\", \"response\": \"watched\"}", Some("application/json")),
                404,
                "zz",
            ),
            (
                "bad response",
                raw("/feedback", "{\"request_id\": \"zz\", \"response\": \"loved\"}", Some("application/json")),
                422,
                "loved",
            ),
            ("oversized body", c.post(&rec).header("content-type", "application/json").body(big), 413, "limit"),
            ("wrong method", c.get(&rec), 405, "POST"),
            ("unknown path", c.get(format!("{url}/nope")), 404, "/nope"),
        ];
        for (what, req, status, names) in cases {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{what}");
            if status == 405 {
                let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
                assert_eq!(allow.as_deref(), Some("POST"), "{what}: the Allow header");
            }
            let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: the error is not JSON ({e})"));
            let msg = body["error"].as_str().unwrap_or_else(|| panic!("{what}: {body}"));
            assert!(msg.contains(names), "{what}: {msg}");
            let (s, _) = post(&c, &rec, &json!({"user": 2, "new_session": true})).await;
            assert_eq!(s, 200, "after {what}");
        }
        let (s, again) = post(&c, &fb, &json!({"request_id": first["request_id"], "response": "watched"})).await;
        assert_eq!(s, 409, "a repeated request id: {again}");

        // A few users, step by step; one decision is left without feedback.
        for user in 3..13 {
            let (s, r) = post(&c, &rec, &json!({"user": user})).await;
            assert_eq!(s, 200, "{r}");
            assert!(["A", "B"].contains(&r["arm"].as_str().unwrap()));
            let p = r["propensity"].as_f64().unwrap();
            // Greedy and the DQN (served greedily, exploration off) choose with certainty.
            assert_eq!(p, 1.0, "{r}");
            let (s, _) = post(&c, &fb, &json!({"request_id": r["request_id"], "response": "skipped"})).await;
            assert_eq!(s, 200);
        }
        let (s, held) = post(&c, &rec, &json!({"user": 20})).await;
        assert_eq!(s, 200);
        let metrics = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        for needle in [
            "fypsim_http_requests_total{endpoint=\"recommend\",status=\"200\"}",
            "fypsim_decisions_total{arm=",
            "fypsim_http_request_duration_seconds_bucket",
            "fypsim_feedback_total{arm=",
            "fypsim_engine_batch_size_bucket",
            "fypsim_http_requests_in_flight",
        ] {
            assert!(metrics.contains(needle), "{needle} not in /metrics:\n{metrics}");
        }
        held["request_id"].as_str().unwrap().to_string()
    });

    // Simulated users over HTTP.
    let out = bin()
        // Half the world's users: the others have unseen videos left for what follows.
        .args(["traffic", "--url", &url, "--users", "20", "--duration", "2", "--concurrency", "4", "--config"])
        .arg(run.join("config.toml"))
        .arg("-q")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("recommendations") && text.contains("p99"), "{text}");
    // The traffic driver refuses a service of another world.
    let other = bin().args(["traffic", "--url", &url, "--users", "5", "--duration", "1", "-q"]).output().unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("another world"));

    // A decision awaiting feedback when the server dies (the traffic has ended, so it is
    // its user's last; the first user who has not seen every video).
    let held = rt.block_on(async {
        for user in 0..40 {
            let (s, r) = post(&c, &format!("{url}/recommend"), &json!({"user": user, "new_session": true})).await;
            if s == 200 {
                return r["request_id"].as_str().unwrap().to_string();
            }
            assert_eq!(s, 409, "{r}");
        }
        panic!("every user has seen every video");
    });

    // kill -9: the log still reads, and holds every answered decision.
    std::thread::sleep(Duration::from_millis(600));
    let before = decisions(&log).len();
    server.kill().unwrap();
    server.wait().unwrap();
    let after_kill = read(&log).unwrap();
    assert!(after_kill.damaged <= 1);
    assert!(before > 50, "{before} decisions logged");
    assert!(decisions(&log).iter().any(|d| d.request_id == held));

    // Restarted on the same log: the decision made before the kill takes its feedback.
    let (mut server, url) = start(&run, &log);
    let sent_ok = rt.block_on(async {
        let (s, r) =
            post(&c, &format!("{url}/feedback"), &json!({"request_id": held, "response": "liked", "watch_time_s": 3.0})).await;
        assert_eq!(s, 200, "{r}");
        // Requests in flight when SIGTERM comes are answered and logged.
        let mut tasks = Vec::new();
        for user in 0..40u32 {
            let (c, url) = (c.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..30 {
                    match c.post(format!("{url}/recommend")).json(&json!({"user": user})).send().await {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().await.unwrap();
                            ids.push(v["request_id"].as_str().unwrap().to_string());
                        }
                        _ => break,
                    }
                }
                ids
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        unsafe {
            libc::kill(server.id() as i32, libc::SIGTERM);
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        ids
    });
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the server cleanly: {status:?}");
    let logged: std::collections::HashSet<String> = decisions(&log).into_iter().map(|d| d.request_id).collect();
    assert!(!sent_ok.is_empty());
    for id in &sent_ok {
        assert!(logged.contains(id), "answered request {id} is not in the log");
    }
    let contents = read(&log).unwrap();
    assert!(contents.damaged <= 1);
    assert!(contents.records.iter().any(|r| matches!(r, Record::Outcome(o) if o.request_id == held)));

    // The A/B report (`--out` elsewhere, then beside the log).
    let elsewhere = tmp.path().join("report");
    let out = bin().args(["report", "--ab-log"]).arg(&log).arg("--out").arg(&elsewhere).output().unwrap();
    assert!(out.status.success() && elsewhere.join("ab_report.md").is_file(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().args(["report", "--ab-log"]).arg(&log).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["reward / session", "B - A, reward per session", "sample ratio", "Interference"] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    for f in ["ab_report.md", "ab_report.json", "ab_report.png"] {
        assert!(log.join(f).is_file(), "{f}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(log.join("ab_report.json")).unwrap()).unwrap();
    assert_eq!(report["arms"].as_array().unwrap().len(), 2);
    assert!(report["reward_diff"]["ci95"][0].as_f64().unwrap().is_finite());
}

#[test]
fn serve_refuses_bad_setups_with_what_is_allowed() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve", "--arm", "A=oracle", "--port", "0"], "latent state"),
        (vec!["serve", "--arm", "A=planner", "--port", "0"], "latent state"),
        (vec!["serve", "--arm", "A=greedy", "--read-timeout", "0", "--port", "0"], "--read-timeout 0: allowed 0.1 to 3600"),
        (vec!["serve", "--arm", "A=greedy", "--drain=-1", "--port", "0"], "--drain -1: allowed 0 to 3600"),
        (vec!["serve", "--arm", "A=greedy", "--arm", "A=random", "--port", "0"], "two arms are named"),
        (vec!["serve", "--arm", "A=greedy", "--arm", "B=random", "--split", "50", "--port", "0"], "--split"),
        (vec!["serve", "--arm", "Agreedy", "--port", "0"], "NAME=SOURCE"),
        (vec!["serve", "--arm", "A=/no/such/run", "--port", "0"], "neither a servable baseline"),
        (vec!["serve", "--arm", "A=greedy", "--threads", "100000", "--port", "0"], "--threads 100000: allowed 1 to 256"),
        (vec!["serve", "--arm", "A=greedy", "--threads", "0", "--port", "0"], "--threads 0: allowed 1 to 256"),
        (vec!["report", "--ab-log", "/no/such/log"], "not a decision log"),
        (vec!["traffic", "--url", "http://127.0.0.1:1", "--duration", "1", "-q"], "is `fypsim serve` running there"),
        (vec!["traffic", "--url", "127.0.0.1:1", "-q"], "http://"),
        // An unwritable --json is refused before the run (it failed after the whole run).
        (vec!["traffic", "--url", "http://127.0.0.1:1", "--json", "/no/such/dir/t.json", "-q"], "--json /no/such/dir/t.json"),
    ];
    for (args, needle) in cases {
        let out = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A policy that reads the simulator's truth is refused wherever it comes from: by name,
/// or as the policy of a run folder (issue: a folder of an oracle's run was served).
#[test]
fn serve_refuses_a_run_folder_whose_policy_reads_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["oracle", "myopic_oracle"] {
        let run = tmp.path().join(kind);
        let ok = bin()
            .args(["run", "configs/smoke.toml", "--quiet", "--set", &format!("policy=\"{kind}\""), "--set", "train.episodes=3"])
            .arg("--out")
            .arg(&run)
            .status()
            .unwrap();
        assert!(ok.success());
        let err = serve_refuses(&run, &[]);
        assert!(err.contains("latent state") && err.contains(kind), "{kind}: {err}");
    }
}

/// The served DQN against greedy, in process, on the default world (docs/serving.md:
/// Limits): each arm alone serves every one of the 200 users one session, then five
/// more. Trains the default config first (about a minute), so it is not run by default:
/// `cargo test --release --test serve -- --ignored --nocapture`.
#[test]
#[ignore]
fn served_dqn_against_greedy_as_the_world_drifts() {
    use fypsim::config::PolicyKind;
    use fypsim::serve::{traffic::rehearse, ArmSpec, ServeOptions, Service, Source};
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let ok = bin().args(["run", "configs/default.toml", "--quiet", "--out"]).arg(&run).status().unwrap();
    assert!(ok.success());
    let config = fypsim::experiment::run::config_of_run(&run).unwrap();
    let mut means = Vec::new();
    for source in [Source::Baseline(PolicyKind::Greedy), Source::Run(run.clone())] {
        let opts = ServeOptions {
            arms: vec![ArmSpec::plain("A", source.clone())],
            shares: None,
            salt: "drift".into(),
            config: Some(config.clone()),
            log: None,
            learning_checkpoint_every: fypsim::serve::LEARNING_CHECKPOINT_EVERY,
        };
        let mut service = Service::new(&opts).unwrap();
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..200).collect();
        let mut row = Vec::new();
        for (sessions, seed) in [(1usize, 3u64), (5, 4)] {
            let records = rehearse(&mut service, &world, &users, sessions, seed).unwrap();
            let reward: f64 = records.iter().map(|r| if let Record::Outcome(o) = r { o.reward } else { 0.0 }).sum();
            row.push(reward / (users.len() * sessions) as f64);
        }
        println!("{}: first session {:.2}, next five {:.2} reward per session", fypsim::serve::describe(&source), row[0], row[1]);
        means.push(row);
    }
    // The agent's offline edge shows in the first session and fades as the world drifts.
    assert!(means[1][0] > means[0][0]);
    assert!((means[1][1] - means[0][1]).abs() < (means[1][0] - means[0][0]));
}

/// A user who has seen every video gets 409 from the service; the traffic driver stops
/// asking for them instead of counting each retry as a session ended (it counted 57,052
/// sessions against 11,408 recommendations).
#[test]
fn traffic_stops_asking_for_users_who_have_seen_every_video() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = ["--set", "world.n_videos=30", "--set", "world.n_users=6"];
    let mut args = vec!["serve", "--arm", "A=greedy", "--port", "0", "--config", "configs/smoke.toml"];
    args.extend(sets);
    let (mut server, url) = start_with(&args);
    let json = tmp.path().join("traffic.json");
    let mut args = vec!["traffic", "--url", &url, "--users", "6", "--duration", "3", "--concurrency", "2", "-q"];
    args.extend(["--config", "configs/smoke.toml"]);
    args.extend(sets);
    let out = bin().args(&args).arg("--json").arg(&json).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (recs, sessions, exhausted) =
        (r["recommendations"].as_u64().unwrap(), r["sessions"].as_u64().unwrap(), r["users_exhausted"].as_u64().unwrap());
    // Closed loop ends early once every user has seen every video.
    assert!(exhausted == 6 && r["elapsed_s"].as_f64().unwrap() < 3.0, "{r}");
    assert!(sessions <= recs, "{sessions} sessions ended against {recs} recommendations: {r}");
    assert!(!r["errors"].as_object().unwrap().contains_key("409"), "{r}");
}

/// A run stopped before the end of training (`--max-episodes`) holds a half-trained agent:
/// serve refuses it and says how to finish it (issue: it was served without a word).
#[test]
fn serve_refuses_a_run_folder_whose_training_is_unfinished() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("half");
    let ok =
        bin().args(["run", "configs/smoke.toml", "--quiet", "--max-episodes", "10"]).arg("--out").arg(&run).status().unwrap();
    assert!(ok.success());
    assert!(!run.join("summary.json").exists());
    let err = serve_refuses(&run, &[]);
    assert!(err.contains("has not finished") && err.contains("--resume"), "{err}");
    // Finished, it is served only in its own world: an agent of another world (or other
    // inputs) is refused, saying what must match.
    let ok = bin().args(["run", "--resume"]).arg(&run).arg("--quiet").status().unwrap();
    assert!(ok.success() && run.join("summary.json").is_file());
    let err = serve_refuses(&run, &["--config", "configs/smoke.toml", "--set", "world.n_videos=500"]);
    assert!(err.contains("trained on another world") && err.contains("must match"), "{err}");
}

/// `fypsim serve --arm A=RUN`, which must refuse the folder and exit (within a minute, or
/// the test fails: it was served); its stderr.
fn serve_refuses(run: &std::path::Path, extra: &[&str]) -> String {
    let mut child = bin()
        .args(["serve", "--port", "0", "--arm"])
        .arg(format!("A={}", run.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{} was served", run.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "serve succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// An arm served with a mixture logs exact propensities; `report --ab-log --ope-target`
/// replays the log of real, concurrent HTTP traffic and estimates a policy the experiment
/// did not serve from that arm (the deterministic arm is named and left out); a config of
/// another world, or a target that reads the truth, is refused.
#[test]
fn a_mixture_arm_logs_for_off_policy_estimates_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let sets = ["--set", "world.n_users=200", "--set", "world.n_videos=400"];
    let log_s = log.display().to_string();
    let mut args = vec!["serve", "--arm", "A=greedy", "--arm", "B=greedy@epsilon=0.3", "--port", "0", "--salt", "mix"];
    args.extend(["--log", &log_s, "--config", "configs/smoke.toml"]);
    args.extend(sets);
    let (mut server, url) = start_with(&args);
    let mut traffic = vec!["traffic", "--url", &url, "--users", "200", "--duration", "4", "--concurrency", "4", "-q"];
    traffic.extend(["--config", "configs/smoke.toml"]);
    traffic.extend(sets);
    let out = bin().args(&traffic).output().unwrap();
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ds = decisions(&log);
    assert!(ds.iter().any(|d| d.arm == "B" && d.propensity < 1.0) && ds.iter().all(|d| d.arm == "B" || d.propensity == 1.0));
    assert!(ds.iter().filter(|d| d.arm == "B").all(|d| d.version.starts_with("greedy@epsilon=0.3@")));

    let report = |extra: &[&str]| {
        let mut c = bin();
        c.args(["report", "--ab-log", &log_s, "--config", "configs/smoke.toml", "--bootstrap", "100"]).args(extra);
        c.output().unwrap()
    };
    let out = report(&["--set", "world.n_users=200", "--set", "world.n_videos=400", "--ope-target", "most_viewed@softmax=1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("## Off-policy estimates") && stdout.contains("not used: arm A"), "{stdout}");
    assert!(stdout.contains("| B | most_viewed@softmax=1 | session | dr_seq |"), "{stdout}");
    let csv = std::fs::read_to_string(log.join("ab_ope.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 13, "{csv}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(log.join("ab_report.json")).unwrap()).unwrap();
    assert!(json["ope"]["rows"].as_array().unwrap().iter().all(|r| r["value"].as_f64().unwrap().is_finite()));

    let out = report(&["--ope-target", "most_viewed"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the config's"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = report(&["--set", "world.n_users=200", "--set", "world.n_videos=400", "--ope-target", "oracle"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("latent state"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An A/B/n experiment over HTTP: three arms, each compared with the named control in the
/// report (k-arm sample-ratio check, Bonferroni's bound); an unknown control is refused.
#[test]
fn three_arms_are_served_and_reported_against_a_control() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let log_s = log.display().to_string();
    let mut args = vec!["serve", "--arm", "A=greedy", "--arm", "B=random", "--arm", "C=most_viewed", "--split", "40/30/30"];
    args.extend(["--port", "0", "--log", &log_s, "--config", "configs/smoke.toml", "--set", "world.n_users=300"]);
    let (mut server, url) = start_with(&args);
    let traffic = ["traffic", "--url", &url, "--users", "300", "--duration", "2", "--concurrency", "4", "-q"];
    let out = bin().args(traffic).args(["--config", "configs/smoke.toml", "--set", "world.n_users=300"]).output().unwrap();
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().args(["report", "--ab-log", &log_s, "--control", "B", "--by-session"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("## By session index") && stdout.contains("| A | 1 |") && stdout.contains("| C | 6+ |"), "{stdout}");
    assert!(stdout.contains("| A - B |") && stdout.contains("| C - B |") && stdout.contains("Bonferroni"), "{stdout}");
    assert!(stdout.contains("0.40 / 0.30 / 0.30"), "the k-arm sample-ratio check: {stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(log.join("ab_report.json")).unwrap()).unwrap();
    assert_eq!(json["comparisons"].as_array().unwrap().len(), 2);
    assert!(json["srm"]["p_value"].as_f64().unwrap().is_finite());
    let out = bin().args(["report", "--ab-log", &log_s, "--control", "Z"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--control Z: not an arm of this experiment (its arms: A, B, C)"));
}

/// Arms that learn from their feedback (`:learn`): a bandit updates on every outcome, a
/// DQN stores every served step in its replay buffer and trains as it did in training,
/// on a learner of its own whose parameters serve from logged swaps; after kill -9 and a
/// restart on the same log, each learning arm's state (parameters, optimiser, replay
/// buffer, the parameters serving) is rebuilt exactly, from the learner's checkpoint and
/// the log after it, or from the whole log when the checkpoint is damaged: its digests
/// equal the ones the killed server reported.
#[test]
fn learning_arms_learn_from_feedback_and_a_restart_rebuilds_them_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (bandit, dqn, log) = (tmp.path().join("linucb"), tmp.path().join("dqn"), tmp.path().join("log"));
    for (dir, policy) in [(&bandit, "policy=linucb"), (&dqn, "policy=dqn")] {
        let ok = bin().args(["run", "configs/smoke.toml", "--quiet", "--set", policy, "--out"]).arg(dir).status().unwrap();
        assert!(ok.success());
    }
    let (a, b) = (format!("A={}:learn", bandit.display()), format!("B={}:learn", dqn.display()));
    let log_s = log.display().to_string();
    let args = [
        "serve",
        "--arm",
        a.as_str(),
        "--arm",
        b.as_str(),
        "--port",
        "0",
        "--salt",
        "learn",
        "--log",
        log_s.as_str(),
        "--learning-checkpoint",
        "1",
    ];
    let health = |url: &str| -> Value {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async { reqwest::get(format!("{url}/health?state=digest")).await.unwrap().json().await.unwrap() })
    };
    // What a restart must rebuild: each arm's transitions, state and serving parameters.
    let state = |h: &Value| -> Vec<Value> {
        h["learning"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| json!([l["arm"], l["transitions"], l["state_sha256"], l["serving_transitions"], l["serving_sha256"]]))
            .collect()
    };
    // The learner runs at idle priority: on a machine busy with other tests it may learn
    // only once the engine waits for it (a digest). It then offers what it learnt, which
    // serves from the engine's next batch: one request after a pause.
    let nudge = |url: &str, user: u64| {
        health(url);
        std::thread::sleep(Duration::from_millis(300));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (s, r) =
            rt.block_on(post(&reqwest::Client::new(), &format!("{url}/recommend"), &json!({"user": user, "new_session": true})));
        assert_eq!(s, 200, "{r}");
    };
    // Simulated users of `run`'s world for a second or two, open loop.
    let traffic = |url: &str, run: &Path, args: &[&str]| {
        let out =
            bin().args(["traffic", "--url", url, "-q"]).args(args).arg("--config").arg(run.join("config.toml")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let (mut server, url) = start_with(&args);
    traffic(&url, &bandit, &["--users", "30", "--duration", "2", "--rate", "200", "--concurrency", "3"]);
    nudge(&url, 39);
    let before = health(&url);
    let learning = before["learning"].as_array().unwrap().clone();
    assert_eq!(learning.len(), 2, "{before}");
    for l in &learning {
        assert!(l["transitions"].as_u64().unwrap() > 20 && l.get("stopped").is_none(), "{l}");
    }
    // The DQN serves parameters it learnt, swapped in at logged points.
    let serving = learning[1]["serving_transitions"].as_u64().unwrap();
    assert!(serving > 0 && serving <= learning[1]["transitions"].as_u64().unwrap(), "{}", learning[1]);
    let swaps = read(&log).unwrap().records.iter().filter(|r| matches!(r, Record::Swap(s) if s.arm == "B")).count();
    assert!(swaps > 0 && learning[0].get("serving_transitions").is_none());
    // It checkpoints beside the log (every second here).
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&url)["learning"][1]["checkpoint"]["transitions"].as_u64().is_none() {
        assert!(Instant::now() < deadline, "no checkpoint: {}", health(&url));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(log.join("learning/B/checkpoint/MANIFEST.json").is_file());
    assert!(before["arms"][0]["version"].as_str().unwrap().ends_with(":learn"));
    let metrics = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap() });
    assert!(
        metrics.contains("fypsim_arm_learning{arm=\"B\"} 1") && metrics.contains("fypsim_arm_transitions_learnt"),
        "{metrics}"
    );
    // A decision of each arm left awaiting its feedback when the server is killed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();
    let mut held: Vec<Value> = Vec::new();
    for user in 30..40 {
        let (s, r) = rt.block_on(post(&c, &format!("{url}/recommend"), &json!({"user": user, "new_session": true})));
        assert_eq!(s, 200, "{r}");
        // A session of a learning arm cannot be rebuilt from `recent`.
        let (s, e) = rt.block_on(post(&c, &format!("{url}/recommend"), &json!({"user": user, "recent": []})));
        assert_eq!(s, 422, "{e}");
        held.push(r);
    }
    let before = health(&url);
    server.kill().unwrap();
    server.wait().unwrap();
    // Restarted without periodic checkpoints: it starts from the killed server's.
    let mut hourly = args.to_vec();
    *hourly.last_mut().unwrap() = "3600";
    let (mut again, url) = start_with(&hourly);
    let after = health(&url);
    assert_eq!(state(&before), state(&after), "the restart rebuilt another state");
    let loaded = after["learning"][1]["checkpoint"]["loaded"].as_u64().unwrap();
    assert!(loaded > 0, "{after}");
    // Their feedback after the restart moves the world but teaches nothing; more traffic
    // teaches more, past the checkpoint.
    for r in &held {
        let (s, a) =
            rt.block_on(post(&c, &format!("{url}/feedback"), &json!({"request_id": r["request_id"], "response": "left"})));
        assert_eq!(s, 200, "{a}");
    }
    let (s, r) = rt.block_on(post(&c, &format!("{url}/recommend"), &json!({"user": 31, "new_session": true})));
    assert_eq!(s, 200, "{r}");
    let (s, _) =
        rt.block_on(post(&c, &format!("{url}/feedback"), &json!({"request_id": r["request_id"], "response": "watched"})));
    assert_eq!(s, 200);
    traffic(&url, &bandit, &["--users", "20", "--duration", "1", "--rate", "100", "--seed", "2"]);
    let second = health(&url);
    let learnt = second["learning"][1]["transitions"].as_u64().unwrap();
    assert!(learnt > loaded, "{second}");
    again.kill().unwrap();
    again.wait().unwrap();
    // From the first server's checkpoint, and the log after it.
    let (mut third, url) = start_with(&args);
    let rebuilt = health(&url);
    assert_eq!(state(&second), state(&rebuilt), "the second restart rebuilt another state");
    assert_eq!(rebuilt["learning"][1]["checkpoint"]["loaded"].as_u64(), Some(loaded), "{rebuilt}");
    third.kill().unwrap();
    third.wait().unwrap();
    // A damaged checkpoint is not used: the arm learns from the whole log, to the same state.
    let ckpt = log.join("learning/B/checkpoint/learner.json");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    bytes.push(b' ');
    std::fs::write(&ckpt, bytes).unwrap();
    let (mut fourth, url) = start_with(&args);
    let whole = health(&url);
    assert!(whole["learning"][1]["checkpoint"].get("loaded").is_none(), "{whole}");
    // Stopped with SIGTERM, it writes a last checkpoint of everything learnt; a restart
    // then has nothing to learn again.
    unsafe {
        libc::kill(fourth.id() as i32, libc::SIGTERM);
    }
    let _ = fourth.wait();
    assert_eq!(state(&second), state(&whole), "the restart from the whole log rebuilt another state");
    let (mut fifth, url) = start_with(&args);
    let last = health(&url);
    unsafe {
        libc::kill(fifth.id() as i32, libc::SIGTERM);
    }
    let _ = fifth.wait();
    assert_eq!(state(&second), state(&last));
    assert_eq!(last["learning"][1]["checkpoint"]["loaded"].as_u64(), Some(learnt), "{last}");
    // Without a log, a DQN arm learns and serves what it learns all the same.
    let (mut bare, url) = start_with(&["serve", "--arm", b.as_str(), "--port", "0"]);
    traffic(&url, &dqn, &["--users", "20", "--duration", "1", "--rate", "200"]);
    nudge(&url, 39);
    let h = health(&url);
    let _ = bare.kill();
    let _ = bare.wait();
    assert!(h["learning"][0]["transitions"].as_u64().unwrap() > 20, "{h}");
    assert!(h["learning"][0]["serving_transitions"].as_u64().unwrap() > 0, "{h}");
    // A baseline has nothing to learn; a DQN with n-step returns cannot learn served.
    let o = bin().args(["serve", "--arm", "A=greedy:learn", "--port", "0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("a baseline has nothing to learn"));
    let nstep = tmp.path().join("nstep");
    let ok = bin().args(["run", "configs/smoke.toml", "--quiet", "--set", "dqn.n_step=3", "--out"]).arg(&nstep).status().unwrap();
    assert!(ok.success());
    let o = bin().args(["serve", "--port", "0", "--arm"]).arg(format!("A={}:learn", nstep.display())).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("dqn.n_step = 3 cannot learn while served"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `fypsim traffic --plan SESSIONS` states before an experiment runs what it can detect:
/// each arm against the control, at Bonferroni's level, from an in-process A/A rehearsal
/// of the served experiment (its shares and salt); more sessions detect less.
#[test]
fn traffic_plans_the_detectable_difference_before_the_experiment_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["serve", "--arm", "A=greedy", "--arm", "B=random", "--arm", "C=most_viewed", "--split", "40/30/30"];
    let mut args = args.to_vec();
    args.extend(["--port", "0", "--config", "configs/smoke.toml"]);
    let (mut server, url) = start_with(&args);
    let plan = |sessions: &str, extra: &[&str]| {
        let json = tmp.path().join(format!("plan-{sessions}.json"));
        let mut a = vec!["traffic", "--url", &url, "--users", "20", "--config", "configs/smoke.toml", "--plan", sessions];
        a.extend(extra);
        let out = bin().args(&a).arg("--json").arg(&json).output().unwrap();
        (out, json)
    };
    let (out, json) = plan("2", &["--control", "B"]);
    let (out8, json8) = plan("8", &["--control", "B"]);
    let (out1000, json1000) = plan("1000", &[]);
    let (zero, _) = plan("0", &[]);
    let (stranger, _) = plan("2", &["--control", "Z"]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success() && out8.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("plan: 20 users, 2 sessions each; each arm against B at p < 0.0250"), "{stdout}");
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let p8: Value = serde_json::from_str(&std::fs::read_to_string(&json8).unwrap()).unwrap();
    let arms = p["arms"].as_array().unwrap();
    assert_eq!(arms.iter().map(|a| a["users"].as_u64().unwrap()).sum::<u64>(), 20, "{p}");
    assert!(arms[1]["mde80"].is_null() && arms[1]["name"] == "B", "the control: {p}");
    for k in [0, 2] {
        let (m2, m8) = (arms[k]["mde80"].as_f64().unwrap(), p8["arms"][k]["mde80"].as_f64().unwrap());
        assert!(m2 > 0.0 && m8 < m2, "more sessions, a smaller detectable difference: {m2} vs {m8}");
    }
    // Users who run out of unseen videos are said, and the sessions that ran counted.
    let p1000: Value = serde_json::from_str(&std::fs::read_to_string(&json1000).unwrap()).unwrap();
    assert!(p1000["users_exhausted"].as_u64().unwrap() > 0 && p1000["sessions_run"].as_u64().unwrap() < 20_000, "{p1000}");
    assert!(String::from_utf8_lossy(&out1000.stdout).contains("ran out of unseen videos before their last session"));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--plan 0: sessions per user, from 1 to 1000"));
    assert!(!String::from_utf8_lossy(&zero.stderr).contains("rehearsing"), "refused before anything runs");
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("--control Z: not an arm of the served experiment"));
}
