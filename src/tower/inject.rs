//! [`InjectLayer`]: the current context's values into every outgoing request's headers.

use std::task::{Context as TaskContext, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::propagate::Propagate;

/// A [`Layer`] for HTTP *clients*: writes the current context's values into every outgoing
/// `http::Request`'s headers with a [`Propagate`] — the carried locals as W3C Baggage
/// (keeping the members of other parties already on the request), and with
/// `propagate::Otel` (feature `opentelemetry`) the trace context too. It wraps any tower client of
/// `http::Request`s: hyper-util's `Client`, a tonic `Channel`, a tower `ServiceBuilder` stack.
///
/// The values are those of the context that calls the service's `call` — the handler's own,
/// when it awaits the client there. Over the W3C limits the members that fit are sent and the
/// [`BaggageError`](crate::baggage::BaggageError) is put in the outgoing request's
/// extensions.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::LazyLock;
/// use context_local::{baggage::Propagator, tower::InjectLayer, Local};
/// use tower_layer::Layer;
/// use tower_service::Service;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// static PROPAGATOR: LazyLock<Propagator> = LazyLock::new(|| Propagator::new().with(&TENANT));
///
/// // Stands in for hyper-util's client: answers with the `baggage` header it was sent.
/// let transport = tower::service_fn(|request: http::Request<()>| async move {
///     Ok::<_, Infallible>(request.headers()["baggage"].to_str().unwrap().to_string())
/// });
/// let mut client = InjectLayer::new(&*PROPAGATOR).layer(transport);
///
/// TENANT.set("acme".into());
/// let request = http::Request::builder().header("baggage", "other=1").body(()).unwrap();
/// assert_eq!(block_on(client.call(request)).unwrap(), "other=1,tenant=acme");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectLayer<P> {
    propagator: P,
}

impl<P> InjectLayer<P> {
    /// The layer, injecting with `propagator`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{propagate::NoBaggage, tower::InjectLayer};
    /// let layer = InjectLayer::new(NoBaggage); // writes nothing
    /// # let _ = layer;
    /// ```
    pub const fn new(propagator: P) -> Self {
        Self { propagator }
    }
}

impl<S, P: Clone> Layer<S> for InjectLayer<P> {
    type Service = InjectService<S, P>;

    fn layer(&self, inner: S) -> InjectService<S, P> {
        InjectService {
            inner,
            propagator: self.propagator.clone(),
        }
    }
}

/// The [`Service`] made by [`InjectLayer`].
///
/// # Examples
///
/// ```
/// use context_local::{propagate::NoBaggage, tower::{InjectLayer, InjectService}};
/// use tower_layer::Layer;
///
/// let service: InjectService<(), NoBaggage> = InjectLayer::new(NoBaggage).layer(());
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct InjectService<S, P> {
    inner: S,
    propagator: P,
}

impl<S, P, B> Service<http::Request<B>> for InjectService<S, P>
where
    S: Service<http::Request<B>>,
    P: Propagate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Err(error) = self.propagator.inject(request.headers_mut()) {
            request.extensions_mut().insert(error);
        }
        self.inner.call(request)
    }
}
