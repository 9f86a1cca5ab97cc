//! Two services over loopback, one request across both: context locals that travel as W3C
//! Baggage.
//!
//! - **Service A** ([`service_a`]) is the edge: [`ContextLayer`] outermost, then a middleware
//!   that `set`s [`Tenant`] and [`RequestId`] from the client's `x-tenant` and `x-request-id`
//!   headers. Its `/chain` handler calls service B over loopback with hyper-util's client,
//!   wrapped once in [`InjectLayer`]: every outgoing request carries the current values as
//!   `baggage` (and the trace context), with no header code at the call site.
//! - **Service B** ([`service_b`]) restores them: [`ExtractLayer`] outermost runs each request
//!   in a context started from its `baggage` (and `traceparent`); a small middleware reports
//!   the baggage errors, found in the request's extensions, in response headers
//!   ([`BAGGAGE_ERRORS`], [`BAGGAGE_ERROR`]). Its `/whoami` handler reads the *same*
//!   `#[context_local]` structs after awaits, three plain calls down, in a spawned task and in
//!   a blocking job, and answers with what each saw.
//!
//! Both use [`composite`]: OpenTelemetry's `TraceContextPropagator` and the example's
//! [`propagator`] in one `TextMapCompositePropagator`. A answers with its own view and B's
//! answer; [`check_chain`] checks such a reply line by line.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Extension, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use context_local::baggage::{Extracted, Propagator, HEADER};
use context_local::context_local;
use context_local::propagate::Otel;
use context_local::tower::{ContextLayer, ExtractLayer, InjectLayer};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::client::Reply;
use crate::{thread_name, Server, Stats};

/// The tenant a request is for: set by service A from `x-tenant`, restored by service B from
/// the `baggage` header (key `tenant`). Inheritable, as every baggage local is; explicit-only:
/// never bound in a worker thread's own context, so a missing `ContextLayer` or
/// `ExtractLayer` is a panic at A's `set` or `unbound` in B, never another request's tenant.
#[context_local(baggage = "tenant", explicit_only)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant(pub String);

/// The request's id: set by service A from `x-request-id` (or made up, `a-N`), restored by
/// service B from the `baggage` header (key `request-id`). Explicit-only, as [`Tenant`].
#[context_local(baggage = "request-id", explicit_only)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Plain text both ways: any string is a tenant or a request id (the propagator
/// percent-encodes what needs it).
macro_rules! text_value {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = Infallible;
            fn from_str(s: &str) -> Result<Self, Infallible> {
                Ok($ty(s.to_string()))
            }
        }
    )*};
}
text_value!(Tenant, RequestId);

/// The header from which service A takes the tenant (UTF-8; HTTP trims its ends).
pub const X_TENANT: &str = "x-tenant";
/// The header from which service A takes the request id.
pub const X_REQUEST_ID: &str = "x-request-id";
/// Service B's response header with the number of problems found in the request's `baggage`.
pub const BAGGAGE_ERRORS: &str = "x-baggage-errors";
/// Service B's response headers, one per problem, each message escaped to ASCII
/// (`str::escape_default`).
pub const BAGGAGE_ERROR: &str = "x-baggage-error";

/// The one propagator both services use: [`Tenant`] under `tenant`, [`RequestId`] under
/// `request-id`.
///
/// # Examples
///
/// ```
/// use context_local_axum_example::chain::{propagator, RequestId, Tenant};
///
/// assert_eq!(propagator().keys().collect::<Vec<_>>(), ["tenant", "request-id"]);
///
/// let mut headers = std::collections::HashMap::new();
/// context_local::Context::new().run(|| {
///     Tenant::set(Tenant("acme corp, 100%".into())); // explicit-only: in a context of its own
///     propagator().inject(&mut headers).unwrap();
/// });
/// assert_eq!(headers["baggage"], "tenant=acme%20corp%2C%20100%25");
/// ```
pub fn propagator() -> &'static Propagator {
    static PROPAGATOR: OnceLock<Propagator> = OnceLock::new();
    PROPAGATOR.get_or_init(|| {
        Propagator::new()
            .with(Tenant::local())
            .with(RequestId::local())
    })
}

