//! context-local in a tonic gRPC server and client, over loopback, with no `protoc`.
//!
//! - The **client** sets [`Caller`] in each call's own context and calls `Whoami/Observe`
//!   through a `Channel` wrapped once in [`InjectLayer`] (or, equally, tonic's
//!   `InterceptedService` with [`InjectInterceptor`]): `tenant` and `request-id` travel as W3C
//!   Baggage members of the call's metadata (`baggage: tenant=acme%20corp,request-id=r-3`); the
//!   `user` field stays in the client.
//! - The **server** ([`Server`]) is tonic's `transport::Server` with [`ExtractLayer`]: each
//!   call runs in its own context started from that metadata, so the handler — after awaits,
//!   in a spawned task, in a blocking job — reads the *same* `Caller` struct, rebuilt from
//!   the two members, its `user` `Default` (`None`). Nothing in the handler touches metadata.
//!
//! [`Caller`] is explicit-only: outside a call's context nobody can `set` it, and reads there
//! see it unbound, so a server without the layer answers `unbound` instead of someone else's
//! tenant (the controls in `tests/` show it).
//!
//! The messages are hand-written `prost` structs and the service a hand-written
//! `tower::Service` over tonic's `server::Grpc`; the client is `tonic::client::Grpc`. This is
//! what tonic-build would generate, minus the build step.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context as Waker, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use context_local::baggage::Propagator;
use context_local::context_local;
use context_local::tonic::InjectInterceptor;
use context_local::tower::{ExtractLayer, InjectLayer};
use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::server::UnaryService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

pub use context_local_example_driver as driver;

/// Who a call is for: set by the client in the call's context, rebuilt on the server from
/// the call's baggage. Two fields travel, each as a member of its own (readable by services in
/// any language); `user` stays where it was set, and the server's copy has it `None`.
///
/// Explicit-only: it is never bound in a thread's own context — not on a client thread, not
/// on a tonic worker — so a missing layer cannot hand one call another's tenant.
#[context_local(explicit_only, inherit)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The tenant: baggage member `tenant`.
    #[baggage = "tenant"]
    pub tenant: String,
    /// The request's id: baggage member `request-id`.
    #[baggage = "request-id"]
    pub request_id: String,
    /// The end user: not sent (a service that gets the call sees `None`).
    pub user: Option<String>,
}

/// The one propagator both sides use: [`Caller`]'s carried fields. A plain `static`.
///
/// # Examples
///
/// ```
/// use context_local::Context;
/// use context_local_tonic_example::{Caller, PROPAGATOR};
///
/// let mut headers = std::collections::HashMap::new();
/// Context::new().run(|| {
///     Caller::set(Caller { tenant: "acme corp".into(), request_id: "r-1".into(), user: Some("ada".into()) });
///     PROPAGATOR.inject(&mut headers).unwrap();
/// });
/// assert_eq!(headers["baggage"], "tenant=acme%20corp,request-id=r-1");
/// ```
pub static PROPAGATOR: Propagator = Propagator::of(&[Caller::local().carried_fields()]);

// ---------------------------------------------------------------------------------------------
// The protocol: `package whoami; service Whoami { rpc Observe(ObserveRequest) returns (Observed); }`

/// The request: the request id again, in the body, so the server can tell which call it is
/// serving without trusting the baggage it checks.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ObserveRequest {
    /// The id the client set in its [`Caller`].
    #[prost(string, tag = "1")]
    pub request_id: String,
}

/// The reply: what the handler saw at each place ([`PLACES`]), and the `baggage` metadata as
/// received.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Observed {
    /// `place: observation`, one per [`PLACES`] entry, in order.
    #[prost(string, repeated, tag = "1")]
    pub places: Vec<String>,
    /// The call's `baggage` metadata, as received.
    #[prost(string, tag = "2")]
    pub baggage: String,
}

/// The method's path.
pub const OBSERVE: &str = "/whoami.Whoami/Observe";

/// Where the handler looks at [`Caller`], in order.
pub const PLACES: [&str; 4] = ["entry", "after-awaits", "spawn", "spawn_blocking"];

/// What the current context sees of [`Caller`]: `tenant=".." request-id=".." user=..`, or
/// `unbound`.
///
/// # Examples
///
/// ```
/// use context_local::Context;
/// use context_local_tonic_example::{expected, observe, Caller};
///
/// assert_eq!(observe(), "unbound");
/// let caller = Caller { tenant: "acme".into(), request_id: "r-1".into(), user: None };
/// let seen = Context::new().run(|| { Caller::set(caller); observe() });
/// assert_eq!(seen, expected("acme", "r-1"));
/// ```
pub fn observe() -> String {
    Caller::try_with(|c| {
        format!(
            "tenant={:?} request-id={:?} user={:?}",
            c.tenant, c.request_id, c.user
        )
    })
    .unwrap_or_else(|_| "unbound".to_string())
}

