//! Feature `tracing` against hostile values: a tenant that came in from the network (here as
//! W3C baggage, percent-decoded) must not forge log lines in text or members in JSON; events
//! inside `with_mut`, inside a `Drop` at teardown, and on a thread after a request carry no
//! stale or borrowed values.
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use context_local::baggage::Propagator;
use context_local::tracing::{ContextFields, ContextFieldsExt};
use context_local::{Context, Local};

static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried()]);

/// A `MakeWriter` into a shared buffer.
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
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn fields() -> ContextFields {
    ContextFields::builder()
        .display("tenant", TENANT.proxy())
        .build()
}

/// A hostile `baggage` header: the tenant decodes to a CR LF, a forged log line with a forged
/// request id, an ANSI escape, quotes and a forged JSON member.
const HOSTILE: &str = "tenant=acme%0D%0A2025-01-01T00:00:00.000000Z%20%20INFO%20app%3A%20forged%20request_id%3D1%1B%5B2J%22%2C%22admin%22%3Atrue";

fn hostile_tenant() -> context_local::Snapshot {
    let headers = HashMap::from([("baggage".to_string(), HOSTILE.to_string())]);
    let extracted = PROPAGATOR.extract(&headers);
    assert!(extracted.errors().is_empty(), "{:?}", extracted.errors());
    let snapshot = extracted.into_snapshot();
    assert!(snapshot.run(|| TENANT.with(|t| t.contains('\n'))));
    snapshot
}

#[test]
fn a_hostile_tenant_does_not_forge_a_text_log_line() {
    let out = Capture::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .with_context_fields(&fields())
        .finish();
    let snapshot = hostile_tenant();
    tracing::subscriber::with_default(subscriber, || {
        snapshot.run(|| tracing::info!("handled"));
    });
    let text = out.text();
    assert_eq!(
        text.lines().count(),
        1,
        "one event, one line; a hostile tenant forged more:\n{text}"
    );
    assert!(!text.contains('\u{1b}'), "raw escape in: {text:?}");
    assert!(text.contains("tenant=acme"), "{text}");
}

/// Compact text (the fields after the event's own) and the line of their own of a formatter
/// that never calls `FormatFields` (Pretty) are escaped alike.
#[test]
fn a_hostile_tenant_does_not_forge_a_compact_or_pretty_line() {
    for pretty in [false, true] {
        let out = Capture::default();
        let w = out.clone();
        let snapshot = hostile_tenant();
        let dispatch = if pretty {
            let format = context_local::tracing::ContextEventFormat::text(
                tracing_subscriber::fmt::format().pretty().with_ansi(false),
                &fields(),
            );
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(move || w.clone())
                    .event_format(format)
                    .finish(),
            )
        } else {
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .compact()
                    .with_ansi(false)
                    .with_writer(move || w.clone())
                    .with_context_fields(&fields())
                    .finish(),
            )
        };
        tracing::dispatcher::with_default(&dispatch, || {
            snapshot.run(|| tracing::info!("handled"));
        });
        let text = out.text();
        assert!(
            !text
                .lines()
                .any(|l| l.contains("forged") && !l.contains("tenant=")),
            "pretty={pretty}: a line without the field name carries the forged text:\n{text}"
        );
        assert!(!text.contains('\u{1b}'), "pretty={pretty}: {text:?}");
    }
}

#[test]
fn a_hostile_tenant_does_not_forge_a_json_member() {
    let out = Capture::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || w.clone())
        .with_context_fields(&fields())
        .finish();
    let snapshot = hostile_tenant();
    tracing::subscriber::with_default(subscriber, || {
        snapshot.run(|| tracing::info!("handled"));
    });
    let text = out.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(v.get("admin").is_none(), "forged member: {text}");
    let tenant = v["tenant"].as_str().unwrap();
    assert!(
        tenant.starts_with("acme\r\n2025") && tenant.ends_with("\"admin\":true"),
        "JSON keeps the value as it is, escaped: {tenant:?}"
    );
}

/// Controls and the places where a value is half there: inside `with_mut` of the local (left
/// out, never a stale copy), in a `Drop` during a context's teardown (its own context's values
/// still readable, or left out — never another context's), and on the thread after a request
/// (nothing).
#[test]
fn events_inside_with_mut_in_teardown_drop_and_after_a_request_carry_no_stale_value() {
    static REQ: Local<String> = Local::named("REQ");
    struct LogsOnDrop;
    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::info!("teardown-drop");
        }
    }
    static DROPS: Local<LogsOnDrop> = Local::named("DROPS");
    let fields = ContextFields::builder().display("req", REQ.proxy()).build();
    let out = Capture::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .with_context_fields(&fields)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        REQ.set("own".into()); // the thread's own value, a control
        Context::new().run(|| {
            DROPS.set(LogsOnDrop); // bound first: dropped last, after REQ
            REQ.set("r-1".into());
            REQ.with_mut(|r| {
                r.push_str("-mut");
                tracing::info!("inside-with-mut");
            });
            tracing::info!("after-with-mut");
        });
        tracing::info!("after-request");
        // Bound after REQ here: dropped first at the teardown of this context.
        let c = Context::new();
        c.run(|| {
            REQ.set("r-2".into());
            DROPS.set(LogsOnDrop);
        });
        drop(c);
    });
    let text = out.text();
    let line = |m: &str| {
        text.lines()
            .find(|l| l.contains(m))
            .unwrap_or_else(|| panic!("no {m} line in {text}"))
            .to_owned()
    };
    assert!(!line("inside-with-mut").contains("req="), "{text}");
    assert!(line("after-with-mut").contains("req=r-1-mut"), "{text}");
    assert!(line("after-request").contains("req=own"), "{text}");
    let drops: Vec<_> = text
        .lines()
        .filter(|l| l.contains("teardown-drop"))
        .collect();
    assert_eq!(drops.len(), 2, "{text}");
    // First context: DROPS was bound first, so REQ is gone when it drops: no field, never the
    // thread's own "own". Second: DROPS bound last, REQ still there.
    assert!(!drops[0].contains("req="), "{text}");
    assert!(drops[1].contains("req=r-2"), "{text}");
}
