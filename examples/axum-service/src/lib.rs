//! An axum service whose per-request values live in context locals.
//!
//! [`ContextLayer`] (outermost) runs each request in a child context of its own. A middleware
//! then does nothing but [`REQUEST`]`.set(..)` from the `x-request-id` and `x-user` headers, and
//! everything that runs for the request reads it back without it being passed down:
//!
//! - the handler, after `.await`s that move it between worker threads;
//! - a plain function several calls down ([`observe`] via `deep::render`);
//! - a task started with [`context_local::tokio::spawn`];
//! - a closure run by [`context_local::tokio::spawn_blocking`];
//! - every item of a rayon fan-out with
//!   [`in_child_contexts`](context_local::rayon::ParallelIteratorExt::in_child_contexts),
//!   started with [`context_local::rayon::spawn`] and awaited through a oneshot channel;
//! - an outer middleware, after the handler has returned.
//!
//! `GET /report` answers with what each of them saw, one `place: observation` line each
//! (checked by [`check`]). [`SCRATCH`] is a second, *non*-inheritable local the handler sets:
//! children must start without it, and nothing may be left in any worker's own context.
//!
//! The [`chain`] module goes across processes: two services over loopback, where service A
//! (axum + [`ContextLayer`]) calls service B, and the tenant and request id it set travel as
//! W3C Baggage (`context_local::baggage::Propagator`) into the same `#[context_local]` structs
//! in B.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use context_local::rayon::ParallelIteratorExt;
use context_local::tower::ContextLayer;
use context_local::Local;
use rayon::prelude::*;
use tokio::net::TcpSocket;
use tokio::sync::oneshot;

pub mod chain;
pub mod client;

/// The request being handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's `x-request-id` header, or `anon-N`.
    pub id: String,
    /// The client's `x-user` header, or `anonymous`.
    pub user: String,
}

impl Request {
    /// The request described by `headers`.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::HeaderMap;
    /// use context_local_axum_example::Request;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-request-id", "r1".parse().unwrap());
    /// headers.insert("x-user", "ada".parse().unwrap());
    /// assert_eq!(Request::from_headers(&headers), Request { id: "r1".into(), user: "ada".into() });
    /// assert!(Request::from_headers(&HeaderMap::new()).id.starts_with("anon-"));
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Request {
        static ANONYMOUS: AtomicU64 = AtomicU64::new(0);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Request {
            id: header("x-request-id")
                .unwrap_or_else(|| format!("anon-{}", ANONYMOUS.fetch_add(1, Ordering::Relaxed))),
            user: header("x-user").unwrap_or_else(|| "anonymous".to_string()),
        }
    }
}

/// The current request. Inheritable: tasks, blocking jobs and rayon items started for the
/// request see it (as it was when they were started). Explicit-only, as every request value
/// should be: a middleware that sets it outside `ContextLayer` (missing, or in the wrong place
/// in the `.layer` chain) panics at the first request instead of leaving it on the worker
/// thread for the next request (tests/wiring.rs shows both).
pub static REQUEST: Local<Request> = Local::named("REQUEST").inheritable().explicit_only();

/// A value that is *not* inheritable: the handler sets it (to the request id) for itself.
/// Children start without it, and what they set stays their own.
pub static SCRATCH: Local<String> = Local::named("SCRATCH").explicit_only();

/// How many items the rayon fan-out of `/report` has.
pub const RAYON_ITEMS: usize = 8;

/// The response header in which the outer middleware reports what it saw after the handler.
pub const SEEN_AFTER_HANDLER: &str = "x-seen-after-handler";

/// What the current context sees: `id=.. user=.. scratch=..` (`unbound` for a missing value).
///
/// # Examples
///
/// ```
/// use context_local_axum_example::{observe, Request, REQUEST};
///
/// assert_eq!(observe(), "request=unbound scratch=unbound");
/// REQUEST.scope(Request { id: "r1".into(), user: "ada".into() }, || {
///     assert_eq!(observe(), "id=r1 user=ada scratch=unbound");
/// });
/// ```
pub fn observe() -> String {
    let request = REQUEST
        .try_with(|r| format!("id={} user={}", r.id, r.user))
        .unwrap_or_else(|_| "request=unbound".to_string());
    let scratch = SCRATCH.get().unwrap_or_else(|| "unbound".to_string());
    format!("{request} scratch={scratch}")
}

