//! Hostile use of `fypsim serve` over real sockets: clients that stall, a user's requests
//! that race, feedback that comes late or twice, a restart, and a disk that fills up.
//! Each case starts its own server (`Server::start`) and talks raw HTTP/1.1 to it
//! (`Server::call`), so a new case is one more test below.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// `fypsim serve` on the smoke world, one greedy arm, any free port, with `extra`
    /// arguments; `limit` sets the largest file it may write (RLIMIT_FSIZE), a disk that
    /// fills up. (Its Drop kills and waits for it.)
    #[allow(clippy::zombie_processes)]
    fn start(log: &Path, extra: &[&str], limit: Option<u64>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fypsim"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["serve", "--arm", "A=greedy", "--config", "configs/smoke.toml", "--port", "0", "--salt", "h"])
            .arg("--log")
            .arg(log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(bytes) = limit {
            use std::os::unix::process::CommandExt;
            // The limit applies to every file the server writes, an inherited stderr
            // redirected to a large file (a CI log) too: give it a pipe of its own.
            cmd.stderr(Stdio::piped());
            // SAFETY: setrlimit and signal are async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
                    libc::setrlimit(libc::RLIMIT_FSIZE, &r);
                    // A write past the limit fails with EFBIG instead of killing the process.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                }
            });
        }
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line =
                lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the server says where it listens");
            if let Some(rest) = line.strip_prefix("listening on http://") {
                let addr = rest.split_whitespace().next().unwrap().to_string();
                return Server { child, addr, lines };
            }
        }
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        call(&self.addr, method, path, body)
    }

    fn recommend(&self, user: u64, new_session: bool) -> (u16, Value) {
        recommend(&self.addr, user, new_session)
    }
}

/// One request on its own connection: (status, JSON body).
fn call(addr: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.to_string();
    write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

fn recommend(addr: &str, user: u64, new_session: bool) -> (u16, Value) {
    call(addr, "POST", "/recommend", &json!({"user": user, "new_session": new_session}))
}

impl Server {
    fn feedback(&self, id: &Value) -> (u16, Value) {
        self.call("POST", "/feedback", &json!({"request_id": id, "response": "watched"}))
    }

    /// SIGTERM, then the exit status and the rest of stdout, failing past `within`.
    fn stop(self, within: Duration) -> (std::process::ExitStatus, String) {
        self.stop_with(libc::SIGTERM, within)
    }

    /// `signal`, then the exit status and the rest of stdout, failing past `within`.
    fn stop_with(mut self, signal: i32, within: Duration) -> (std::process::ExitStatus, String) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let rest: Vec<String> = self.lines.try_iter().collect();
                return (status, rest.join("\n"));
            }
            if t.elapsed() > within {
                let _ = self.child.kill();
                panic!("the server did not stop within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A failing case leaves no server behind (it would hold the test's output open).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log.jsonl")).unwrap_or_default()
}

/// The log's decisions and outcomes (its lines but the servers' `start` records).
fn logged(dir: &Path) -> usize {
    log_text(dir).lines().filter(|l| !l.contains("\"kind\":\"start\"")).count()
}

/// A client that pipelines requests and never reads the answers, from `addr`: once the
/// socket buffers are full the server's writes to it block, so its connection stays busy.
fn never_reads(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let one = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        while w.write_all(&many).is_ok() {}
    });
    s
}

