//! The HTTP/JSON front of a [`Service`] (axum on tokio): `POST /recommend`,
//! `POST /feedback`, `GET /health`, `GET /metrics` (Prometheus' text format).
//!
//! One engine thread owns the service, so no lock guards the matrix or the sessions:
//! handlers hand it their request and await its answer. It takes every request waiting
//! when it wakes and answers the recommendations of one arm with one `act_batch` (one
//! forward pass of the Q-network for all of them). Bad requests get a 4xx with a JSON body
//! `{"error": ..., "status": ...}` naming the problem. SIGINT or SIGTERM stop accepting
//! connections, finish the requests in flight, then flush and sync the decision log.
//!
//! No client can hold the server: a request's headers (and the next request's on a kept
//! alive connection) must arrive whole within the read timeout, or the connection is
//! closed; its body too, or it is answered 408; the drain after a stop signal lasts at
//! most [`HttpOptions::drain`] (a second signal cuts it short), and what is still open
//! then is cut.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use super::{ApiError, FeedbackAck, FeedbackRequest, Health, RecommendRequest, Recommendation, ServeOptions, Service};
use crate::{Error, Result};

/// The largest request body accepted (a `recent` list of [`super::MAX_RECENT`] steps fits).
pub const MAX_BODY: usize = 128 * 1024;
/// The most requests the engine answers in one batch.
pub const MAX_BATCH: usize = 256;

type Labels = Vec<(String, String)>;

/// What `GET /metrics` reports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    decisions: Family<Labels, Counter>,
    feedback: Family<Labels, Counter>,
    batch: Histogram,
    in_flight: Gauge,
    learning: Family<Labels, Gauge>,
    learnt: Family<Labels, Gauge>,
    pub served: AtomicU64,
}

fn latency_histogram() -> Histogram {
    // 25 µs to about 0.8 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fypsim");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let decisions = Family::<Labels, Counter>::default();
        let feedback = Family::<Labels, Counter>::default();
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        let in_flight = Gauge::default();
        let learning = Family::<Labels, Gauge>::default();
        let learnt = Family::<Labels, Gauge>::default();
        registry.register("http_requests", "HTTP requests by endpoint and status", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer a request, by endpoint", latency.clone());
        registry.register("decisions", "Recommendations served, by arm", decisions.clone());
        registry.register("feedback", "Outcomes reported, by arm and response", feedback.clone());
        registry.register("engine_batch_size", "Requests the engine answered together", batch.clone());
        registry.register("http_requests_in_flight", "Requests being answered", in_flight.clone());
        registry.register(
            "arm_learning",
            "A learning arm: 1 while it learns, 0 once it has stopped (see /health)",
            learning.clone(),
        );
        registry.register("arm_transitions_learnt", "Transitions a learning arm has learnt from", learnt.clone());
        Metrics {
            registry,
            requests,
            latency,
            decisions,
            feedback,
            batch,
            in_flight,
            learning,
            learnt,
            served: AtomicU64::new(0),
        }
    }

    fn observe(&self, endpoint: &str, status: StatusCode, seconds: f64) {
        self.requests
            .get_or_create(&vec![("endpoint".into(), endpoint.into()), ("status".into(), status.as_u16().to_string())])
            .inc();
        self.latency.get_or_create(&vec![("endpoint".into(), endpoint.into())]).observe(seconds);
        self.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A request for the engine.
enum Msg {
    Recommend(RecommendRequest, oneshot::Sender<std::result::Result<Recommendation, ApiError>>),
    Feedback(FeedbackRequest, oneshot::Sender<std::result::Result<FeedbackAck, ApiError>>),
    /// With the learning arms' state digests if true.
    Health(bool, oneshot::Sender<Health>),
    /// A fault planted by a test: the engine panics on it (the failure path has a test).
    #[cfg(test)]
    Crash,
}

#[derive(Clone)]
struct AppState {
    engine: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

/// The engine: builds the service (so that its policies never cross threads), reports
/// ready, then answers batches until every handler is gone; then closes the log. Should
/// it ever panic (a bug), it flushes the log, tells the server to stop (`died`), and
/// returns the error: the log is the service's record, and a restart on it goes on.
fn engine(
    opts: ServeOptions,
    ready: mpsc::Sender<Result<Health>>,
    rx: mpsc::Receiver<Msg>,
    metrics: Arc<Metrics>,
    died: Arc<tokio::sync::Notify>,
) -> Result<Option<PathBuf>> {
    let mut service = match Service::new(&opts) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(None);
        }
    };
    let _ = ready.send(Ok(service.health()));
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer_batches(&mut service, &rx, &metrics)));
    let closed = service.close();
    match answered {
        Ok(()) => closed,
        Err(payload) => {
            died.notify_one();
            let why = crate::panic_message(payload.as_ref());
            Err(Error::Other(format!(
                "the engine failed ({why}); the decision log is flushed: restart the server on the same --log to go on"
            )))
        }
    }
}

