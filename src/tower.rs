//! Tower layers (feature `tower`): [`ContextLayer`] runs each request in its own child
//! context; with feature `http`, `ExtractLayer` starts that context from the request's
//! headers (baggage, trace context) and `InjectLayer` writes the current context's values
//! into an HTTP client's outgoing requests.

use std::task::{Context as TaskContext, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::{Context, FutureExt, InContext};

#[cfg(feature = "http")]
mod extract;
#[cfg(feature = "http")]
mod inject;
#[cfg(feature = "http")]
pub use extract::{ExtractLayer, ExtractService};
#[cfg(feature = "http")]
pub use inject::{InjectLayer, InjectService};

/// A [`Layer`] that gives each request its own child context
/// ([`Context::child`](crate::Context::child)): the inner service's `call` runs in it, and so
/// does every poll of the response future. Middleware below it can then simply `set`
/// per-request values, and the handler — and everything it awaits, or spawns with
/// `context_local::tokio::spawn` — sees them; no request ever sees another's. The inner
/// `poll_ready`, which belongs to no request, runs in a child context of its own, dropped
/// after, so nothing it binds stays on the worker thread.
///
/// Put it outermost — first in a `ServiceBuilder`, last in axum's `.layer` chain:
/// `Router::new().route(..).layer(from_fn(set_request)).layer(ContextLayer::new())`. A
/// middleware outside it runs in the worker thread's own context, where a `set` leaks into the
/// next request that worker serves (`examples/axum-service` checks for exactly that with an
/// `on_thread_park` hook).
///
/// Declare request values explicit-only ([`Local::explicit_only`](crate::Local::explicit_only),
/// `#[context_local(explicit_only)]`): then a missing or misplaced `ContextLayer` is not a silent
/// leak but a panic at the middleware's first `set`, naming the local and this layer.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use context_local::{tower::ContextLayer, Local};
/// use tower_layer::Layer;
/// use tower_service::Service;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// // A request value: explicit-only, so it is never bound outside a request's context.
/// static USER: Local<String> = Local::named("USER").explicit_only();
///
/// // A handler that reads what a middleware set, somewhere deep in its call stack.
/// #[derive(Clone)]
/// struct Handler;
/// impl Service<&'static str> for Handler {
///     type Response = String;
///     type Error = Infallible;
///     type Future = std::future::Ready<Result<String, Infallible>>;
///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
///         std::task::Poll::Ready(Ok(()))
///     }
///     fn call(&mut self, user: &'static str) -> Self::Future {
///         USER.set(user.to_string()); // a "middleware" setting the request's user
///         std::future::ready(Ok(USER.with(|u| format!("hello {u}"))))
///     }
/// }
///
/// let mut service = ContextLayer::new().layer(Handler);
/// assert_eq!(block_on(service.call("ada")).unwrap(), "hello ada");
/// assert!(!USER.is_set()); // the request's value stayed in its context
///
/// // Without the layer, the same handler is refused at its first `set`:
/// let mut unwired = Handler;
/// assert!(std::panic::catch_unwind(move || block_on(unwired.call("eve"))).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextLayer {
    _private: (),
}

impl ContextLayer {
    /// The layer.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = context_local::tower::ContextLayer::new();
    /// # let _ = layer;
    /// ```
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> ContextService<S> {
        ContextService { inner }
    }
}

/// The [`Service`] made by [`ContextLayer`].
///
/// # Examples
///
/// ```
/// use context_local::tower::{ContextLayer, ContextService};
/// use tower_layer::Layer;
///
/// let service: ContextService<()> = ContextLayer::new().layer(());
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct ContextService<S> {
    inner: S,
}

impl<S, Request> Service<Request> for ContextService<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InContext<S::Future>;

    /// The inner `poll_ready` runs in a child context of its own, dropped after: it belongs to
    /// no request, and whatever it binds (a middleware's careless `set`) would otherwise stay
    /// in the worker thread's context, where the next request's child would inherit it.
    #[track_caller]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        Context::child().run(|| self.inner.poll_ready(cx))
    }

    #[track_caller]
    fn call(&mut self, request: Request) -> Self::Future {
        let ctx = Context::child();
        let future = ctx.run(|| self.inner.call(request));
        future.in_context(ctx)
    }
}