/// No client can hold the server. A body that stops coming is answered 408 within the
/// read timeout; headers trickled a byte at a time are cut off after it (the deadline is
/// for the whole header, not between bytes); a client that never reads its answers
/// cannot keep SIGTERM from stopping the server beyond the drain, nor a second signal
/// beyond that signal; and what was served is in the log.
#[test]
fn stalled_clients_cannot_hold_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--read-timeout", "1", "--drain", "2"], None);
    let (status, rec) = server.recommend(1, true);
    assert_eq!(status, 200, "{rec}");
    assert_eq!(server.feedback(&rec["request_id"]).0, 200);

    // Headers and half a body, then nothing.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stalled
        .write_all(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"us")
        .unwrap();
    let t = Instant::now();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(t.elapsed() < Duration::from_secs(10), "a stalled body held its connection for {:?}", t.elapsed());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A header trickled a byte every 200 ms: closed after the read timeout all the same.
    let trickle = TcpStream::connect(&server.addr).unwrap();
    let (closed_tx, closed) = mpsc::channel();
    let mut w = trickle.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = w.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        while w.write_all(b"a").is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = closed_tx.send(());
    });
    let mut r = trickle;
    r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let _ = r.read_to_end(&mut Vec::new());
    assert!(t.elapsed() < Duration::from_secs(10), "a trickled header held its connection for {:?}", t.elapsed());
    let _ = closed.recv_timeout(Duration::from_secs(10));

    // A client that never reads: the drain ends it.
    let _busy = never_reads(&server.addr);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, out) = server.stop(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.contains("were cut"), "the busy connection was not cut: {out}");
    assert_eq!(logged(dir.path()), 2, "the decision and its outcome are logged");

    // With a long drain, a second signal ends it.
    let server = Server::start(dir.path(), &["--drain", "600"], None);
    let _busy = never_reads(&server.addr);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = server.child.id() as i32;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    });
    let (status, out) = server.stop(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.contains("were cut"), "{out}");
}

/// One decision in flight per user: a second request, sequential or concurrent, is
/// refused with 409 until the feedback comes; feedback for a decision whose session ended
/// is refused (409), not logged into it; after a restart on the same log, a replayed
/// decision takes its feedback once and a repeat gets 409 (not 404).
#[test]
fn one_decision_in_flight_per_user_and_feedback_only_into_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], None);
    let (status, first) = server.recommend(2, true);
    assert_eq!(status, 200);
    let (status, again) = server.recommend(2, false);
    assert_eq!(status, 409, "a second sequential request got {again}");
    // 30 at once for a fresh user: exactly one decision.
    let answers: Vec<u16> = (0..30)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || recommend(&addr, 3, false).0)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(answers.iter().filter(|&&s| s == 200).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|&s| s == 200 || s == 409), "{answers:?}");
    // A new session ends the old one: the old decision's feedback is refused.
    let (status, _) = server.recommend(2, true);
    assert_eq!(status, 200);
    let (status, body) = server.feedback(&first["request_id"]);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("session ended"), "{body}");
    let (status, pending) = server.recommend(4, true);
    assert_eq!(status, 200);
    // Ctrl-C stops it as SIGTERM does.
    let (status, _) = server.stop_with(libc::SIGINT, Duration::from_secs(30));
    assert!(status.success());
    let decisions = logged(dir.path());

    // Restarted: user 4's decision awaits its feedback; a repeat is 409, a stranger 404.
    let server = Server::start(dir.path(), &[], None);
    assert_eq!(server.feedback(&pending["request_id"]).0, 200);
    let (status, body) = server.feedback(&pending["request_id"]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(server.feedback(&first["request_id"]).0, 409);
    assert_eq!(server.feedback(&json!("nobody-1")).0, 404);
    let (status, _) = server.stop(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(logged(dir.path()), decisions + 1);
}

/// A disk that fills up: every decision answered 200 is in the log when its answer
/// arrives, the rest get 503; once there is room again the server serves and logs
/// again, and SIGTERM ends it cleanly.
#[test]
fn a_full_disk_refuses_rather_than_answer_unlogged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // experiment.json and the lock fit; a handful of decisions do.
    let server = Server::start(dir.path(), &[], Some(4096));
    let (mut served, mut refused) = (0, 0);
    for user in 0..40 {
        // the smoke world's users
        let (status, body) = server.recommend(user, true);
        match status {
            200 => {
                let id = body["request_id"].as_str().unwrap().to_string();
                assert!(log_text(dir.path()).contains(&id), "decision {id} answered before it was logged");
                served += 1;
            }
            503 => {
                assert!(body["error"].as_str().unwrap().contains("cannot be written"), "{body}");
                refused += 1;
            }
            s => panic!("status {s}: {body}"),
        }
    }
    assert!(served > 0 && refused > 0, "served {served}, refused {refused}");
    let (status, health) = server.call("GET", "/health", &Value::Null);
    assert_eq!((status, health["status"].as_str()), (200, Some("log_failed")));
    // Room again.
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    assert_eq!(unsafe { libc::prlimit(server.child.id() as i32, libc::RLIMIT_FSIZE, &r, std::ptr::null_mut()) }, 0);
    let (status, body) = server.recommend(0, true);
    assert_eq!(status, 200, "after room was made: {body}");
    assert!(log_text(dir.path()).contains(body["request_id"].as_str().unwrap()));
    assert_eq!(server.call("GET", "/health", &Value::Null).1["status"], "ok");
    let (status, out) = server.stop(Duration::from_secs(30));
    assert!(status.success(), "{out}");
    let contents = fypsim::serve::log::read(dir.path()).unwrap();
    let starts = contents.records.iter().filter(|r| matches!(r, fypsim::serve::Record::Start(_))).count();
    assert_eq!((contents.records.len() - starts, starts, contents.damaged), (served + 1, 1, 0));
}

