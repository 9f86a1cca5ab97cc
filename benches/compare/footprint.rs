//! Memory of a context: bytes still allocated per context while 100,000 of them live, ours
//! against OpenTelemetry's `Context` holding the same three values, and of a child context that
//! inherited them and wrote nothing (a request context per connection).

use std::hint::black_box;

use context_local::{Context, Local};
use context_local_alloc_counter::CountingAlloc;

use super::{Gate, Row};

/// Contexts alive at once, as connections of a busy server.
const CONTEXTS: usize = 100_000;

static A: Local<u64> = Local::named("FOOTPRINT_A");
static B: Local<u64> = Local::named("FOOTPRINT_B");
static C: Local<String> = Local::named("FOOTPRINT_C");
static IA: Local<u64> = Local::named("FOOTPRINT_IA").inheritable();
static IB: Local<u64> = Local::named("FOOTPRINT_IB").inheritable();
static IC: Local<String> = Local::named("FOOTPRINT_IC").inheritable();

struct OtelA(#[allow(dead_code)] u64);
struct OtelB(#[allow(dead_code)] u64);
struct OtelC(#[allow(dead_code)] String);

fn text() -> String {
    String::from("tenant-1")
}

/// Bytes still allocated per item while `CONTEXTS` items made by `make` are alive.
fn live_per_item<X>(mut make: impl FnMut() -> X) -> f64 {
    drop(make()); // first use: indices, lazy statics
    let mut alive = Vec::with_capacity(CONTEXTS);
    let before = CountingAlloc::live_bytes();
    for _ in 0..CONTEXTS {
        alive.push(make());
    }
    let after = CountingAlloc::live_bytes();
    black_box(&alive);
    drop(alive);
    after.wrapping_sub(before) as f64 / CONTEXTS as f64
}

pub(crate) fn footprint(rows: &mut Vec<Row>) {
    let ours = live_per_item(|| {
        let ctx = Context::new();
        ctx.run(|| {
            A.set(black_box(1));
            B.set(black_box(2));
            C.set(text());
        });
        ctx
    });
    let otel = live_per_item(|| {
        opentelemetry::Context::new()
            .with_value(OtelA(black_box(1)))
            .with_value(OtelB(black_box(2)))
            .with_value(OtelC(text()))
    });
    rows.push(Row {
        op: "bytes per context holding 3 values (100k live)".into(),
        ours,
        peer: Some(("opentelemetry Context, same 3 values".into(), otel)),
        gate: Gate::AtMost(1.0),
        unit: "B",
    });
    let parent = Context::new();
    let child = parent.run(|| {
        IA.set(1);
        IB.set(2);
        IC.set(text());
        live_per_item(Context::child)
    });
    rows.push(Row {
        op: "bytes per child context, inherited 3, unwritten".into(),
        ours: child,
        peer: None,
        gate: Gate::AtMost(256.0),
        unit: "B",
    });
}