/// Plain functions, several calls down from the handler, none of them passed the request.
mod deep {
    #[inline(never)]
    pub(crate) fn render() -> String {
        layout()
    }

    #[inline(never)]
    fn layout() -> String {
        widget()
    }

    #[inline(never)]
    fn widget() -> String {
        // No request id passed down: `log_fields` puts it on the line.
        tracing::info!("rendering");
        super::observe()
    }
}

/// The request's values on every log line, in the handler and in every child it starts:
/// `request_id` and `user`, read from [`REQUEST`] (`serve` mode logs with it; see `main.rs`).
///
/// # Examples
///
/// ```
/// use context_local::tracing::ContextFieldsExt;
/// use context_local_axum_example::log_fields;
///
/// let subscriber = tracing_subscriber::fmt().with_context_fields(&log_fields()).finish();
/// # let _ = subscriber;
/// ```
pub fn log_fields() -> context_local::tracing::ContextFields {
    context_local::tracing::ContextFields::builder()
        .display("request_id", REQUEST.proxy().map(|r| r.id.as_str()))
        .display("user", REQUEST.proxy().map(|r| r.user.as_str()))
        .build()
}

/// Counters of one server, shared by its handlers and its runtime's hooks.
#[derive(Debug, Default)]
pub struct Stats {
    handled: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    dirty_parks: AtomicU64,
}

impl Stats {
    /// Requests answered (`/report`; for the [`chain`] services, `/chain` and `/whoami`).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }

    /// The most of those handlers that were running at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// How often a worker thread went idle with a request value ([`REQUEST`] or [`SCRATCH`];
    /// for the [`chain`] services, [`chain::Tenant`] or [`chain::RequestId`]) bound in its own
    /// context (request values leaking out of their request): should stay 0.
    pub fn dirty_parks(&self) -> u64 {
        self.dirty_parks.load(Ordering::SeqCst)
    }

    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }
}

struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.handled.fetch_add(1, Ordering::SeqCst);
    }
}

/// The service: [`ContextLayer`] outermost, the middleware that sets [`REQUEST`], and the
/// routes `/` (a usage note) and `/report`.
pub fn app(stats: Arc<Stats>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/report", get(report))
        .with_state(stats)
        .layer(middleware::from_fn(set_request))
        .layer(middleware::from_fn(observe_after_handler))
        // Last `.layer` = outermost: every request's middleware, handler and response future
        // run in a child context of their own.
        .layer(ContextLayer::new())
}

/// The whole middleware: no scope, no guard, no cleanup — the request's context ends with it.
async fn set_request(request: HttpRequest, next: Next) -> Response {
    REQUEST.set(Request::from_headers(request.headers()));
    next.run(request).await
}

/// Outside `set_request`, but in the same request context: what it sees once the handler is done.
async fn observe_after_handler(request: HttpRequest, next: Next) -> Response {
    let mut response = next.run(request).await;
    let seen = HeaderValue::from_str(&observe())
        .unwrap_or_else(|_| HeaderValue::from_static("<not a header value>"));
    response.headers_mut().insert(SEEN_AFTER_HANDLER, seen);
    response
}

async fn index() -> &'static str {
    "GET /report with headers x-request-id and x-user: what the handler, a function several \
     calls down, a spawned task, a blocking job and a rayon fan-out each saw of the request\n"
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("unnamed").to_string()
}