/// The traffic driver's open loop: arrivals at a fixed rate whatever the service's pace,
/// with the arrivals it dropped and how far it lagged its own schedule reported beside
/// the latencies.
#[test]
fn open_loop_traffic_reports_drops_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], None);
    let json_path = dir.path().join("open.json");
    let out = Command::new(env!("CARGO_BIN_EXE_fypsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["traffic", "--url", &format!("http://{}", server.addr), "--users", "10", "--duration", "1", "--rate", "200"])
        .args(["--config", "configs/smoke.toml", "--seed", "3", "-q", "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!((open["mode"].as_str(), open["rate"].as_f64()), (Some("open"), Some(200.0)), "{open}");
    assert!(open["dropped"].is_u64() && open["dispatch_lag"]["p99_ms"].is_f64(), "{open}");
    assert!(open["recommendations"].as_u64().unwrap() > 50, "{open}");
    // One user at 2,000 arrivals a second is busy for most of them: those are counted as
    // dropped, never silently lost.
    let out = Command::new(env!("CARGO_BIN_EXE_fypsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["traffic", "--url", &format!("http://{}", server.addr), "--users", "1", "--duration", "1", "--rate", "2000"])
        .args(["--config", "configs/smoke.toml", "--seed", "4", "-q", "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let busy: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(busy["dropped"].as_u64().unwrap() > 0 && busy["recommendations"].as_u64().unwrap() > 0, "{busy}");
    let (status, _) = server.stop(Duration::from_secs(30));
    assert!(status.success());
}

/// docs/serving.md: a signal that comes while the world loads stops the server as soon as
/// it is up, cleanly (it was lost, or killed the process, before signals were listened to
/// first).
#[test]
fn a_signal_while_the_world_loads_stops_the_server_once_it_is_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fypsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["serve", "--arm", "A=greedy", "--config", "configs/smoke.toml", "--port", "0"])
        .args(["--set", "world.n_users=1000000", "--set", "world.n_videos=40000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("loading the world") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the server ended before loading");
    }
    // Each line of stdout with the moment it came.
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let lines: Vec<(Instant, String)> = lines.try_iter().collect();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "{status:?}\n{text:?}");
    let up = lines.iter().find(|(_, l)| l.starts_with("listening on")).unwrap_or_else(|| panic!("never up: {text:?}")).0;
    assert!(up > sent, "the world loaded before the signal came: make it larger");
    assert!(text.iter().any(|l| l.contains("stopped after 0 requests")), "{text:?}");
    assert!(sent.elapsed() < Duration::from_secs(120), "took {:?}", sent.elapsed());
}

/// docs/serving.md: an idle kept-alive connection is closed after the read timeout (it
/// could otherwise hold a connection slot, and the drain, for ever).
#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--read-timeout", "1"], None);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Read the whole response (headers, then Content-Length bytes of body).
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("\"status\""));
    // Idle: the server closes it within the timeout (and a little scheduling).
    let idle = Instant::now();
    let mut rest = Vec::new();
    let closed = matches!(reader.read_to_end(&mut rest), Ok(0)) || rest.is_empty();
    assert!(closed && idle.elapsed() < Duration::from_secs(5), "still open after {:?}: {rest:?}", idle.elapsed());
    let (status, _) = server.stop(Duration::from_secs(30));
    assert!(status.success());
}