/// What both services propagate: the trace context (OpenTelemetry's `TraceContextPropagator`)
/// and [`propagator`]'s locals, as one composite — B's [`ExtractLayer`] reads it, A's
/// [`InjectLayer`] writes it.
pub fn composite() -> &'static Otel<TextMapCompositePropagator> {
    static COMPOSITE: OnceLock<Otel<TextMapCompositePropagator>> = OnceLock::new();
    COMPOSITE.get_or_init(|| {
        Otel(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(
                Propagator::new()
                    .with(Tenant::local())
                    .with(RequestId::local()),
            ),
        ]))
    })
}

/// What the current context sees: `tenant=".." request-id=".."` (values `{:?}`-quoted, so
/// spaces, commas and quotes are unambiguous; `unbound` for a missing one).
///
/// # Examples
///
/// ```
/// use context_local_axum_example::chain::{observe, Tenant};
///
/// assert_eq!(observe(), "tenant=unbound request-id=unbound");
/// let seen = context_local::Context::new().run(|| {
///     Tenant::set(Tenant("acme corp".into()));
///     observe()
/// });
/// assert_eq!(seen, r#"tenant="acme corp" request-id=unbound"#);
///
/// // Explicit-only: a thread's own context never holds one.
/// assert!(std::panic::catch_unwind(|| Tenant::set(Tenant("leak".into()))).is_err());
/// ```
pub fn observe() -> String {
    let tenant = Tenant::try_with(|t| format!("{:?}", t.0));
    let id = RequestId::try_with(|r| format!("{:?}", r.0));
    format!(
        "tenant={} request-id={}",
        tenant.unwrap_or_else(|_| "unbound".into()),
        id.unwrap_or_else(|_| "unbound".into())
    )
}

/// What [`observe`] shows for `tenant` and `request_id`.
fn expected_observation(tenant: &str, request_id: &str) -> String {
    format!("tenant={tenant:?} request-id={request_id:?}")
}

/// Whether a worker holds a chain value in its own context (a leak). Both are explicit-only,
/// so this cannot happen any more (a `set` there panics); the check stays as the proof.
fn dirty() -> bool {
    Tenant::is_set() || RequestId::is_set()
}

/// Plain functions, several calls down, none of them passed the request.
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
        super::observe()
    }
}

// ---------------------------------------------------------------------------------------------
// Service B: restores the baggage.

/// Service B: `/whoami` behind [`ExtractLayer`] (outermost: each request in its own context,
/// started from its headers by [`composite`]) and [`report_baggage_errors`].
pub fn service_b(stats: Arc<Stats>) -> Router {
    Router::new()
        .route("/", get(b_index))
        .route("/whoami", get(whoami))
        .with_state(stats)
        .layer(middleware::from_fn(report_baggage_errors))
        .layer(ExtractLayer::new(composite()))
}

/// Reports what [`ExtractLayer`] found wrong in the request's `baggage` (in the request's
/// extensions) in the response: [`BAGGAGE_ERRORS`], and one [`BAGGAGE_ERROR`] each. The valid
/// members still apply.
pub async fn report_baggage_errors(
    Extension(extracted): Extension<Extracted>,
    request: HttpRequest,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let errors = extracted.errors();
    let headers = response.headers_mut();
    headers.insert(BAGGAGE_ERRORS, HeaderValue::from(errors.len()));
    for error in errors {
        // Escaped to printable ASCII: always a valid header value.
        let text = error.to_string().escape_default().to_string();
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.append(BAGGAGE_ERROR, value);
        }
    }
    response
}

async fn b_index() -> &'static str {
    "service B: GET /whoami with a `baggage` header (tenant=..,request-id=..): what the \
     handler, a function several calls down, a spawned task and a blocking job saw\n"
}

