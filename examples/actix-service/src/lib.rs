//! context-local in an actix-web service, over loopback.
//!
//! - The **server** ([`Server`]) wraps its `App` in
//!   [`RequestContext::extracting(&PROPAGATOR)`](RequestContext::extracting): each request —
//!   the handler's `!Send` future included — runs in its own context, started from its
//!   `baggage` header. The `/whoami` handler reads the explicit-only [`TENANT`] and
//!   [`REQUEST_ID`] after awaits and in a task it spawns on the worker, and answers with what it
//!   saw. No header code in the handler.
//! - The **client** ([`fire`]) is hyper-util's, wrapped once in [`InjectLayer`]: each request,
//!   sent from its own context, carries that context's values as W3C Baggage.
//!
//! Both locals are explicit-only: on an actix worker's own context they can be neither set nor
//! read, so an `App` without the middleware answers `unbound` (the controls in `tests/`), never
//! another request's tenant.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::{web, App, HttpMessage, HttpRequest, HttpServer};
use context_local::actix_web::RequestContext;
use context_local::baggage::{Extracted, Propagator};
use context_local::tower::InjectLayer;
use context_local::{FutureExt, Local};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

pub use context_local_example_driver as driver;

/// The tenant a request is for: baggage member `tenant`; never bound in a thread's own context.
pub static TENANT: Local<String> = Local::named("TENANT").baggage("tenant").explicit_only();
/// The request's id: baggage member `request-id`; never bound in a thread's own context.
pub static REQUEST_ID: Local<String> = Local::named("REQUEST_ID")
    .baggage("request-id")
    .explicit_only();

/// What both sides propagate: [`TENANT`] and [`REQUEST_ID`]. A plain `static`.
pub static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried(), REQUEST_ID.carried()]);

/// The header carrying the request id again, for the server to know which request it serves
/// without trusting the baggage it checks.
pub const X_REQUEST_ID: &str = "x-request-id";

/// Where the handler looks, in order.
pub const PLACES: [&str; 3] = ["entry", "after-awaits", "spawn_local"];

/// What the current context sees: `tenant=".." request-id=".."` (`unbound` for a missing one).
///
/// # Examples
///
/// ```
/// use context_local::Context;
/// use context_local_actix_example::{expected, observe, TENANT, REQUEST_ID};
///
/// assert_eq!(observe(), "tenant=unbound request-id=unbound");
/// let seen = Context::new().run(|| {
///     TENANT.set("acme".into());
///     REQUEST_ID.set("r-1".into());
///     observe()
/// });
/// assert_eq!(seen, expected("acme", "r-1"));
/// ```
pub fn observe() -> String {
    let show = |local: &Local<String>| {
        local
            .try_with(|v| format!("{v:?}"))
            .unwrap_or_else(|_| "unbound".into())
    };
    format!("tenant={} request-id={}", show(&TENANT), show(&REQUEST_ID))
}

/// What [`observe`] shows for `tenant` and `request_id`.
pub fn expected(tenant: &str, request_id: &str) -> String {
    format!("tenant={tenant:?} request-id={request_id:?}")
}

// ---------------------------------------------------------------------------------------------
// The server.

/// What the server saw for one request: its `x-request-id`, and what the handler saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The `x-request-id` header.
    pub request_id: String,
    /// `place: observation`, one per [`PLACES`] entry.
    pub places: Vec<String>,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// `GET /whoami`: what the handler saw at each place, one line each, then the number of
/// baggage problems (from the middleware's `Extracted`, in the request's extensions).
async fn whoami(request: HttpRequest, seen: web::Data<SeenLog>) -> String {
    let mut places = vec![format!("entry: {}", observe())];
    for i in 0..3 {
        actix_web::rt::task::yield_now().await;
        actix_web::rt::time::sleep(Duration::from_millis(1 + i)).await;
    }
    places.push(format!("after-awaits: {}", observe()));
    // A task on the same worker thread: `in_child_context` gives it the request's values.
    let local = actix_web::rt::spawn(
        async {
            actix_web::rt::task::yield_now().await;
            observe()
        }
        .in_child_context(),
    )
    .await
    .unwrap_or_else(|e| format!("failed: {e}"));
    places.push(format!("spawn_local: {local}"));
    let errors = request.extensions().get::<Extracted>().map_or_else(
        || "no Extracted".to_string(),
        |e| e.errors().len().to_string(),
    );
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = places.join("\n");
    body.push_str(&format!("\nbaggage-errors: {errors}\n"));
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Seen { request_id, places });
    body
}