/// What [`observe`] shows on the server for a call from `tenant` with `request_id`: the two
/// carried fields, `user` at its default.
pub fn expected(tenant: &str, request_id: &str) -> String {
    format!("tenant={tenant:?} request-id={request_id:?} user=None")
}

// ---------------------------------------------------------------------------------------------
// The server.

/// What the server saw for one call: the request id in its body, and what the handler saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// [`ObserveRequest::request_id`].
    pub request_id: String,
    /// As [`Observed::places`].
    pub places: Vec<String>,
}

/// The `Whoami` service: what `tonic-build` would generate for it, by hand.
#[derive(Clone, Debug, Default)]
pub struct Whoami {
    seen: Arc<Mutex<Vec<Seen>>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<Body>> for Whoami {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Waker<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != OBSERVE {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let handler = ObserveHandler {
            seen: self.seen.clone(),
        };
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<Observed, ObserveRequest>::default());
            Ok(grpc.unary(handler, request).await)
        })
    }
}

struct ObserveHandler {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl UnaryService<ObserveRequest> for ObserveHandler {
    type Response = Observed;
    type Future = BoxFuture<Result<Response<Observed>, Status>>;

    fn call(&mut self, request: Request<ObserveRequest>) -> Self::Future {
        let seen = self.seen.clone();
        Box::pin(async move {
            let baggage = request
                .metadata()
                .get_all("baggage")
                .iter()
                .map(|v| v.to_str().unwrap_or("<not ASCII>").to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let mut places = vec![format!("entry: {}", observe())];
            for i in 0..3 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1 + i)).await;
            }
            places.push(format!("after-awaits: {}", observe()));
            let spawned = context_local::tokio::spawn(async {
                tokio::task::yield_now().await;
                observe()
            })
            .await
            .unwrap_or_else(|e| format!("failed: {e}"));
            places.push(format!("spawn: {spawned}"));
            let blocking = context_local::tokio::spawn_blocking(observe)
                .await
                .unwrap_or_else(|e| format!("failed: {e}"));
            places.push(format!("spawn_blocking: {blocking}"));
            let request_id = request.into_inner().request_id;
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                request_id,
                places: places.clone(),
            });
            Ok(Response::new(Observed { places, baggage }))
        })
    }
}