/// What B's handler, a deep function, a spawned task and a blocking job see; the `baggage`
/// header as received first.
async fn whoami(State(stats): State<Arc<Stats>>, headers: HeaderMap) -> String {
    let _in_flight = stats.enter();
    let received: Vec<String> = headers
        .get_all(HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let mut lines = vec![format!("received: {}", received.join(", "))];
    let mut threads = vec![thread_name()];
    lines.push(format!("entry: {}", observe()));
    for i in 0..3 {
        tokio::task::yield_now().await;
        threads.push(thread_name());
        tokio::time::sleep(Duration::from_millis(1 + i)).await;
        threads.push(thread_name());
    }
    lines.push(format!("after-awaits: {}", observe()));
    lines.push(format!("deep: {}", deep::render()));
    let spawned = context_local::tokio::spawn(async {
        tokio::task::yield_now().await;
        deep::render()
    })
    .await
    .unwrap_or_else(|e| format!("spawned task failed: {e}"));
    lines.push(format!("spawn: {spawned}"));
    let blocking = context_local::tokio::spawn_blocking(deep::render)
        .await
        .unwrap_or_else(|e| format!("blocking job failed: {e}"));
    lines.push(format!("spawn_blocking: {blocking}"));
    threads.push(thread_name());
    lines.push(format!("threads: {}", threads.join(" ")));
    let mut body = lines.join("\n");
    body.push('\n');
    body
}

/// The places B's `/whoami` reports, in order, after `received`.
pub const B_PLACES: [&str; 5] = ["entry", "after-awaits", "deep", "spawn", "spawn_blocking"];

// ---------------------------------------------------------------------------------------------
// Service A: sets the values, calls B.

/// A's client for B: hyper-util's, wrapped once in [`InjectLayer`] (or not, for the control).
type BClient = BoxCloneSyncService<http::Request<String>, Reply, io::Error>;

#[derive(Clone)]
struct Edge {
    b: SocketAddr,
    client: BClient,
    stats: Arc<Stats>,
}

/// hyper-util's HTTP/1 client, with [`InjectLayer`] when `inject`; answers as a [`Reply`].
fn b_client(inject: bool) -> BClient {
    let client: Client<HttpConnector, String> = Client::builder(TokioExecutor::new()).build_http();
    let service = ServiceBuilder::new()
        .option_layer(inject.then(|| InjectLayer::new(composite())))
        .service(client)
        .map_err(io::Error::other)
        .and_then(
            |response: http::Response<hyper::body::Incoming>| async move {
                let (head, body) = response.into_parts();
                let body = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
                    .await
                    .map_err(io::Error::other)?;
                Ok(Reply {
                    status: head.status.as_u16(),
                    headers: head
                        .headers
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            },
        );
    BoxCloneSyncService::new(service)
}

/// Service A: `/chain`, which calls service B at `b`; [`ContextLayer`] outermost, then the
/// middleware that sets [`Tenant`] and [`RequestId`] from the request's headers.
pub fn service_a(b: SocketAddr, stats: Arc<Stats>) -> Router {
    service_a_with(b, stats, true)
}

/// Service A, its client for B with [`InjectLayer`] or (the control) without.
fn service_a_with(b: SocketAddr, stats: Arc<Stats>, inject: bool) -> Router {
    let client = b_client(inject);
    Router::new()
        .route("/", get(a_index))
        .route("/chain", get(chain))
        .with_state(Edge { b, client, stats })
        .layer(middleware::from_fn(set_from_headers))
        .layer(ContextLayer::new())
}

/// A's middleware: just `set`s, in the request's own context (from `ContextLayer`).
async fn set_from_headers(request: HttpRequest, next: Next) -> Response {
    static ANONYMOUS: AtomicU64 = AtomicU64::new(0);
    if let Some(tenant) = utf8_header(request.headers(), X_TENANT) {
        Tenant::set(Tenant(tenant));
    }
    let id = utf8_header(request.headers(), X_REQUEST_ID)
        .unwrap_or_else(|| format!("a-{}", ANONYMOUS.fetch_add(1, Ordering::Relaxed)));
    RequestId::set(RequestId(id));
    next.run(request).await
}

/// Header `name`, if it is UTF-8: taken as sent (tenants are not only ASCII).
fn utf8_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?;
    std::str::from_utf8(value.as_bytes())
        .ok()
        .map(str::to_string)
}

async fn a_index() -> &'static str {
    "service A: GET /chain with headers x-tenant and x-request-id: calls service B, which \
     reads both from its own context locals, restored from the `baggage` header\n"
}

/// `GET /whoami` on service B: no header code here, the client's [`InjectLayer`] writes the
/// current values.
async fn call_b(edge: &Edge) -> io::Result<Reply> {
    let request = http::Request::get(format!("http://{}/whoami", edge.b))
        .body(String::new())
        .map_err(io::Error::other)?;
    edge.client.clone().oneshot(request).await
}

/// A's `/chain`: its own view, B's answer (each line prefixed `b.`), its own view again.
async fn chain(State(edge): State<Edge>) -> Response {
    let _in_flight = edge.stats.enter();
    let mut lines = vec![format!("a.handler: {}", observe())];
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    lines.push(format!("a.after-awaits: {}", observe()));
    let status = match call_b(&edge).await {
        Ok(reply) => {
            lines.push(format!("b.status: {}", reply.status));
            lines.push(format!(
                "b.baggage-errors: {}",
                reply.header(BAGGAGE_ERRORS).unwrap_or("missing")
            ));
            lines.extend(
                reply
                    .headers
                    .iter()
                    .filter(|(name, _)| name == BAGGAGE_ERROR)
                    .map(|(_, error)| format!("b.baggage-error: {error}")),
            );
            lines.extend(reply.body.lines().map(|line| format!("b.{line}")));
            StatusCode::OK
        }
        Err(e) => {
            lines.push(format!("b.unreachable: {e}"));
            StatusCode::BAD_GATEWAY
        }
    };
    lines.push(format!("a.end: {}", observe()));
    let mut body = lines.join("\n");
    body.push('\n');
    (status, body).into_response()
}

// ---------------------------------------------------------------------------------------------
// Running both, and checking a reply.

/// Both services, each on its own runtime (worker threads `a-N` and `b-N`) and loopback port.
#[derive(Debug)]
pub struct Chain {
    /// Service A, the edge: `GET /chain`.
    pub a: Server,
    /// Service B, which A calls: `GET /whoami`.
    pub b: Server,
}

impl Chain {
    /// Starts B on `b_addr`, then A on `a_addr` calling it; `workers` worker threads each.
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn start(
        a_addr: impl ToSocketAddrs,
        b_addr: impl ToSocketAddrs,
        workers: usize,
    ) -> io::Result<Chain> {
        Self::start_with(a_addr, b_addr, workers, true)
    }

    /// The control: as [`start`](Self::start), but A's client has no [`InjectLayer`], so B
    /// gets no baggage.
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn start_without_inject_layer(
        a_addr: impl ToSocketAddrs,
        b_addr: impl ToSocketAddrs,
        workers: usize,
    ) -> io::Result<Chain> {
        Self::start_with(a_addr, b_addr, workers, false)
    }

    fn start_with(
        a_addr: impl ToSocketAddrs,
        b_addr: impl ToSocketAddrs,
        workers: usize,
        inject: bool,
    ) -> io::Result<Chain> {
        let b = Server::start_app(b_addr, workers, "b", service_b, dirty)?;
        let b_at = b.addr();
        let a_app = |s| service_a_with(b_at, s, inject);
        let a = match Server::start_app(a_addr, workers, "a", a_app, dirty) {
            Ok(a) => a,
            Err(e) => {
                let _ = b.shutdown(Duration::from_secs(5));
                return Err(e);
            }
        };
        Ok(Chain { a, b })
    }

    /// Graceful shutdown of A, then B, within `timeout` each; how long each took.
    ///
    /// # Errors
    ///
    /// As [`Server::shutdown`] (B is still shut down when A fails to).
    pub fn shutdown(self, timeout: Duration) -> io::Result<(Duration, Duration)> {
        let a = self.a.shutdown(timeout);
        let b = self.b.shutdown(timeout)?;
        Ok((a?, b))
    }
}

/// What [`check_chain`] found in one good reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainChecked {
    /// How many places (in A and in B) saw exactly this request's tenant and id.
    pub places: usize,
    /// The `baggage` header A sent (and B received).
    pub sent: String,
    /// B's worker threads, in order (one entry per await point).
    pub b_threads: Vec<String>,
}