async fn report(State(stats): State<Arc<Stats>>) -> String {
    let _in_flight = stats.enter();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut threads = vec![thread_name()];
    seen.push(("handler.entry".into(), observe()));
    SCRATCH.set(REQUEST.with(|r| r.id.clone()));

    // Yield and sleep: the task is rescheduled, often on another worker.
    for i in 0..3 {
        tokio::task::yield_now().await;
        threads.push(thread_name());
        tokio::time::sleep(Duration::from_millis(1 + i)).await;
        threads.push(thread_name());
    }
    seen.push(("handler.after-awaits".into(), observe()));
    seen.push(("deep".into(), deep::render()));

    let spawned = context_local::tokio::spawn(async {
        tokio::task::yield_now().await;
        let seen = deep::render();
        SCRATCH.set("spawned task".into()); // its own; the handler keeps its value
        seen
    })
    .await
    .unwrap_or_else(|e| format!("spawned task failed: {e}"));
    seen.push(("spawn".into(), spawned));
    threads.push(thread_name());

    let blocking = context_local::tokio::spawn_blocking(|| {
        let seen = deep::render();
        SCRATCH.set("blocking job".into()); // dropped with the job's context
        seen
    })
    .await
    .unwrap_or_else(|e| format!("blocking job failed: {e}"));
    seen.push(("spawn_blocking".into(), blocking));
    threads.push(thread_name());

    let (tx, rx) = oneshot::channel();
    context_local::rayon::spawn(move || {
        let items: Vec<(usize, String)> = (0..RAYON_ITEMS)
            .into_par_iter()
            .in_child_contexts()
            .map(|i| {
                let seen = deep::render();
                SCRATCH.set(format!("rayon item {i}")); // each item runs in a fresh fork
                (i, seen)
            })
            .collect();
        let _ = tx.send(items);
    });
    match rx.await {
        Ok(items) => seen.extend(items.into_iter().map(|(i, s)| (format!("rayon[{i}]"), s))),
        Err(_) => seen.push(("rayon".into(), "rayon job dropped its sender".into())),
    }
    threads.push(thread_name());
    seen.push(("handler.end".into(), observe()));

    let mut body = REQUEST.with(|r| format!("request {} for {}\n", r.id, r.user));
    for (place, observation) in &seen {
        body.push_str(&format!("{place}: {observation}\n"));
    }
    body.push_str(&format!("threads: {}\n", threads.join(" ")));
    body
}

/// What [`check`] found in one good reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// How many places reported exactly this request's values (the outer middleware included).
    pub places: usize,
    /// The worker threads the handler was seen on, in order (one entry per await point).
    pub threads: Vec<String>,
}

/// The places `/report` reports, in order, with the `SCRATCH` each must see (`None`: unbound).
fn expected_places(request: &Request) -> Vec<(String, Option<&str>)> {
    let own = Some(request.id.as_str());
    let mut places = vec![
        ("handler.entry".to_string(), None),
        ("handler.after-awaits".to_string(), own),
        ("deep".to_string(), own),
        ("spawn".to_string(), None),
        ("spawn_blocking".to_string(), None),
    ];
    // rayon's collect keeps the items' order.
    places.extend((0..RAYON_ITEMS).map(|i| (format!("rayon[{i}]"), None)));
    places.push(("handler.end".to_string(), own));
    places
}

fn expected_observation(request: &Request, scratch: Option<&str>) -> String {
    format!(
        "id={} user={} scratch={}",
        request.id,
        request.user,
        scratch.unwrap_or("unbound")
    )
}

/// Checks a reply of `/report` for `request`: status 200, every place (handler, deep
/// function, spawned task, blocking job, each rayon item, outer middleware) saw exactly this
/// request's id and user, and [`SCRATCH`] only where the handler's own context is.
///
/// # Errors
///
/// A description of the first difference, with the whole reply.
pub fn check(reply: &client::Reply, request: &Request) -> Result<Checked, String> {
    let fail = |what: String| Err(format!("{what}\n--- reply ---\n{reply:?}"));
    if reply.status != 200 {
        return fail(format!("status {}", reply.status));
    }
    let mut lines = reply.body.lines();
    let title = format!("request {} for {}", request.id, request.user);
    if lines.next() != Some(title.as_str()) {
        return fail(format!("expected first line {title:?}"));
    }
    let mut places = 0;
    for (place, scratch) in expected_places(request) {
        let expected = format!("{place}: {}", expected_observation(request, scratch));
        match lines.next() {
            Some(line) if line == expected => places += 1,
            other => return fail(format!("expected {expected:?}, got {other:?}")),
        }
    }
    let threads: Vec<String> = match lines.next().and_then(|l| l.strip_prefix("threads: ")) {
        Some(list) => list.split(' ').map(str::to_string).collect(),
        None => return fail("no threads line".to_string()),
    };
    if let Some(extra) = lines.next() {
        return fail(format!("unexpected line {extra:?}"));
    }
    let after = expected_observation(request, Some(&request.id));
    if reply.header(SEEN_AFTER_HANDLER) != Some(after.as_str()) {
        return fail(format!("expected {SEEN_AFTER_HANDLER}: {after}"));
    }
    places += 1;
    Ok(Checked { places, threads })
}

