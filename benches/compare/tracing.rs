//! Feature `tracing`: an event carrying 3 context locals as fields, against the same event
//! inside a span holding those 3 fields (tracing's own way to put request values on lines);
//! and what declared-but-unbound fields cost an event outside any request.
//!
//! Both sides format with tracing-subscriber's fmt layer (no timestamp, so the clock does not
//! dominate) into `io::sink`; in a request the span is entered once, so it is entered outside
//! the timed loop, as the locals are bound outside it.

use std::hint::black_box;

use context_local::tracing::{ContextFields, ContextFieldsExt};
use context_local::{Context, Local};
use tracing::Dispatch;

use super::{pair, row, Gate, Row};

static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
static TENANT: Local<String> = Local::named("TENANT");
static USER: Local<String> = Local::named("USER");

fn fields() -> ContextFields {
    ContextFields::builder()
        .value("request_id", REQUEST_ID.proxy())
        .display("tenant", TENANT.proxy())
        .display("user", USER.proxy())
        .build()
}

fn text(with_fields: bool) -> Dispatch {
    let builder = tracing_subscriber::fmt()
        .without_time()
        .with_ansi(false)
        .with_writer(std::io::sink);
    if with_fields {
        Dispatch::new(builder.with_context_fields(&fields()).finish())
    } else {
        Dispatch::new(builder.finish())
    }
}

fn json(with_fields: bool) -> Dispatch {
    let builder = tracing_subscriber::fmt()
        .json()
        .without_time()
        .with_writer(std::io::sink);
    if with_fields {
        Dispatch::new(builder.with_context_fields(&fields()).finish())
    } else {
        Dispatch::new(builder.finish())
    }
}

fn events(n: u64) {
    for i in 0..n {
        tracing::info!(attempt = black_box(i), "handled");
    }
}

pub(crate) fn tracing(rows: &mut Vec<Row>) {
    for (format, make) in [("text", text as fn(bool) -> Dispatch), ("JSON", json)] {
        let (ours_dispatch, peer_dispatch) = (make(true), make(false));
        let request = Context::new();
        request.run(|| {
            REQUEST_ID.set(7);
            TENANT.set("acme".into());
            USER.set("ada".into());
        });
        let span = tracing::dispatcher::with_default(
            &peer_dispatch,
            || tracing::info_span!("request", request_id = 7u64, tenant = %"acme", user = %"ada"),
        );
        let (o, p) = pair(
            |n| tracing::dispatcher::with_default(&ours_dispatch, || request.run(|| events(n))),
            |n| tracing::dispatcher::with_default(&peer_dispatch, || span.in_scope(|| events(n))),
        );
        rows.push(row(
            &format!("{format} event + 3 context-local fields"),
            o,
            "same event in a span with 3 fields",
            p,
            Gate::None,
        ));
        // Outside any request: the 3 declared fields are read, found unbound, and skipped.
        let (o, p) = pair(
            |n| tracing::dispatcher::with_default(&ours_dispatch, || events(n)),
            |n| tracing::dispatcher::with_default(&peer_dispatch, || events(n)),
        );
        rows.push(row(
            &format!("{format} event, 3 fields declared, none bound"),
            o,
            "same event, no fields declared",
            p,
            Gate::None,
        ));
    }
}