/// Checks a reply of A's `/chain` for a request with `tenant` and `request_id`: status 200,
/// every place in A and in B saw exactly these values, the `baggage` header B received decodes
/// back to them, and B found no baggage error.
///
/// # Errors
///
/// A description of the first difference, with the whole reply.
pub fn check_chain(reply: &Reply, tenant: &str, request_id: &str) -> Result<ChainChecked, String> {
    let fail = |what: String| Err(format!("{what}\n--- reply ---\n{reply:?}"));
    if reply.status != 200 {
        return fail(format!("status {}", reply.status));
    }
    let own = expected_observation(tenant, request_id);
    let mut lines = reply.body.lines();
    let mut places = 0;
    let expect = |lines: &mut std::str::Lines<'_>, expected: String| match lines.next() {
        Some(line) if line == expected => Ok(()),
        other => Err(format!("expected {expected:?}, got {other:?}")),
    };
    for place in ["a.handler", "a.after-awaits"] {
        if let Err(e) = expect(&mut lines, format!("{place}: {own}")) {
            return fail(e);
        }
        places += 1;
    }
    let fixed = [
        "b.status: 200".to_string(),
        "b.baggage-errors: 0".to_string(),
    ];
    for expected in fixed {
        if let Err(e) = expect(&mut lines, expected) {
            return fail(e);
        }
    }
    let Some(sent) = lines.next().and_then(|l| l.strip_prefix("b.received: ")) else {
        return fail("no b.received line".into());
    };
    // What A sent (B received) decodes to exactly this request's values, without a problem.
    let extracted = propagator().extract_headers([sent.as_bytes()]);
    let decoded = extracted.snapshot().run(observe);
    if decoded != own || !extracted.errors().is_empty() {
        return fail(format!(
            "A sent {sent:?}: decodes to {decoded:?}, errors {:?}",
            extracted.errors()
        ));
    }
    for place in B_PLACES {
        if let Err(e) = expect(&mut lines, format!("b.{place}: {own}")) {
            return fail(e);
        }
        places += 1;
    }
    let b_threads: Vec<String> = match lines.next().and_then(|l| l.strip_prefix("b.threads: ")) {
        Some(list) => list.split(' ').map(str::to_string).collect(),
        None => return fail("no b.threads line".into()),
    };
    if let Err(e) = expect(&mut lines, format!("a.end: {own}")) {
        return fail(e);
    }
    places += 1;
    if let Some(extra) = lines.next() {
        return fail(format!("unexpected line {extra:?}"));
    }
    Ok(ChainChecked {
        places,
        sent: sent.to_string(),
        b_threads,
    })
}