/// The runtime the server runs on: `workers` worker threads named `rt-N` (so replies can
/// say where they ran), at most 8 blocking threads (reused across requests), and a hook that
/// counts workers going idle with a request value in their own context
/// ([`Stats::dirty_parks`]).
///
/// # Errors
///
/// As [`tokio::runtime::Builder::build`].
pub fn runtime(workers: usize, stats: &Arc<Stats>) -> io::Result<tokio::runtime::Runtime> {
    runtime_named("rt", workers, stats, || {
        REQUEST.is_set() || SCRATCH.is_set()
    })
}

/// [`runtime`] with worker threads named `{prefix}-N`, counting a park as dirty when `dirty()`.
pub(crate) fn runtime_named(
    prefix: &'static str,
    workers: usize,
    stats: &Arc<Stats>,
    dirty: fn() -> bool,
) -> io::Result<tokio::runtime::Runtime> {
    let stats = Arc::clone(stats);
    let next = AtomicUsize::new(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(8)
        .thread_name_fn(move || format!("{prefix}-{}", next.fetch_add(1, Ordering::Relaxed)))
        .on_thread_park(move || {
            // Between polls a worker is in its own context: no request value may be here.
            if dirty() {
                stats.dirty_parks.fetch_add(1, Ordering::SeqCst);
            }
        })
        .enable_all()
        .build()
}

/// A running server: [`app`] on its own [`runtime`], served from a thread of its own.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: oneshot::Sender<()>,
    done: mpsc::Receiver<io::Result<()>>,
    thread: thread::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` for a free port) and serves on `workers` worker threads.
    ///
    /// # Errors
    ///
    /// Binding the address, building the runtime, spawning the thread.
    pub fn start(addr: impl ToSocketAddrs, workers: usize) -> io::Result<Server> {
        Server::start_app(addr, workers, "rt", app, || {
            REQUEST.is_set() || SCRATCH.is_set()
        })
    }

    /// Serves the router `app(stats)` on `addr` with `workers` worker threads named
    /// `{threads}-N`; a worker going idle while `dirty()` counts in [`Stats::dirty_parks`].
    pub(crate) fn start_app(
        addr: impl ToSocketAddrs,
        workers: usize,
        threads: &'static str,
        app: impl FnOnce(Arc<Stats>) -> Router,
        dirty: fn() -> bool,
    ) -> io::Result<Server> {
        let stats = Arc::new(Stats::default());
        let runtime = runtime_named(threads, workers, &stats, dirty)?;
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?; // as std's `bind` does: restarts despite TIME_WAIT
        socket.bind(addr)?;
        // A backlog of 1024: with std's and tokio's `bind` (128), some of 200 simultaneous
        // connects overflow it and wait out a 1 s SYN retransmission.
        let listener = {
            let _runtime = runtime.enter();
            socket.listen(1024)?
        };
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (finished, done) = mpsc::channel();
        let app = app(Arc::clone(&stats));
        let thread = thread::Builder::new()
            .name(format!("server-{threads}"))
            .spawn(move || {
                let served = runtime.block_on(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                });
                // Stops the workers and the blocking threads.
                runtime.shutdown_timeout(Duration::from_secs(5));
                let _ = finished.send(served);
            })?;
        Ok(Server {
            addr,
            stats,
            stop,
            done,
            thread,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Graceful shutdown: stops accepting, lets the open connections finish, stops the
    /// runtime, and joins the server thread; returns how long that took.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] if all that did not happen within `timeout`; the server's
    /// own error if serving failed.
    pub fn shutdown(self, timeout: Duration) -> io::Result<Duration> {
        let start = Instant::now();
        let _ = self.stop.send(());
        match self.done.recv_timeout(timeout) {
            Ok(served) => {
                self.thread
                    .join()
                    .map_err(|_| io::Error::other("the server thread panicked"))?;
                served.map(|()| start.elapsed())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the server did not shut down within {timeout:?}"),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("the server thread died"))
            }
        }
    }
}
