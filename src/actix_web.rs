//! actix-web (feature `actix-web`): [`RequestContext`], a middleware giving each request its
//! own context.
//!
//! actix-web is not tower-based, and its handlers' futures are `!Send` (each worker is a
//! single-threaded runtime): the middleware wraps them all the same, since [`InContext`]
//! needs no `Send`.

use std::future::{ready, Ready};
use std::task::{Context as TaskContext, Poll};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::HeaderMap;
use actix_web::HttpMessage;

use crate::baggage::Extractor;
use crate::propagate::{NoBaggage, Propagate};
use crate::{Context, FutureExt, InContext};

/// An actix-web middleware that runs each request — the inner services' `call` and every poll
/// of the response future, handler included — in its own context: a child of the worker's
/// ([`RequestContext::new`]) or one started from the request's headers by a [`Propagate`]
/// ([`RequestContext::extracting`]: baggage, trace context). What was extracted, with what
/// was wrong in the headers, is in the request's extensions (`req.extensions().get::<Extracted>()`,
/// or the `ReqData<Extracted>` extractor); hostile headers never fail the request.
///
/// `App::wrap` makes the *last* wrapped middleware the outermost: wrap it last, so that the
/// middleware that `set` request values run inside it. Outside it, they run in the worker
/// thread's own context, where a `set` leaks into the next request.
///
/// # Examples
///
/// ```
/// use std::sync::LazyLock;
/// use actix_web::{test, web, App};
/// use context_local::{actix_web::RequestContext, baggage::Propagator, Local};
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// static PROPAGATOR: LazyLock<Propagator> = LazyLock::new(|| Propagator::new().with(&TENANT));
///
/// async fn whoami() -> String {
///     format!("{:?}", TENANT.get())
/// }
///
/// actix_web::rt::System::new().block_on(async {
///     let app = test::init_service(
///         App::new()
///             .route("/", web::get().to(whoami))
///             .wrap(RequestContext::extracting(&*PROPAGATOR)),
///     )
///     .await;
///     let request = test::TestRequest::get().insert_header(("baggage", "tenant=acme")).to_request();
///     let body = test::call_and_read_body(&app, request).await;
///     assert_eq!(body, r#"Some("acme")"#);
/// });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext<P = NoBaggage> {
    propagator: P,
}

impl RequestContext {
    /// The middleware, each request in a child of the worker's context (nothing extracted).
    ///
    /// # Examples
    ///
    /// ```
    /// let middleware = context_local::actix_web::RequestContext::new();
    /// # let _ = middleware;
    /// ```
    pub const fn new() -> Self {
        RequestContext {
            propagator: NoBaggage,
        }
    }
}

impl<P> RequestContext<P> {
    /// The middleware, each request's context started from its headers by `propagator` (a
    /// `&'static Propagator`, an `Arc`, an `propagate::Otel` (feature `opentelemetry`) of a composite).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use context_local::{actix_web::RequestContext, baggage::Propagator};
    /// let middleware = RequestContext::extracting(Arc::new(Propagator::new()));
    /// # let _ = middleware;
    /// ```
    pub const fn extracting(propagator: P) -> Self {
        RequestContext { propagator }
    }
}

impl<S, B, P> Transform<S, ServiceRequest> for RequestContext<P>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>>,
    P: Propagate + Clone,
{
    type Response = ServiceResponse<B>;
    type Error = S::Error;
    type Transform = RequestContextService<S, P>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestContextService {
            service,
            propagator: self.propagator.clone(),
        }))
    }
}

/// The service made by [`RequestContext`] (actix-web's `Transform`).
///
/// # Examples
///
/// ```
/// use context_local::actix_web::RequestContextService;
/// use context_local::propagate::NoBaggage;
///
/// // The default propagator is `NoBaggage` (what `RequestContext::new()` uses).
/// fn named<S>(service: RequestContextService<S, NoBaggage>) -> RequestContextService<S> {
///     service
/// }
/// # let _ = named::<()>;
/// ```
#[derive(Debug)]
pub struct RequestContextService<S, P = NoBaggage> {
    service: S,
    propagator: P,
}

impl<S, B, P> Service<ServiceRequest> for RequestContextService<S, P>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>>,
    P: Propagate,
{
    type Response = ServiceResponse<B>;
    type Error = S::Error;
    type Future = InContext<S::Future>;

    /// In a child context of its own, dropped after: it belongs to no request.
    #[track_caller]
    fn poll_ready(&self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        Context::child().run(|| self.service.poll_ready(cx))
    }

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let (context, extracted) = self.propagator.start(&Headers(request.headers()));
        request.extensions_mut().insert(extracted);
        let future = context.run(|| self.service.call(request));
        future.in_context(context)
    }
}

/// actix-web's own `HeaderMap` as a carrier.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).map(|v| v.as_bytes()).collect()
    }
}