fn answer_batches(service: &mut Service, rx: &mpsc::Receiver<Msg>, metrics: &Metrics) {
    let mut recs: Vec<RecommendRequest> = Vec::new();
    let mut replies: Vec<oneshot::Sender<std::result::Result<Recommendation, ApiError>>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        metrics.batch.observe(batch.len() as f64);
        let now = super::now_ms();
        // Parameters a learner has learnt since serve from this batch on (the swap logged first).
        service.swap_in(now);
        // Feedback first: a client sends a user's next request only after its feedback.
        for m in batch {
            match m {
                Msg::Feedback(req, tx) => {
                    let answer = service.feedback(&req, now);
                    if let Ok(a) = &answer {
                        let arm = a.arm.clone();
                        metrics
                            .feedback
                            .get_or_create(&vec![("arm".into(), arm), ("response".into(), req.response.name().into())])
                            .inc();
                    }
                    let _ = tx.send(answer);
                }
                Msg::Health(digest, tx) => {
                    let _ = tx.send(service.health_with(digest));
                }
                Msg::Recommend(req, tx) => {
                    recs.push(req);
                    replies.push(tx);
                }
                #[cfg(test)]
                Msg::Crash => panic!("a fault planted by a test"),
            }
        }
        if !recs.is_empty() {
            let answers = service.recommend_batch(&recs, now);
            for (tx, a) in replies.drain(..).zip(answers) {
                if let Ok(r) = &a {
                    metrics.decisions.get_or_create(&vec![("arm".into(), r.arm.clone())]).inc();
                }
                let _ = tx.send(a);
            }
            recs.clear();
        }
        for (arm, transitions, learning) in service.learning_counts() {
            metrics.learning.get_or_create(&vec![("arm".into(), arm.clone())]).set(i64::from(learning));
            metrics.learnt.get_or_create(&vec![("arm".into(), arm)]).set(transitions as i64);
        }
    }
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(serde_json::json!({"error": e.message, "status": e.status}))).into_response()
}

fn rejection(r: JsonRejection) -> ApiError {
    let status = r.status().as_u16();
    let hint = match status {
        413 => format!(" (the limit is {MAX_BODY} bytes)"),
        415 => " (send the body as JSON with `Content-Type: application/json`)".into(),
        _ => String::new(),
    };
    ApiError::new(status, format!("{}{hint}", r.body_text()))
}

fn engine_gone() -> ApiError {
    ApiError::new(503, "the service is shutting down")
}

async fn ask<T>(s: &AppState, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    s.engine.send(make(tx)).ok()?;
    rx.await.ok()
}

/// A JSON request handed to the engine: a rejected body or the engine's error becomes a
/// JSON error; every request counts in the metrics.
async fn handle<Req, Resp: serde::Serialize>(
    s: AppState,
    endpoint: &'static str,
    body: std::result::Result<Json<Req>, JsonRejection>,
    make: impl FnOnce(Req, oneshot::Sender<std::result::Result<Resp, ApiError>>) -> Msg,
) -> Response {
    let start = Instant::now();
    s.metrics.in_flight.inc();
    let resp = match body {
        Err(r) => error_response(&rejection(r)),
        Ok(Json(req)) => match ask(&s, |tx| make(req, tx)).await {
            Some(Ok(answer)) => Json(answer).into_response(),
            Some(Err(e)) => error_response(&e),
            None => error_response(&engine_gone()),
        },
    };
    s.metrics.in_flight.dec();
    s.metrics.observe(endpoint, resp.status(), start.elapsed().as_secs_f64());
    resp
}

async fn recommend(State(s): State<AppState>, body: std::result::Result<Json<RecommendRequest>, JsonRejection>) -> Response {
    handle(s, "recommend", body, Msg::Recommend).await
}

async fn feedback(State(s): State<AppState>, body: std::result::Result<Json<FeedbackRequest>, JsonRejection>) -> Response {
    handle(s, "feedback", body, Msg::Feedback).await
}