/// A running actix-web server on a free loopback port, two workers.
pub struct Server {
    addr: SocketAddr,
    seen: SeenLog,
    handle: actix_web::dev::ServerHandle,
    done: mpsc::Receiver<io::Result<()>>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Starts it with [`RequestContext::extracting`] (`middleware`) or, for the control, without.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound or the server not started.
    pub fn start(middleware: bool) -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen = SeenLog::default();
        let data = web::Data::new(seen.clone());
        let (handle_tx, handle_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("actix-server".into())
            .spawn(move || {
                let served = actix_web::rt::System::new().block_on(async move {
                    let server = HttpServer::new(move || {
                        let app = App::new()
                            .app_data(data.clone())
                            .route("/whoami", web::get().to(whoami));
                        // The whole wiring: `wrap` it last (outermost).
                        app.wrap(actix_web::middleware::Condition::new(
                            middleware,
                            RequestContext::extracting(&PROPAGATOR),
                        ))
                    })
                    .workers(2)
                    .disable_signals()
                    .shutdown_timeout(5)
                    .listen(listener)?
                    .run();
                    let _ = handle_tx.send(server.handle());
                    server.await
                });
                let _ = done_tx.send(served);
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("the server did not start"))?;
        Ok(Server {
            addr,
            seen,
            handle,
            done,
            thread,
        })
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it saw so far, one entry per request.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Graceful shutdown, joining the server thread.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] if it took longer than `timeout`; serving's own error.
    pub fn shutdown(self, timeout: Duration) -> io::Result<()> {
        // `stop` returns a future that needs no runtime to be dropped: the stop is sent anyway.
        drop(self.handle.stop(true));
        match self.done.recv_timeout(timeout) {
            Ok(served) => {
                self.thread
                    .join()
                    .map_err(|_| io::Error::other("the server thread panicked"))?;
                served
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the server did not shut down within {timeout:?}"),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client.

/// The `i`th tenant of a run: distinct, with what baggage must encode.
pub fn tenant(i: usize) -> String {
    match i % 5 {
        0 => format!("acme corp #{i}"),
        1 => format!("a,b=c;d {i}"),
        2 => format!("100% sure {i}"),
        3 => format!("Zürich {i} 🚀"),
        _ => format!("x,request-id=stolen-{i}"),
    }
}

/// The `i`th request id of a run (ASCII: it goes in `x-request-id` too).
pub fn request_id(i: usize) -> String {
    format!("req-{i}")
}

/// One request of a run: its values and the reply's body (or why there is none).
#[derive(Debug)]
pub struct Call {
    /// [`tenant`]`(i)`.
    pub tenant: String,
    /// [`request_id`]`(i)`.
    pub request_id: String,
    /// The status and body.
    pub reply: Result<(u16, String), String>,
}

/// Sends `n` concurrent `GET /whoami` to `addr` with hyper-util's client — wrapped in
/// [`InjectLayer`] when `inject` — each from its own context holding `tenant(i)` and
/// `request_id(i)`; within `timeout`.
///
/// # Errors
///
/// When the requests take longer than `timeout`.
pub async fn fire(
    addr: SocketAddr,
    inject: bool,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Call>, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    // The whole client-side wiring: one layer; no header code at the call site.
    let client = ServiceBuilder::new()
        .option_layer(inject.then(|| InjectLayer::new(&PROPAGATOR)))
        .service(client)
        .map_err(|e| e.to_string());
    driver::concurrently(n, timeout, |i| {
        let client = client.clone();
        let (tenant, request_id) = (tenant(i), request_id(i));
        async move {
            TENANT.set(tenant.clone());
            REQUEST_ID.set(request_id.clone());
            let request = http::Request::get(format!("http://{addr}/whoami"))
                .header(X_REQUEST_ID, &request_id)
                .body(String::new())
                .map_err(|e| e.to_string());
            let reply = match request {
                Ok(request) => match client.oneshot(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.into_body().collect().await {
                            Ok(body) => Ok((
                                status,
                                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                            )),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            Call {
                tenant,
                request_id,
                reply,
            }
        }
    })
    .await
}

/// Checks one reply: status 200, exactly its own values at every place, no baggage problem.
///
/// # Errors
///
/// The first difference, with the reply.
pub fn check(call: &Call, i: usize) -> Result<(), String> {
    let (status, body) = call.reply.as_ref().map_err(|e| format!("{i}: {e}"))?;
    let own = expected(&call.tenant, &call.request_id);
    let mut wanted: Vec<String> = PLACES.iter().map(|p| format!("{p}: {own}")).collect();
    wanted.push("baggage-errors: 0".into());
    let got: Vec<&str> = body.lines().collect();
    if *status != 200 || got != wanted {
        return Err(format!(
            "{i}: status {status}, expected {wanted:?}, got {got:?}"
        ));
    }
    Ok(())
}

/// Checks what the server saw: one entry per request `0..n`, each exactly its own values.
/// The wrong or missing entries.
pub fn check_seen(seen: &[Seen], n: usize) -> Vec<String> {
    let seen = seen.iter().map(|s| (&*s.request_id, &*s.places));
    driver::check_seen(seen, n, request_id, |i| {
        expected(&tenant(i), &request_id(i))
    })
}
