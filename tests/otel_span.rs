//! Feature `opentelemetry-sdk`: the `ContextFields` declared for `tracing` as attributes of
//! every OpenTelemetry SDK span, set at its start by `ContextSpanProcessor`.
//!
//! 200 concurrent requests, each starting spans in the request and in a child thread: every
//! span carries exactly its own request's attributes, spans outside requests none, and a
//! provider without the processor none (the control). Values are read at start, keep their
//! types, and a span's own attribute of the same name wins.
#![cfg(feature = "opentelemetry-sdk")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use context_local::tracing::{ContextFields, ContextSpanProcessor};
use context_local::{context_local, Context, Local};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor};

/// The request's values, inherited by its children.
#[context_local(inherit)]
#[derive(Clone)]
pub struct Request {
    /// An `i64` attribute `request_id`.
    pub id: u64,
    /// A string attribute `tenant`, with `Display`.
    pub tenant: String,
}

/// Not inheritable: a child thread's spans never get it.
static ATTEMPT: Local<u32> = Local::named("ATTEMPT");
static SAMPLED: Local<bool> = Local::named("SAMPLED");
static RATIO: Local<f64> = Local::named("RATIO");
static BIG: Local<u64> = Local::named("BIG");
static ROLES: Local<Vec<&'static str>> = Local::named("ROLES");

fn fields() -> ContextFields {
    ContextFields::builder()
        .value("request_id", Request::proxy().map(|r| &r.id))
        .display("tenant", Request::proxy().map(|r| r.tenant.as_str()))
        .value("attempt", ATTEMPT.proxy())
        .value("sampled", SAMPLED.proxy())
        .value("ratio", RATIO.proxy())
        .value("big", BIG.proxy())
        .debug("roles", ROLES.proxy())
        .build()
}

/// A processor that keeps every ended span: stands in for an exporter.
#[derive(Clone, Debug, Default)]
struct Recorder(Arc<Mutex<Vec<SpanData>>>);

impl Recorder {
    fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl SpanProcessor for Recorder {
    fn on_start(&self, _: &mut Span, _: &opentelemetry::Context) {}
    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn tracer(with_processor: bool) -> (SdkTracer, Recorder) {
    let recorder = Recorder::default();
    let mut builder = SdkTracerProvider::builder();
    if with_processor {
        builder = builder.with_span_processor(ContextSpanProcessor::new(&fields()));
    }
    let provider = builder.with_span_processor(recorder.clone()).build();
    (provider.tracer("test"), recorder)
}

fn request(id: u64) -> Request {
    Request {
        id,
        tenant: format!("t{id}"),
    }
}

/// Starts spans named `req <id> handler` / `req <id> child` for 200 concurrent requests and
/// `outside` spans around them.
fn serve(tracer: &SdkTracer) {
    tracer.in_span("outside", |_| {});
    std::thread::scope(|s| {
        for id in 0..200u64 {
            let tracer = tracer.clone();
            s.spawn(move || {
                Context::new().run(|| {
                    Request::set(request(id));
                    ATTEMPT.set(1);
                    tracer.in_span(format!("req {id} handler"), |_| {
                        let tracer = tracer.clone();
                        context_local::thread::spawn(move || {
                            tracer.in_span(format!("req {id} child"), |_| {});
                        })
                        .join()
                        .unwrap();
                    });
                });
                tracer.in_span("outside", |_| {});
            });
        }
    });
}

fn attrs(span: &SpanData) -> Vec<(String, Value)> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.clone()))
        .collect()
}

fn attr(key: &str, value: impl Into<Value>) -> (String, Value) {
    (key.to_owned(), value.into())
}

#[test]
fn each_request_span_gets_its_own_attributes_and_outside_none() {
    let (tracer, recorder) = tracer(true);
    serve(&tracer);
    let spans = recorder.take();
    assert_eq!(spans.len(), 1 + 200 * 3);
    let mut right = 0;
    for span in &spans {
        let words: Vec<&str> = span.name.split(' ').collect();
        match words[..] {
            ["outside"] => assert_eq!(attrs(span), [], "{}", span.name),
            ["req", id, place] => {
                let id: i64 = id.parse().unwrap();
                let mut want = vec![attr("request_id", id), attr("tenant", format!("t{id}"))];
                if place == "handler" {
                    want.push(attr("attempt", 1_i64));
                }
                assert_eq!(attrs(span), want, "{}", span.name);
                right += 1;
            }
            _ => panic!("unexpected span {}", span.name),
        }
    }
    assert_eq!(right, 400);
}

#[test]
fn control_without_the_processor_spans_get_no_attributes() {
    let (tracer, recorder) = tracer(false);
    serve(&tracer);
    let spans = recorder.take();
    assert_eq!(spans.len(), 1 + 200 * 3);
    assert!(spans.iter().all(|s| s.attributes.is_empty()));
}

#[test]
fn values_keep_their_types() {
    let (tracer, recorder) = tracer(true);
    Context::new().run(|| {
        Request::set(request(5));
        SAMPLED.set(true);
        RATIO.set(0.25);
        ROLES.set(vec!["admin"]);
        BIG.set(u64::MAX);
        tracer.in_span("big", |_| {});
        BIG.set(i64::MAX as u64);
        tracer.in_span("fits", |_| {});
    });
    let spans = recorder.take();
    let common = [
        attr("request_id", 5_i64),
        attr("tenant", "t5"),
        attr("sampled", true),
        attr("ratio", 0.25),
    ];
    let big = [
        attr("big", u64::MAX.to_string()),
        attr("roles", r#"["admin"]"#),
    ];
    assert_eq!(attrs(&spans[0]), [&common[..], &big[..]].concat());
    let fits = [attr("big", i64::MAX), attr("roles", r#"["admin"]"#)];
    assert_eq!(attrs(&spans[1]), [&common[..], &fits[..]].concat());
}

#[test]
fn values_are_read_when_the_span_starts() {
    let (tracer, recorder) = tracer(true);
    Context::new().run(|| {
        Request::set(request(1));
        let mut span = tracer.start("first");
        Request::set(request(2)); // a later change does not reach the started span
        span.end();
        let mut late = tracer.start("late");
        Request::take();
        late.end();
    });
    let spans = recorder.take();
    assert_eq!(spans[0].name, "first");
    assert_eq!(
        attrs(&spans[0]),
        [attr("request_id", 1_i64), attr("tenant", "t1")]
    );
    assert_eq!(spans[1].name, "late");
    assert_eq!(
        attrs(&spans[1]),
        [attr("request_id", 2_i64), attr("tenant", "t2")]
    );
}

#[test]
fn a_spans_own_attribute_wins() {
    let (tracer, recorder) = tracer(true);
    Context::new().run(|| {
        Request::set(request(3));
        tracer
            .span_builder("own")
            .with_attributes([
                KeyValue::new("tenant", "explicit"),
                KeyValue::new("route", "/x"),
            ])
            .start(&tracer)
            .end();
    });
    let spans = recorder.take();
    assert_eq!(
        attrs(&spans[0]),
        [
            attr("tenant", "explicit"),
            attr("route", "/x"),
            attr("request_id", 3_i64),
        ]
    );
}