/// `GET /health`; `?state=digest` adds each learning arm's state digest (it saves the
/// arm's whole state: the engine waits for it).
async fn health(State(s): State<AppState>, uri: axum::http::Uri) -> Response {
    let digest = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "state=digest"));
    match ask(&s, |tx| Msg::Health(digest, tx)).await {
        Some(h) => Json(h).into_response(),
        None => error_response(&engine_gone()),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode()).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(&ApiError::new(
        404,
        format!("no endpoint {}: POST /recommend, POST /feedback, GET /health, GET /metrics", uri.path()),
    ))
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let allowed = match uri.path() {
        "/recommend" | "/feedback" => "POST",
        _ => "GET",
    };
    let mut r = error_response(&ApiError::new(405, format!("{method} {} is not allowed: use {allowed}", uri.path())));
    r.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static(allowed));
    r
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/recommend", post(recommend))
        .route("/feedback", post(feedback))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// How a server ended.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub requests: u64,
    pub log: Option<PathBuf>,
    /// Connections were still open when the drain's time ran out, and were cut.
    pub cut: bool,
}

/// How the HTTP side runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpOptions {
    /// Threads answering HTTP.
    pub threads: usize,
    /// The longest a request's headers (or the next request's, on an idle kept-alive
    /// connection) may take to arrive whole before the connection is closed, and its
    /// body before it is answered 408.
    pub read_timeout: Duration,
    /// After SIGINT or SIGTERM, the longest the server waits for open connections to
    /// finish before it cuts them and closes the log.
    pub drain: Duration,
}

/// The default read timeout and drain bound, in seconds.
pub const DEFAULT_READ_TIMEOUT_S: f64 = 10.0;
pub const DEFAULT_DRAIN_S: f64 = 10.0;
/// The longest read timeout or drain allowed, in seconds.
pub const MAX_TIMEOUT_S: f64 = 3600.0;

impl HttpOptions {
    /// Options from seconds, checked.
    pub fn new(threads: usize, read_timeout_s: f64, drain_s: f64) -> Result<HttpOptions> {
        if !(1..=MAX_HTTP_THREADS).contains(&threads) {
            return Err(Error::Other(format!(
                "--threads {threads}: allowed 1 to {MAX_HTTP_THREADS} (threads answering HTTP; the policies run on one \
                 engine thread besides, so more than a few per core gain nothing)"
            )));
        }
        if !(read_timeout_s.is_finite() && (0.1..=MAX_TIMEOUT_S).contains(&read_timeout_s)) {
            return Err(Error::Other(format!("--read-timeout {read_timeout_s}: allowed 0.1 to {MAX_TIMEOUT_S} seconds")));
        }
        if !(drain_s.is_finite() && (0.0..=MAX_TIMEOUT_S).contains(&drain_s)) {
            return Err(Error::Other(format!("--drain {drain_s}: allowed 0 to {MAX_TIMEOUT_S} seconds")));
        }
        Ok(HttpOptions {
            threads,
            read_timeout: Duration::from_secs_f64(read_timeout_s),
            drain: Duration::from_secs_f64(drain_s),
        })
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions::new(2, DEFAULT_READ_TIMEOUT_S, DEFAULT_DRAIN_S).expect("the defaults are allowed")
    }
}

/// The body of a request, read whole within `deadline` (a body that stops coming, or
/// trickles, is answered 408 instead of holding its connection), then handed on.
async fn body_deadline(State(deadline): State<Duration>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(e)) => {
            if format!("{e:?}").contains("LengthLimitError") {
                error_response(&ApiError::new(413, format!("the request body is over the limit of {MAX_BODY} bytes")))
            } else {
                error_response(&ApiError::new(400, format!("the request body could not be read: {e}")))
            }
        }
        Err(_) => error_response(&ApiError::new(
            408,
            format!("the request body did not arrive whole within {} s (--read-timeout)", deadline.as_secs_f64()),
        )),
    }
}

