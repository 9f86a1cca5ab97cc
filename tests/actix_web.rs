//! `context_local::actix_web::RequestContext` (issue 19): each request — its `!Send` handler
//! future included — in its own context, optionally started from its baggage; with the
//! control that removes the middleware and shows requests reading each other's values.
//!
//! 200 requests run concurrently on one actix worker thread; every handler awaits several
//! times, so their polls interleave on that thread.
#![cfg(feature = "actix-web")]

use std::rc::Rc;
use std::sync::LazyLock;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{test, web, App, HttpMessage, HttpRequest};
use context_local::actix_web::RequestContext;
use context_local::baggage::{Extracted, Propagator};
use context_local::Local;

static REQUEST_ID: Local<String> = Local::named("REQUEST_ID");
static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
static PROPAGATOR: LazyLock<Propagator> = LazyLock::new(|| Propagator::new().with(&TENANT));

/// A middleware that only `set`s the request's id from `x-request-id`.
async fn set_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request.headers().get("x-request-id").unwrap();
    let id = id.to_str().unwrap().to_string();
    REQUEST_ID.set(id);
    next.call(request).await
}

/// Answers with what it saw, before and after awaits, and in a `!Send` part of its future.
async fn whoami(request: HttpRequest) -> String {
    let not_send = Rc::new(REQUEST_ID.get());
    let mut seen = Vec::new();
    for _ in 0..3 {
        actix_web::rt::task::yield_now().await;
        seen.push(REQUEST_ID.get());
    }
    let errors = request
        .extensions()
        .get::<Extracted>()
        .map(|e| e.errors().len());
    let same = seen.iter().all(|s| *s == *not_send);
    format!(
        "{} tenant={:?} errors={errors:?}",
        if same {
            (*not_send).clone().unwrap_or_default()
        } else {
            "changed".into()
        },
        TENANT.get(),
    )
}

/// Fires 200 concurrent requests at `app`; returns how many replies were wrong.
async fn fire<S, B>(app: S, with_baggage: bool) -> usize
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>
        + 'static,
    B: MessageBody + 'static,
{
    let app = Rc::new(app);
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            actix_web::rt::spawn(async move {
                let mut request = test::TestRequest::get()
                    .uri("/")
                    .insert_header(("x-request-id", format!("r-{i}")));
                if with_baggage {
                    request = request.insert_header(("baggage", format!("tenant=t-{i},bad")));
                }
                let body = test::call_and_read_body(&*app, request.to_request()).await;
                let expected = if with_baggage {
                    format!("r-{i} tenant=Some(\"t-{i}\") errors=Some(1)")
                } else {
                    format!("r-{i} tenant=None errors=Some(0)")
                };
                usize::from(body != expected)
            })
        })
        .collect();
    let mut wrong = 0;
    for handle in handles {
        wrong += handle.await.unwrap();
    }
    wrong
}

#[test]
fn each_request_in_its_own_context() {
    actix_web::rt::System::new().block_on(async {
        let app = test::init_service(
            App::new()
                .route("/", web::get().to(whoami))
                .wrap(from_fn(set_request))
                .wrap(RequestContext::new()),
        )
        .await;
        assert_eq!(fire(app, false).await, 0);
        assert!(!REQUEST_ID.is_set(), "nothing left on the worker");
    });
}

#[test]
fn each_request_from_its_baggage() {
    actix_web::rt::System::new().block_on(async {
        let app = test::init_service(
            App::new()
                .route("/", web::get().to(whoami))
                .wrap(from_fn(set_request))
                .wrap(RequestContext::extracting(&*PROPAGATOR)),
        )
        .await;
        assert_eq!(fire(app, true).await, 0);
        assert!(!TENANT.is_set() && !REQUEST_ID.is_set());
    });
}

/// The control: without the middleware the requests share the worker's context and read each
/// other's ids (and get no extension).
#[test]
fn control_without_the_middleware_requests_mix() {
    actix_web::rt::System::new().block_on(async {
        let app = test::init_service(
            App::new()
                .route("/", web::get().to(whoami))
                .wrap(from_fn(set_request)),
        )
        .await;
        assert!(fire(app, false).await > 100);
    });
}

/// The order flipped (`RequestContext` wrapped first, so it is *inside* the middleware that
/// sets): the `set` lands in the worker's context, and the requests see no id at all.
#[test]
fn control_with_the_order_flipped_sees_nothing() {
    actix_web::rt::System::new().block_on(async {
        let app = test::init_service(
            App::new()
                .route("/", web::get().to(whoami))
                .wrap(RequestContext::new())
                .wrap(from_fn(set_request)),
        )
        .await;
        assert_eq!(fire(app, false).await, 200);
        REQUEST_ID.release();
    });
}
