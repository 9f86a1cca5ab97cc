//! [`ExtractLayer`]: each request in its own context, started from its headers.

use std::task::{Context as TaskContext, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::propagate::Propagate;
use crate::{Context, FutureExt, InContext};

/// A [`Layer`] that runs each `http::Request` in its own context, started from its headers by
/// a [`Propagate`]: with a [`Propagator`](crate::baggage::Propagator), the carried locals are
/// bound from the request's `baggage` header; with `propagate::Otel` (feature `opentelemetry`) the trace
/// context comes along too. Like [`ContextLayer`](super::ContextLayer), the inner service's
/// `call` and every poll of its response future run in that context; put it outermost, in
/// `ContextLayer`'s place. The context is a fork of what was extracted, not a child of the
/// current one: under a `ContextLayer`, what middleware between the two layers set is not
/// seen inside (a `ContextLayer` inside it is harmless: a child of the extracted context).
///
/// Headers are hostile input: nothing in them fails the request. What was extracted, with
/// what was wrong in the header ([`Extracted::errors`](crate::baggage::Extracted::errors)),
/// is put in the request's extensions for the handler (axum: `Extension<Extracted>`).
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::LazyLock;
/// use context_local::baggage::{Extracted, Propagator};
/// use context_local::{tower::ExtractLayer, Local};
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
/// // The handler: reads the tenant, and the baggage's problems from the extensions.
/// let handler = tower::service_fn(|request: http::Request<()>| async move {
///     let errors = request.extensions().get::<Extracted>().unwrap().errors().len();
///     Ok::<_, Infallible>(format!("{:?} errors={errors}", TENANT.get()))
/// });
/// let mut service = ExtractLayer::new(&*PROPAGATOR).layer(handler);
///
/// let request = http::Request::builder()
///     .header("baggage", "tenant=acme,broken")
///     .body(())
///     .unwrap();
/// let reply = block_on(service.call(request)).unwrap();
/// assert_eq!(reply, r#"Some("acme") errors=1"#);
/// assert!(!TENANT.is_set()); // the request's value stayed in its context
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtractLayer<P> {
    propagator: P,
}

impl<P> ExtractLayer<P> {
    /// The layer, extracting with `propagator` (a `&'static Propagator`, an `Arc`, an
    /// `propagate::Otel` (feature `opentelemetry`) of a composite, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{propagate::NoBaggage, tower::ExtractLayer};
    /// let layer = ExtractLayer::new(NoBaggage); // as `ContextLayer`
    /// # let _ = layer;
    /// ```
    pub const fn new(propagator: P) -> Self {
        Self { propagator }
    }
}

impl<S, P: Clone> Layer<S> for ExtractLayer<P> {
    type Service = ExtractService<S, P>;

    fn layer(&self, inner: S) -> ExtractService<S, P> {
        ExtractService {
            inner,
            propagator: self.propagator.clone(),
        }
    }
}

/// The [`Service`] made by [`ExtractLayer`].
///
/// # Examples
///
/// ```
/// use context_local::{propagate::NoBaggage, tower::{ExtractLayer, ExtractService}};
/// use tower_layer::Layer;
///
/// let service: ExtractService<(), NoBaggage> = ExtractLayer::new(NoBaggage).layer(());
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct ExtractService<S, P> {
    inner: S,
    propagator: P,
}

impl<S, P, B> Service<http::Request<B>> for ExtractService<S, P>
where
    S: Service<http::Request<B>>,
    P: Propagate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InContext<S::Future>;

    /// As [`ContextService`](super::ContextService)'s: in a child context of its own.
    #[track_caller]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        Context::child().run(|| self.inner.poll_ready(cx))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let (context, extracted) = self.propagator.start(request.headers());
        request.extensions_mut().insert(extracted);
        let future = context.run(|| self.inner.call(request));
        future.in_context(context)
    }
}