/// A running server: tonic's `transport::Server` on its own two-worker runtime, on a free
/// loopback port.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Starts the server with [`ExtractLayer`] (`extract`) or, for the control, without.
    ///
    /// # Errors
    ///
    /// When the runtime cannot be built or the port bound.
    pub fn start(extract: bool) -> io::Result<Server> {
        let whoami = Whoami::default();
        let seen = whoami.seen.clone();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("grpc-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("grpc-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(addr_tx.send(Err(e))),
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(listener) => listener,
                        Err(e) => return drop(addr_tx.send(Err(e))),
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    let incoming = TcpIncoming::from(listener);
                    let stopped = async {
                        let _ = stop_rx.await;
                    };
                    let builder = tonic::transport::Server::builder();
                    let served = if extract {
                        // The whole wiring: each call in a context started from its baggage.
                        builder
                            .layer(ExtractLayer::new(&PROPAGATOR))
                            .serve_with_incoming_shutdown(whoami, incoming, stopped)
                            .await
                    } else {
                        builder
                            .serve_with_incoming_shutdown(whoami, incoming, stopped)
                            .await
                    };
                    let _ = done_tx.send(served.map_err(|e| e.to_string()));
                });
            })?;
        let addr = addr_rx
            .recv()
            .map_err(|_| io::Error::other("the server thread died"))??;
        Ok(Server {
            addr,
            seen,
            stop,
            done,
            thread,
        })
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it saw so far, one entry per call, in the order the calls finished.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Graceful shutdown (close the clients' channels first), joining the server thread.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] if it took longer than `timeout`; serving's own error.
    pub fn shutdown(self, timeout: Duration) -> io::Result<()> {
        let _ = self.stop.send(());
        match self.done.recv_timeout(timeout) {
            Ok(served) => {
                self.thread
                    .join()
                    .map_err(|_| io::Error::other("the server thread panicked"))?;
                served.map_err(io::Error::other)
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

/// How the client's channel is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wiring {
    /// `ServiceBuilder::new().layer(InjectLayer::new(&PROPAGATOR)).service(channel)`.
    InjectLayer,
    /// `InterceptedService::new(channel, InjectInterceptor::new(&PROPAGATOR))`.
    Interceptor,
    /// The control: the bare channel, no baggage sent.
    Bare,
}

/// A client channel, whatever its wiring. (Its error is an `io::Error`, not a `BoxError`:
/// with `BoxError`, rustc cannot prove the call's future `Send` — rust-lang/rust#102211.)
pub type Transport = BoxCloneService<http::Request<Body>, http::Response<Body>, io::Error>;

/// Connects to `addr` over HTTP/2, wired as `wiring`.
///
/// # Errors
///
/// When the connection fails.
pub async fn connect(addr: SocketAddr, wiring: Wiring) -> Result<Transport, BoxError> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(match wiring {
        Wiring::InjectLayer => BoxCloneService::new(
            ServiceBuilder::new()
                .layer(InjectLayer::new(&PROPAGATOR))
                .service(channel)
                .map_err(io::Error::other),
        ),
        Wiring::Interceptor => BoxCloneService::new(
            InterceptedService::new(channel, InjectInterceptor::new(&PROPAGATOR))
                .map_response(|response| response.map(Body::new))
                .map_err(io::Error::other),
        ),
        Wiring::Bare => BoxCloneService::new(channel.map_err(io::Error::other)),
    })
}

/// Calls `Whoami/Observe` in the current context (whose [`Caller`] the wiring sends).
///
/// # Errors
///
/// The call's status.
pub async fn call_observe(transport: Transport, request_id: String) -> Result<Observed, Status> {
    let mut grpc = tonic::client::Grpc::new(transport);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        Request::new(ObserveRequest { request_id }),
        PathAndQuery::from_static(OBSERVE),
        ProstCodec::<ObserveRequest, Observed>::default(),
    )
    .await
    .map(Response::into_inner)
}

/// The `i`th tenant of a run: distinct, with what baggage must encode (spaces, commas, `=`,
/// `;`, `%`, quotes, non-ASCII) — gRPC metadata itself is ASCII only.
pub fn tenant(i: usize) -> String {
    match i % 6 {
        0 => format!("acme corp #{i}"),
        1 => format!("a,b=c;d {i}"),
        2 => format!("100% sure {i}"),
        3 => format!("Zürich {i} 🚀"),
        4 => format!("quote\"back\\slash {i}"),
        _ => format!("x,request-id=stolen-{i}"),
    }
}

/// The `i`th request id of a run.
pub fn request_id(i: usize) -> String {
    format!("req {i}/ü")
}

/// One call of a run: the values its client set, and the reply.
#[derive(Debug)]
pub struct Call {
    /// [`tenant`]`(i)`.
    pub tenant: String,
    /// [`request_id`]`(i)`.
    pub request_id: String,
    /// The reply, or why there is none.
    pub reply: Result<Observed, String>,
    /// The client's own [`Caller`] after the call (must be unchanged).
    pub after: String,
}

/// Fires `n` concurrent calls at `addr` over one channel wired as `wiring`, each in its own
/// context with `Caller { tenant(i), request_id(i), user: Some("user-i") }`; within `timeout`.
///
/// # Errors
///
/// When the channel cannot connect or the calls take longer than `timeout`.
pub async fn fire(
    addr: SocketAddr,
    wiring: Wiring,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Call>, String> {
    let transport = connect(addr, wiring)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    driver::concurrently(n, timeout, |i| {
        let transport = transport.clone();
        let (tenant, request_id) = (tenant(i), request_id(i));
        let caller = Caller {
            tenant: tenant.clone(),
            request_id: request_id.clone(),
            user: Some(format!("user-{i}")),
        };
        async move {
            // In the call's own context (`in_new_context`): explicit-only allows it.
            Caller::set(caller);
            let reply = call_observe(transport, request_id.clone())
                .await
                .map_err(|s| format!("{s}"));
            let after = Caller::try_with(|c| format!("{c:?}")).unwrap_or_else(|e| e.to_string());
            Call {
                tenant,
                request_id,
                reply,
                after,
            }
        }
    })
    .await
}

/// Checks one call: its reply saw exactly its own values at every place, and the client's own
/// `Caller` (with its `user`) is unchanged.
///
/// # Errors
///
/// The first difference, with the reply.
pub fn check(call: &Call, i: usize) -> Result<(), String> {
    let reply = call.reply.as_ref().map_err(|e| format!("call {i}: {e}"))?;
    let own = expected(&call.tenant, &call.request_id);
    let wanted: Vec<String> = PLACES.iter().map(|p| format!("{p}: {own}")).collect();
    if reply.places != wanted {
        return Err(format!(
            "call {i}: expected {wanted:?}, got {:?} (baggage {:?})",
            reply.places, reply.baggage
        ));
    }
    let client_own = format!(
        "{:?}",
        Caller {
            tenant: call.tenant.clone(),
            request_id: call.request_id.clone(),
            user: Some(format!("user-{i}")),
        }
    );
    if call.after != client_own {
        return Err(format!(
            "call {i}: the client's Caller changed to {}",
            call.after
        ));
    }
    Ok(())
}

/// Checks what the server saw: one entry per call `0..n`, each exactly its call's values
/// (looked up by the request id in the body). The number of wrong or missing entries.
pub fn check_seen(seen: &[Seen], n: usize) -> Vec<String> {
    let seen = seen.iter().map(|s| (&*s.request_id, &*s.places));
    driver::check_seen(seen, n, request_id, |i| {
        expected(&tenant(i), &request_id(i))
    })
}
