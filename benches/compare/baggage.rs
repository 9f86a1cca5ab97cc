//! W3C Baggage: injecting and extracting 1 and 8 entries, against `opentelemetry_sdk`'s
//! `BaggagePropagator` on the same entries; allocations per inject.

use std::collections::HashMap;
use std::hint::black_box;

use context_local::baggage::{Injector, Propagator};
use context_local::Local;
use context_local_alloc_counter::CountingAlloc;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::BaggagePropagator;

use super::{pair, row, Gate, Row};

static KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
static LOCALS: [Local<String>; 8] = [
    Local::named("K0").baggage("k0"),
    Local::named("K1").baggage("k1"),
    Local::named("K2").baggage("k2"),
    Local::named("K3").baggage("k3"),
    Local::named("K4").baggage("k4"),
    Local::named("K5").baggage("k5"),
    Local::named("K6").baggage("k6"),
    Local::named("K7").baggage("k7"),
];

/// A carrier that keeps the header string it is given and nothing else.
#[derive(Default)]
struct Slot(Option<String>);

impl Injector for Slot {
    fn get_all(&self, _: &str) -> Vec<&[u8]> {
        Vec::new()
    }
    fn set(&mut self, _: &str, value: String) {
        self.0 = Some(value);
    }
    fn remove(&mut self, _: &str) {
        self.0 = None;
    }
}

impl opentelemetry::propagation::Injector for Slot {
    fn set(&mut self, _: &str, value: String) {
        self.0 = Some(value);
    }
}

pub(crate) fn baggage(rows: &mut Vec<Row>) {
    for n in [1, 8] {
        let ours = LOCALS[..n].iter().fold(Propagator::new(), |p, l| p.with(l));
        for (i, l) in LOCALS[..n].iter().enumerate() {
            l.set(format!("value-{i}"));
        }
        let otel_cx = opentelemetry::Context::new()
            .with_baggage((0..n).map(|i| KeyValue::new(KEYS[i], format!("value-{i}"))));
        let otel = BaggagePropagator::new();
        let (o, p) = pair(
            |iters| {
                for _ in 0..iters {
                    let mut c = Slot::default();
                    let _ = ours.inject(&mut c);
                    black_box(c);
                }
            },
            |iters| {
                for _ in 0..iters {
                    let mut c = Slot::default();
                    otel.inject_context(&otel_cx, &mut c);
                    black_box(c);
                }
            },
        );
        rows.push(row(
            &format!("baggage inject, {n} entries"),
            o,
            "opentelemetry_sdk BaggagePropagator",
            p,
            Gate::AtMost(1.0),
        ));
        let mut headers = HashMap::new();
        ours.inject(&mut headers).unwrap();
        let (o, p) = pair(
            |iters| {
                for _ in 0..iters {
                    black_box(ours.extract(&headers));
                }
            },
            |iters| {
                for _ in 0..iters {
                    black_box(otel.extract(&headers));
                }
            },
        );
        rows.push(row(
            &format!("baggage extract, {n} entries"),
            o,
            "opentelemetry_sdk BaggagePropagator",
            p,
            Gate::AtMost(1.0),
        ));
        let before = CountingAlloc::allocations();
        let mut c = Slot::default();
        let _ = ours.inject(&mut c);
        let allocs = CountingAlloc::allocations() - before;
        rows.push(Row {
            op: format!("heap allocations per inject, {n} entries"),
            ours: allocs as f64,
            peer: None,
            gate: Gate::AtMost(1.0),
            unit: "",
        });
        LOCALS[..n].iter().for_each(Local::release);
    }
}