/// The `i`th tenant of a test run: distinct, and tricky for a header: spaces, commas,
/// semicolons, `=`, `%` (also `%20` and `%zz` literally), quotes, backslashes, non-ASCII, and
/// one that looks like another baggage member. (No leading or trailing spaces: HTTP trims the
/// `x-tenant` header that brings it to A; in baggage they would survive.)
///
/// # Examples
///
/// ```
/// use context_local_axum_example::chain::tricky_tenant;
///
/// assert_eq!(tricky_tenant(0), "acme corp #0");
/// assert_ne!(tricky_tenant(1), tricky_tenant(11));
/// ```
pub fn tricky_tenant(i: usize) -> String {
    match i % 10 {
        0 => format!("acme corp #{i}"),
        1 => format!("a,b, c {i}"),
        2 => format!("100% sure {i}"),
        3 => format!("literally %20 and %zz {i}"),
        4 => format!("Zürich Straße {i}"),
        5 => format!("東京 {i} 🚀"),
        6 => format!("semi;colon=eq {i}"),
        7 => format!("quote\"back\\slash {i}"),
        8 => format!("x,request-id=stolen-{i}"),
        _ => format!("tenant={i},tenant=again"),
    }
}

/// The `i`th request id of a test run: distinct, some with spaces, commas and `%`.
///
/// # Examples
///
/// ```
/// use context_local_axum_example::chain::tricky_request_id;
///
/// assert_eq!(tricky_request_id(0), "req-0");
/// assert_eq!(tricky_request_id(1), "req 1, 50%");
/// ```
pub fn tricky_request_id(i: usize) -> String {
    match i % 3 {
        0 => format!("req-{i}"),
        1 => format!("req {i}, 50%"),
        _ => format!("req/{i};v=ü"),
    }
}

/// A hostile `baggage` header for service B: valid members (with properties) among malformed
/// ones, a member too large for the W3C byte limit and members past it. The valid ones apply:
/// `tenant` is `hostile but valid`, `request-id` is `survivor`; the rest are
/// [`HOSTILE_ERRORS`] problems.
pub fn hostile_baggage() -> Vec<String> {
    let first = [
        "tenant=hostile%20but%20valid;ttl=5;secret",
        "=no-key",
        "no-equals",
        "request-id=bad%zzpercent",
        "bad key=1",
        "quote=\"x\"",
        "not-utf8=%FF%FE",
        "unknown=ignored",
        ",,", // empty members: tolerated
        "request-id = survivor ",
    ]
    .join(",");
    // A second `baggage` header: one member over 8192 bytes, then more that no longer fit.
    let huge = format!("huge={}", "x".repeat(9000));
    let second = format!("{huge},late-1=1,late-2=2,tenant=too-late");
    vec![first, second]
}

/// The problems [`hostile_baggage`] has: `=no-key`, `no-equals`, `request-id=bad%zzpercent`,
/// `bad key=1`, `quote="x"`, `not-utf8=%FF%FE`, and one for the 4 members past the limit.
pub const HOSTILE_ERRORS: usize = 7;
