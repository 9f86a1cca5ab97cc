//! Feature `tracing`: every log line carries the request.
//!
//! Part 1: 200 concurrent requests through a tower service with `ContextLayer` on tokio's
//! multi-thread runtime, each logging from the handler, deep sync code, a spawned task, a
//! blocking job, a rayon fan-out and a thread; every text and JSON line carries exactly its
//! own request's values and span, lines outside requests none. The control without
//! `ContextLayer` gets them wrong.
//! Part 2: placement and rendering (text after the event's fields, colours kept, JSON
//! top-level flattened or not, Pretty), misuse (unbound, borrowed, duplicate names, a
//! formatter that never calls `FormatFields`, a layer without the fields).
//! Part 3: the spawn helpers carry the current span; plain spawns do not.
#![cfg(all(
    feature = "tracing",
    feature = "tower",
    feature = "tokio",
    feature = "rayon"
))]

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};

use context_local::rayon::ParallelIteratorExt;
use context_local::tower::ContextLayer;
use context_local::tracing::{ContextEventFormat, ContextFields, ContextFieldsExt};
use context_local::{context_local, Context, Local};
use rayon::prelude::*;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The request's values, set by the "middleware", inherited by its children.
#[context_local(inherit)]
#[derive(Clone)]
pub struct Request {
    /// Logged as `request_id`, a number in JSON.
    pub id: u64,
    /// Logged as `tenant`, with `Display`.
    pub tenant: String,
}

/// Not inheritable: a child never sees it, so its field must be absent there.
static ATTEMPT: Local<u32> = Local::named("ATTEMPT");

fn fields() -> ContextFields {
    ContextFields::builder()
        .value("request_id", Request::proxy().map(|r| &r.id))
        .display("tenant", Request::proxy().map(|r| r.tenant.as_str()))
        .value("attempt", ATTEMPT.proxy())
        .build()
}

/// A `MakeWriter` into a shared buffer: one `write_all` per event, so lines never interleave.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn make(&self) -> impl Fn() -> Capture + Send + Sync + 'static {
        let this = self.clone();
        move || this.clone()
    }
    fn lines_with(&self, marker: &str) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|l| l.contains(marker))
            .map(str::to_owned)
            .collect()
    }
}

/// The process-wide subscriber of Part 1: one text and one JSON layer, both with the fields.
/// Events from tokio workers, blocking threads and rayon's pool go to the global default.
fn global() -> &'static (Capture, Capture) {
    static GLOBAL: OnceLock<(Capture, Capture)> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let (text, json) = (Capture::default(), Capture::default());
        let fields = fields();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(text.make())
                    .with_context_fields(&fields),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(json.make())
                    .with_context_fields(&fields),
            );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (text, json)
    })
}

// ===== Part 1: 200 concurrent requests =====

/// The handler: logs from itself, deep sync code, a spawned task, a blocking job that fans
/// out on rayon, and (every tenth request) a thread. `marker` tells one test's lines apart.
async fn handler(marker: &'static str, id: u64) {
    tokio::task::yield_now().await; // hop workers
    tracing::info!("{marker} handler #{id}");
    deep(marker, id);
    tokio::task::yield_now().await;
    context_local::tokio::spawn(async move {
        tokio::task::yield_now().await;
        tracing::info!("{marker} task #{id}");
    })
    .await
    .unwrap();
    context_local::tokio::spawn_blocking(move || {
        tracing::info!("{marker} blocking #{id}");
        (0..4u64)
            .into_par_iter()
            .in_child_contexts()
            .for_each(|i| tracing::info!("{marker} rayon #{id} item {i}"));
    })
    .await
    .unwrap();
    if id % 10 == 0 {
        context_local::thread::spawn(move || tracing::info!("{marker} thread #{id}"))
            .join()
            .unwrap();
    }
}

fn deep(marker: &str, id: u64) {
    tracing::warn!(depth = 3, "{marker} deep #{id}");
}

/// Lines each request logs: handler, deep, task, blocking, 4 rayon items, 1 in 10 a thread.
const PER_REQUEST: usize = 8;
const REQUESTS: u64 = 200;

/// The app: a "middleware" that sets the request's values inside the response future (as
/// axum's `from_fn` does), then the handler inside a span named after the request.
#[derive(Clone)]
struct App {
    marker: &'static str,
}

