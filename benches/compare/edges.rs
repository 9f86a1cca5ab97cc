//! The edges' per-request cost: `tower::ExtractLayer` and `tower::InjectLayer` around a
//! trivial service, against the same service hand-wired with the propagator (what a user would
//! write without the layers) and against OpenTelemetry (`opentelemetry-http`'s
//! `HeaderExtractor` / `HeaderInjector` with `opentelemetry_sdk`'s `BaggagePropagator`, the
//! request's future under `with_context`). Every side builds the same `http::Request` (two
//! baggage members) per iteration; a bare service gives the floor.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as Waker, Poll};

use context_local::baggage::Propagator;
use context_local::tower::{ExtractLayer, InjectLayer};
use context_local::{Context, FutureExt, Local};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::KeyValue;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::BaggagePropagator;
use tower_layer::Layer;
use tower_service::Service;

use super::{pair, row, Gate, Row};

static TENANT: Local<String> = Local::named("EDGE_TENANT").baggage("tenant");
static REQUEST_ID: Local<String> = Local::named("EDGE_REQUEST_ID").baggage("request-id");
static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried(), REQUEST_ID.carried()]);

const BAGGAGE: &str = "tenant=acme%20corp,request-id=r-12345";

/// Polls a future that is ready at once.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Waker::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the benchmark's services are ready at once"),
    }
}

fn incoming() -> http::Request<()> {
    http::Request::builder()
        .header("baggage", BAGGAGE)
        .body(())
        .unwrap()
}

/// A handler that reads the tenant (ours).
#[derive(Clone)]
struct Handler;

impl Service<http::Request<()>> for Handler {
    type Response = usize;
    type Error = Infallible;
    type Future = Ready<Result<usize, Infallible>>;
    fn poll_ready(&mut self, _: &mut Waker<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        ready(Ok(TENANT.try_with(String::len).unwrap_or(0)))
    }
}

/// The same handler reading OpenTelemetry's baggage.
#[derive(Clone)]
struct OtelHandler;

impl Service<http::Request<()>> for OtelHandler {
    type Response = usize;
    type Error = Infallible;
    type Future = Ready<Result<usize, Infallible>>;
    fn poll_ready(&mut self, _: &mut Waker<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let cx = opentelemetry::Context::current();
        ready(Ok(cx
            .baggage()
            .get("tenant")
            .map_or(0, |v| v.as_str().len())))
    }
}

/// A client transport that only looks at the headers it was given.
#[derive(Clone)]
struct Transport;

impl Service<http::Request<()>> for Transport {
    type Response = usize;
    type Error = Infallible;
    type Future = Ready<Result<usize, Infallible>>;
    fn poll_ready(&mut self, _: &mut Waker<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        ready(Ok(request.headers().get("baggage").map_or(0, |v| v.len())))
    }
}

pub(crate) fn edges(rows: &mut Vec<Row>) {
    // In: extract, start the request's context, run the handler in it.
    let mut layered = ExtractLayer::new(&PROPAGATOR).layer(Handler);
    let by_hand = |mut request: http::Request<()>| {
        let extracted = PROPAGATOR.extract(request.headers());
        let context = extracted.snapshot().fork();
        request.extensions_mut().insert(extracted);
        let future = context.run(|| Handler.call(request));
        future.in_context(context)
    };
    let otel = BaggagePropagator::new();
    let otel_in = |request: http::Request<()>| {
        let cx = otel.extract(&HeaderExtractor(request.headers()));
        let future = {
            let _attached = cx.clone().attach();
            OtelHandler.call(request)
        };
        future.with_context(cx)
    };
    assert_eq!(now(layered.call(incoming())), Ok(9));
    assert_eq!(now(by_hand(incoming())), Ok(9));
    assert_eq!(now(otel_in(incoming())), Ok(9));
    let (floor, _) = pair(
        |n| {
            for _ in 0..n {
                black_box(now(Handler.call(black_box(incoming()))).ok());
            }
        },
        |_| {},
    );
    rows.push(Row {
        op: "(floor) build a request + bare handler".into(),
        ours: floor,
        peer: None,
        gate: Gate::None,
        unit: "ns",
    });
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                black_box(now(layered.call(black_box(incoming()))).ok());
            }
        },
        |n| {
            for _ in 0..n {
                black_box(now(by_hand(black_box(incoming()))).ok());
            }
        },
    );
    rows.push(row(
        "ExtractLayer per request (2 members)",
        o,
        "hand-wired extract+fork",
        p,
        Gate::None,
    ));
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                black_box(now(layered.call(black_box(incoming()))).ok());
            }
        },
        |n| {
            for _ in 0..n {
                black_box(now(otel_in(black_box(incoming()))).ok());
            }
        },
    );
    rows.push(row(
        "ExtractLayer per request (2 members)",
        o,
        "otel-http extract+with_context",
        p,
        Gate::None,
    ));

    // Out: the current context's values into an outgoing request.
    let context = Context::new();
    let _entered = context.enter();
    TENANT.set("acme corp".into());
    REQUEST_ID.set("r-12345".into());
    let otel_cx = opentelemetry::Context::new().with_baggage([
        KeyValue::new("tenant", "acme corp"),
        KeyValue::new("request-id", "r-12345"),
    ]);
    let _otel_attached = otel_cx.attach();
    let mut client = InjectLayer::new(&PROPAGATOR).layer(Transport);
    let client_by_hand = |mut request: http::Request<()>| {
        if let Err(error) = PROPAGATOR.inject(request.headers_mut()) {
            request.extensions_mut().insert(error);
        }
        Transport.call(request)
    };
    let client_otel = |mut request: http::Request<()>| {
        otel.inject_context(
            &opentelemetry::Context::current(),
            &mut HeaderInjector(request.headers_mut()),
        );
        Transport.call(request)
    };
    let outgoing = || http::Request::new(());
    assert_eq!(now(client.call(outgoing())), Ok(BAGGAGE.len()));
    assert_eq!(now(client_by_hand(outgoing())), Ok(BAGGAGE.len()));
    assert_eq!(now(client_otel(outgoing())), Ok(BAGGAGE.len()));
    let (floor, _) = pair(
        |n| {
            for _ in 0..n {
                black_box(now(Transport.call(black_box(outgoing()))).ok());
            }
        },
        |_| {},
    );
    rows.push(Row {
        op: "(floor) build a request + bare transport".into(),
        ours: floor,
        peer: None,
        gate: Gate::None,
        unit: "ns",
    });
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                black_box(now(client.call(black_box(outgoing()))).ok());
            }
        },
        |n| {
            for _ in 0..n {
                black_box(now(client_by_hand(black_box(outgoing()))).ok());
            }
        },
    );
    rows.push(row(
        "InjectLayer per request (2 members)",
        o,
        "hand-wired inject",
        p,
        Gate::None,
    ));
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                black_box(now(client.call(black_box(outgoing()))).ok());
            }
        },
        |n| {
            for _ in 0..n {
                black_box(now(client_otel(black_box(outgoing()))).ok());
            }
        },
    );
    rows.push(row(
        "InjectLayer per request (2 members)",
        o,
        "otel-http HeaderInjector",
        p,
        Gate::None,
    ));
    TENANT.release();
    REQUEST_ID.release();
}