/// SIGINT and SIGTERM, listened to from the moment this is made (so that a signal that
/// comes early is not the default action's: death without closing the log).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |k| signal(k).map_err(|e| Error::Other(format!("cannot listen for signals: {e}")));
            Ok(Signals { int: listen(SignalKind::interrupt())?, term: listen(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The most HTTP threads `fypsim serve --threads` takes (a larger count only costs memory
/// and, at tens of thousands, aborts on thread creation).
pub const MAX_HTTP_THREADS: usize = 256;

/// Builds the service, listens on `addr` (port 0: any free port), calls `on_ready` with
/// the bound address and the service's health, and serves until SIGINT or SIGTERM; then
/// drains the requests in flight (for at most `http.drain`) and closes the log.
pub fn serve(
    opts: ServeOptions,
    addr: SocketAddr,
    http: HttpOptions,
    on_ready: impl FnOnce(SocketAddr, &Health),
) -> Result<Stopped> {
    let threads = http.threads;
    HttpOptions::new(threads, http.read_timeout.as_secs_f64(), http.drain.as_secs_f64())?;
    // Signals are listened to before the world loads: one that comes while it loads stops
    // the server as soon as it is up, cleanly.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))?;
    let mut signals = {
        let _inside = runtime.enter();
        Signals::new()?
    };
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel::<Msg>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let m = Arc::clone(&metrics);
    let died = Arc::new(tokio::sync::Notify::new());
    let engine_died = Arc::clone(&died);
    let engine = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine(opts, ready_tx, rx, m, engine_died))
        .map_err(|e| Error::Other(format!("cannot start the engine thread: {e}")))?;
    let health = match ready_rx.recv() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            let _ = engine.join();
            return Err(e);
        }
        Err(_) => return Err(Error::Other("the engine stopped before it was ready".into())),
    };
    let state = AppState { engine: tx, metrics: Arc::clone(&metrics) };
    let app = router(state).layer(axum::middleware::from_fn_with_state(http.read_timeout, body_deadline));
    let served: Result<bool> = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::Other(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(|e| Error::Other(format!("cannot read the bound address: {e}")))?;
        on_ready(bound, &health);
        let mut conn = hyper::server::conn::http1::Builder::new();
        // Headers (of a first request, or the next on a kept-alive connection) must arrive
        // whole within the read timeout; a body within it too (body_deadline).
        conn.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(http.read_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors, say: wait a little rather than spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    let connection = graceful.watch(conn.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                _ = signals.next() => break,
                _ = died.notified() => break,
            }
        }
        drop(listener);
        // The drain is bounded, and a second signal cuts it short: no client can keep the
        // server (and its log) from closing.
        tokio::select! {
            _ = graceful.shutdown() => Ok(false),
            _ = tokio::time::sleep(http.drain) => Ok(true),
            _ = signals.next() => Ok(true),
        }
    });
    // Every handler (and its sender) is gone with the runtime (a cut connection's handler
    // too): the engine answers what it holds, drains and stops.
    drop(runtime);
    let log = match engine.join() {
        Ok(r) => r?,
        Err(_) => return Err(Error::Other("the engine thread panicked; the log holds what was flushed before".into())),
    };
    let cut = served?;
    Ok(Stopped { requests: metrics.served.load(std::sync::atomic::Ordering::Relaxed), log, cut })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::PolicyKind;
    use crate::serve::{ArmSpec, Source};

    /// docs/serving.md: should the engine fail, it flushes the log and stops the server
    /// with an error that says to restart on the same folder; the restart goes on.
    #[test]
    fn a_failing_engine_flushes_the_log_stops_the_server_and_a_restart_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let opts = || ServeOptions {
            arms: vec![ArmSpec::plain("A", Source::Baseline(PolicyKind::Greedy))],
            shares: None,
            salt: "crash".into(),
            config: Some(Config::from_toml_str("seed = 3\n[world]\nn_videos = 300\nn_users = 40\n", &[]).unwrap()),
            log: Some(log.clone()),
            learning_checkpoint_every: crate::serve::LEARNING_CHECKPOINT_EVERY,
        };
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let died = Arc::new(tokio::sync::Notify::new());
        let (d, m, o) = (Arc::clone(&died), Arc::new(Metrics::new()), opts());
        let thread = std::thread::spawn(move || engine(o, ready_tx, rx, m, d));
        ready_rx.recv().unwrap().unwrap();
        let (reply, answer) = oneshot::channel();
        tx.send(Msg::Recommend(RecommendRequest { user: 3, new_session: true, recent: None }, reply)).unwrap();
        let rec = answer.blocking_recv().unwrap().unwrap();
        tx.send(Msg::Crash).unwrap();
        let err = thread.join().expect("the engine catches its own panic").unwrap_err().to_string();
        assert!(err.contains("the engine failed (a fault planted by a test)"), "{err}");
        assert!(err.contains("restart the server on the same --log"), "{err}");
        // The server was told to stop (a permit waits for the accept loop).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), died.notified()).await })
            .expect("the accept loop is told to stop");
        // The decision answered before the failure is in the log, whole.
        let text = std::fs::read_to_string(log.join("log.jsonl")).unwrap();
        assert!(text.ends_with('\n') && text.contains(&rec.request_id), "{text}");
        // A restart on the same folder goes on: the decision still takes its feedback.
        let mut again = Service::new(&opts()).unwrap();
        let fb = crate::serve::tests::watched(&rec.request_id, None);
        again.feedback(&fb, super::super::now_ms()).unwrap();
        again.close().unwrap();
    }
}
