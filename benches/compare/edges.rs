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

/// A service that answers at once with what `answer` reads (the request, or the context).
#[derive(Clone)]
struct Answer<F>(F);

impl<F: FnMut(&http::Request<()>) -> usize> Service<http::Request<()>> for Answer<F> {
    type Response = usize;
    type Error = Infallible;
    type Future = Ready<Result<usize, Infallible>>;
    fn poll_ready(&mut self, _: &mut Waker<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        ready(Ok((self.0)(&request)))
    }
}

type Request = http::Request<()>;

/// The handler (ours): reads the tenant.
fn handler() -> Answer<impl FnMut(&Request) -> usize + Clone> {
    Answer(|_: &Request| TENANT.try_with(String::len).unwrap_or(0))
}

/// The same handler reading OpenTelemetry's baggage.
fn otel_handler() -> Answer<impl FnMut(&Request) -> usize + Clone> {
    Answer(|_: &Request| {
        let cx = opentelemetry::Context::current();
        cx.baggage().get("tenant").map_or(0, |v| v.as_str().len())
    })
}

/// A client transport that only looks at the headers it was given.
fn transport() -> Answer<impl FnMut(&Request) -> usize + Clone> {
    Answer(|request: &Request| request.headers().get("baggage").map_or(0, |v| v.len()))
}

/// A row for the floor: `bare` handles a request made by `make`, per iteration.
fn floor(rows: &mut Vec<Row>, op: &str, make: fn() -> Request, mut bare: impl FnMut(Request)) {
    let (floor, _) = pair(
        |n| {
            for _ in 0..n {
                bare(black_box(make()));
            }
        },
        |_| {},
    );
    rows.push(Row {
        op: op.into(),
        ours: floor,
        peer: None,
        gate: Gate::None,
        unit: "ns",
    });
}

/// A row pairing `ours` and `peer` per request made by `make`, after checking that both give
/// `expected`.
fn per_request(
    rows: &mut Vec<Row>,
    (op, ours): (&str, &mut impl FnMut(Request) -> Option<usize>),
    (peer_op, peer): (&str, &mut impl FnMut(Request) -> Option<usize>),
    make: fn() -> Request,
    expected: usize,
) {
    assert_eq!(
        (ours(make()), peer(make())),
        (Some(expected), Some(expected))
    );
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                black_box(ours(black_box(make())));
            }
        },
        |n| {
            for _ in 0..n {
                black_box(peer(black_box(make())));
            }
        },
    );
    rows.push(row(op, o, peer_op, p, Gate::None));
}

pub(crate) fn edges(rows: &mut Vec<Row>) {
    // In: extract, start the request's context, run the handler in it.
    let mut layered = ExtractLayer::new(&PROPAGATOR).layer(handler());
    let mut layered = |request| now(layered.call(request)).ok();
    let mut by_hand = |mut request: Request| {
        let extracted = PROPAGATOR.extract(request.headers());
        let context = extracted.snapshot().fork();
        request.extensions_mut().insert(extracted);
        let future = context.run(|| handler().call(request));
        now(future.in_context(context)).ok()
    };
    let otel = BaggagePropagator::new();
    let mut otel_in = |request: Request| {
        let cx = otel.extract(&HeaderExtractor(request.headers()));
        let future = {
            let _attached = cx.clone().attach();
            otel_handler().call(request)
        };
        now(future.with_context(cx)).ok()
    };
    let mut bare = handler();
    floor(
        rows,
        "(floor) build a request + bare handler",
        incoming,
        |r| {
            black_box(now(bare.call(r)).ok());
        },
    );
    let ours = ("ExtractLayer per request (2 members)", &mut layered);
    let tenant = "acme corp".len();
    per_request(
        rows,
        (ours.0, &mut *ours.1),
        ("hand-wired extract+fork", &mut by_hand),
        incoming,
        tenant,
    );
    per_request(
        rows,
        ours,
        ("otel-http extract+with_context", &mut otel_in),
        incoming,
        tenant,
    );

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
    let mut client = InjectLayer::new(&PROPAGATOR).layer(transport());
    let mut client = |request| now(client.call(request)).ok();
    let mut client_by_hand = |mut request: Request| {
        if let Err(error) = PROPAGATOR.inject(request.headers_mut()) {
            request.extensions_mut().insert(error);
        }
        now(transport().call(request)).ok()
    };
    let mut client_otel = |mut request: Request| {
        otel.inject_context(
            &opentelemetry::Context::current(),
            &mut HeaderInjector(request.headers_mut()),
        );
        now(transport().call(request)).ok()
    };
    let outgoing = || http::Request::new(());
    let mut bare = transport();
    floor(
        rows,
        "(floor) build a request + bare transport",
        outgoing,
        |r| {
            black_box(now(bare.call(r)).ok());
        },
    );
    let ours = ("InjectLayer per request (2 members)", &mut client);
    let sent = BAGGAGE.len();
    per_request(
        rows,
        (ours.0, &mut *ours.1),
        ("hand-wired inject", &mut client_by_hand),
        outgoing,
        sent,
    );
    per_request(
        rows,
        ours,
        ("otel-http HeaderInjector", &mut client_otel),
        outgoing,
        sent,
    );
    TENANT.release();
    REQUEST_ID.release();
}