impl Service<u64> for App {
    type Response = ();
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u64) -> Self::Future {
        let marker = self.marker;
        Box::pin(async move {
            Request::set(Request {
                id,
                tenant: format!("t{id}"),
            });
            ATTEMPT.set(1);
            handler(marker, id)
                .instrument(tracing::info_span!("req", n = id))
                .await;
            Ok(())
        })
    }
}

/// Serves 200 requests at once on 4 workers, with a request-less task logging meanwhile.
fn serve<S>(marker: &'static str, service: S)
where
    S: Service<u64, Response = (), Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    tracing::info!("{marker} outside before");
    runtime.block_on(async move {
        let mut all = Vec::new();
        for id in 0..REQUESTS {
            let mut service = service.clone();
            all.push(tokio::spawn(async move { service.call(id).await }));
            if id % 50 == 0 {
                // Not in any request: a plain tokio task on the same workers.
                all.push(tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    tracing::info!("{marker} outside during");
                    Ok(())
                }));
            }
        }
        for task in all {
            task.await.unwrap().unwrap();
        }
    });
    tracing::info!("{marker} outside after");
}

/// The `#NNN` in a line's message, or `None` for an "outside" line.
fn message_id(line: &str) -> Option<u64> {
    let at = line.find('#')?;
    let digits: String = line[at + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(digits.parse().unwrap())
}

fn expected_lines() -> usize {
    // + before and after, + a request-less task per 50 requests
    REQUESTS as usize * PER_REQUEST + (REQUESTS as usize).div_ceil(10) + 2 + 4
}

/// What one text line says about the request: `(request_id, tenant, attempt, span n)`.
fn text_fields(line: &str) -> (Vec<u64>, Vec<String>, usize, Vec<u64>) {
    let values = |key: &str| -> Vec<String> {
        line.match_indices(key)
            .map(|(at, _)| {
                line[at + key.len()..]
                    .split([' ', '}', ':'])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let ids = values(" request_id=")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let tenants = values(" tenant=");
    let attempts = values(" attempt=").len();
    let spans = values("req{n=")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    (ids, tenants, attempts, spans)
}

#[test]
fn every_text_and_json_line_carries_exactly_its_own_request() {
    let (text, json) = global();
    serve(
        "[with-layer]",
        ContextLayer::new().layer(App {
            marker: "[with-layer]",
        }),
    );

    let lines = text.lines_with("[with-layer]");
    assert_eq!(lines.len(), expected_lines());
    let mut requests_seen = 0;
    for line in &lines {
        let (ids, tenants, attempts, spans) = text_fields(line);
        match message_id(line) {
            Some(id) => {
                requests_seen += line.contains("handler") as u64;
                assert_eq!(ids, [id], "{line}");
                assert_eq!(tenants, [format!("t{id}")], "{line}");
                assert_eq!(spans, [id], "the span follows into children: {line}");
                // Set in the request's context, not inheritable: only the handler's own lines.
                let own = line.contains("handler") || line.contains("deep");
                assert_eq!(attempts, own as usize, "{line}");
                // After the event's own fields, in declaration order, last on the line.
                let tail = if own { " attempt=1" } else { "" };
                assert!(
                    line.ends_with(&format!(" request_id={id} tenant=t{id}{tail}")),
                    "{line}"
                );
            }
            None => {
                assert!(
                    ids.is_empty() && tenants.is_empty() && attempts == 0,
                    "{line}"
                );
                assert!(spans.is_empty(), "{line}");
            }
        }
    }
    assert_eq!(requests_seen, REQUESTS);

    let lines = json.lines_with("[with-layer]");
    assert_eq!(lines.len(), expected_lines());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = v.as_object().unwrap();
        match message_id(line) {
            Some(id) => {
                assert_eq!(object["request_id"], id, "{line}"); // a number: `value`
                assert_eq!(object["tenant"], format!("t{id}"), "{line}");
                assert_eq!(object["span"]["n"], id, "{line}");
                // Top level, and only there.
                assert!(object["fields"].get("request_id").is_none(), "{line}");
            }
            None => {
                assert!(!object.contains_key("request_id"), "{line}");
                assert!(!object.contains_key("tenant"), "{line}");
                assert!(!object.contains_key("attempt"), "{line}");
            }
        }
    }
}

/// The control: the same app without `ContextLayer`. The "middleware" then sets the
/// request in the worker thread's own context, where requests overwrite each other and
/// leak into the lines of the request-less task.
#[test]
fn without_context_layer_lines_carry_other_requests_values() {
    let (text, json) = global();
    serve(
        "[no-layer]",
        App {
            marker: "[no-layer]",
        },
    );

    let lines = text.lines_with("[no-layer]");
    assert_eq!(lines.len(), expected_lines());
    let wrong = lines
        .iter()
        .filter(|line| {
            let (ids, ..) = text_fields(line);
            match message_id(line) {
                Some(id) => ids != [id],
                None => !ids.is_empty(),
            }
        })
        .count();
    assert!(wrong > lines.len() / 10, "only {wrong} wrong lines");

    let wrong_json = json
        .lines_with("[no-layer]")
        .iter()
        .filter(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.get("request_id").and_then(|v| v.as_u64()) != message_id(line)
        })
        .count();
    assert!(
        wrong_json > lines.len() / 10,
        "only {wrong_json} wrong lines"
    );
}

// ===== Part 2: placement, rendering, misuse =====

/// Runs `f` with a thread-local subscriber built by `make` writing into a fresh buffer, and
/// returns what it wrote.
fn captured<S>(make: impl FnOnce(Capture) -> S, f: impl FnOnce()) -> String
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let out = Capture::default();
    tracing::subscriber::with_default(make(out.clone()), f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn in_request(id: u64, f: impl FnOnce()) {
    Context::new().run(|| {
        Request::set(Request {
            id,
            tenant: format!("t{id}"),
        });
        f();
    })
}

#[test]
fn text_fields_follow_the_events_own_fields_and_precede_span_fields_in_compact() {
    let fields = fields();
    let out = captured(
        |out| {
            tracing_subscriber::fmt()
                .compact()
                .without_time()
                .with_ansi(false)
                .with_writer(out.make())
                .with_context_fields(&fields)
                .finish()
        },
        || {
            in_request(7, || {
                tracing::info_span!("outer", route = "/cart").in_scope(|| {
                    tracing::info!(user = "ada", "hello");
                });
            });
            tracing::info!("idle");
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r#" INFO outer: tracing: hello user="ada" request_id=7 tenant=t7 route="/cart""#
    );
    assert_eq!(lines[1], " INFO tracing: idle");
}

#[test]
fn full_text_keeps_colours_and_span_fields_stay_the_spans_own() {
    let fields = fields();
    let out = captured(
        |out| {
            tracing_subscriber::fmt()
                .without_time()
                .with_ansi(true)
                .with_writer(out.make())
                .with_context_fields(&fields)
                .finish()
        },
        || {
            in_request(9, || {
                let span = tracing::info_span!("outer", a = 1, b = tracing::field::Empty);
                span.record("b", 2); // add_fields: formatted by the inner `FormatFields`
                span.in_scope(|| tracing::info!("hello"));
            });
        },
    );
    assert!(out.contains('\u{1b}'), "colours are kept: {out:?}");
    // The span's fields (italic names) carry no context fields; the event's line does.
    assert_eq!(out.matches("request_id").count(), 1, "{out:?}");
    assert!(
        out.contains("\u{1b}[3mb\u{1b}[0m\u{1b}[2m=\u{1b}[0m2"),
        "{out:?}"
    );
    assert!(
        out.trim_end()
            .ends_with("\u{1b}[3mtenant\u{1b}[0m\u{1b}[2m=\u{1b}[0mt9"),
        "{out:?}"
    );
}

#[test]
fn json_fields_are_top_level_whether_the_event_is_flattened_or_not() {
    for flatten in [false, true] {
        let fields = fields();
        let out = captured(
            |out| {
                tracing_subscriber::fmt()
                    .json()
                    .flatten_event(flatten)
                    .without_time()
                    .with_writer(out.make())
                    .with_context_fields(&fields)
                    .finish()
            },
            || {
                in_request(3, || {
                    ATTEMPT.set(2);
                    tracing::info!(user = "ada", "hi \"there\"");
                });
                tracing::info!("idle");
            },
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let first = lines[0].as_object().unwrap();
        assert_eq!(first["request_id"], 3);
        assert_eq!(first["tenant"], "t3");
        assert_eq!(first["attempt"], 2);
        let message = if flatten {
            &first["message"]
        } else {
            &first["fields"]["message"]
        };
        assert_eq!(message, "hi \"there\"");
        let second = lines[1].as_object().unwrap();
        assert!(!second.contains_key("request_id") && !second.contains_key("tenant"));
    }
}

#[test]
fn an_event_inside_a_mutable_borrow_of_the_local_skips_that_field_and_does_not_panic() {
    let fields = fields();
    let out = captured(
        |out| {
            tracing_subscriber::fmt()
                .json()
                .without_time()
                .with_writer(out.make())
                .with_context_fields(&fields)
                .finish()
        },
        || {
            in_request(5, || {
                ATTEMPT.set(1);
                Request::with_mut(|r| {
                    r.id = 6;
                    tracing::info!("while borrowed");
                });
            });
        },
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v.get("request_id").is_none());
    assert_eq!(v["attempt"], 1);
}

#[test]
#[should_panic(expected = "the field name `request_id` is declared twice")]
fn a_field_name_declared_twice_is_refused() {
    let _ = ContextFields::builder()
        .value("request_id", Request::proxy().map(|r| &r.id))
        .display("request_id", Request::proxy().map(|r| &r.id))
        .build();
}

/// A text formatter that never goes through `FormatFields` (Pretty, one of your own): the
/// fields are not lost, they go on a line of their own.
#[test]
fn a_text_formatter_that_skips_format_fields_gets_the_fields_on_their_own_line() {
    let fields = fields();
    let out = captured(
        |out| {
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(out.make())
                .event_format(ContextEventFormat::text(
                    tracing_subscriber::fmt::format().pretty().without_time(),
                    &fields,
                ))
                .finish()
        },
        || in_request(4, || tracing::info!("pretty")),
    );
    assert!(out.ends_with("    request_id=4 tenant=t4\n"), "{out:?}");
    assert_eq!(out.matches("request_id").count(), 1);
}

/// Hand-written formatters around the JSON splice: an empty object, a non-object.
struct Fixed(&'static str);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Fixed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        _: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // In pieces, as serde_json writes: the splice must not depend on chunking.
        for piece in self.0.split_inclusive(['{', '}']) {
            writer.write_str(piece)?;
        }
        writeln!(writer)
    }
}

#[test]
fn json_splice_handles_an_empty_object_and_leaves_non_objects_alone() {
    for (written, expected) in [
        ("{}", r#"{"request_id":1,"tenant":"t1"}"#),
        (
            r#"{"a":{"b":1}}"#,
            r#"{"request_id":1,"tenant":"t1","a":{"b":1}}"#,
        ),
        ("plain", "plain"),
    ] {
        let fields = fields();
        let out = captured(
            |out| {
                tracing_subscriber::fmt()
                    .with_writer(out.make())
                    .event_format(ContextEventFormat::json(Fixed(written), &fields))
                    .finish()
            },
            || in_request(1, || tracing::info!("x")),
        );
        assert_eq!(out, format!("{expected}\n"));
    }
}

/// Misuse: a fmt layer set up without the fields carries none, bound or not.
#[test]
fn a_layer_without_the_fields_carries_none() {
    let out = captured(
        |out| {
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(out.make())
                .finish()
        },
        || in_request(2, || tracing::info!("plain")),
    );
    assert!(!out.contains("request_id"), "{out}");
}

// ===== Part 3: spans follow children =====

/// `(helper's line, plain spawn's line)` for each spawn helper, logged inside a span.
#[test]
fn spawn_helpers_carry_the_current_span_and_plain_spawns_do_not() {
    let (text, _) = global();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let span = tracing::info_span!("carried", k = 42);
    let _entered = span.enter();
    runtime.block_on(
        async {
            context_local::tokio::spawn(async { tracing::info!("[span] helper tokio") })
                .await
                .unwrap();
            tokio::spawn(async { tracing::info!("[span] plain tokio") })
                .await
                .unwrap();
            context_local::tokio::spawn_blocking(|| tracing::info!("[span] helper blocking"))
                .await
                .unwrap();
            tokio::task::spawn_blocking(|| tracing::info!("[span] plain blocking"))
                .await
                .unwrap();
        }
        .in_current_span(),
    );
    context_local::thread::spawn(|| tracing::info!("[span] helper thread"))
        .join()
        .unwrap();
    std::thread::spawn(|| tracing::info!("[span] plain thread"))
        .join()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    context_local::rayon::spawn(move || {
        tracing::info!("[span] helper rayon");
        tx.send(()).unwrap();
    });
    rayon::spawn(move || {
        tracing::info!("[span] plain rayon");
        tx2.send(()).unwrap();
    });
    rx.recv().unwrap();
    rx.recv().unwrap();
    context_local::rayon::join(
        || tracing::info!("[span] helper join"),
        || tracing::info!("[span] helper join"),
    );

    let lines = text.lines_with("[span]");
    assert_eq!(lines.len(), 10);
    for line in lines {
        let carried = line.contains("carried{k=42}:");
        assert_eq!(carried, line.contains("helper"), "{line}");
    }
}
