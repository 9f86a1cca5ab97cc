//! Inheritance: capturing a snapshot, running in a fork, reading an inherited value, and the
//! spawn helpers, against OpenTelemetry's `Context` and hand-written equivalents.

use std::hint::black_box;

use context_local::rayon::ParallelIteratorExt;
use context_local::{Context, FutureExt as _, Local, Snapshot};
use opentelemetry::context::FutureExt as _;
use rayon::prelude::*;

use super::{pair, row, Gate, Row};

static ONE: Local<u64> = Local::named("ONE").inheritable();
static MANY: [Local<u64>; 64] = [const { Local::new().inheritable() }; 64];
static PLAIN: Local<u64> = Local::named("PLAIN");

pub(crate) fn inherit(rows: &mut Vec<Row>) {
    capture(rows);
    forks(rows);
    spawns(rows);
}

pub(crate) fn capture(rows: &mut Vec<Row>) {
    // A current OpenTelemetry context holding one value, as ours holds one (or 64).
    let otel = || {
        |n: u64| {
            let _g = opentelemetry::Context::current_with_value(7u64).attach();
            for _ in 0..n {
                black_box(opentelemetry::Context::current());
            }
        }
    };
    let one = Context::new();
    one.run(|| ONE.set(1));
    let many = Context::new();
    many.run(|| MANY.iter().for_each(|l| l.set(1)));
    fn captures(ctx: &Context, write: bool) -> impl FnMut(u64) + '_ {
        move |n: u64| {
            ctx.run(|| {
                for i in 0..n {
                    if write {
                        ONE.set(black_box(i));
                    }
                    black_box(Snapshot::capture());
                }
            })
        }
    }
    let (o1, p) = pair(captures(&one, false), otel());
    rows.push(row(
        "Snapshot::capture, 1 inheritable bound",
        o1,
        "opentelemetry Context::current()",
        p,
        Gate::AtMost(1.0),
    ));
    let (o64, o1b) = pair(captures(&many, false), captures(&one, false));
    rows.push(row(
        "Snapshot::capture, 64 inheritable bound",
        o64,
        "capture, 1 bound",
        o1b,
        Gate::AtMost(1.1),
    ));
    let (w1, p) = pair(captures(&one, true), otel());
    rows.push(row(
        "set + capture, 1 inheritable bound",
        w1,
        "opentelemetry Context::current()",
        p,
        Gate::None,
    ));
    many.run(|| ONE.set(0));
    let (w64, p) = pair(captures(&many, true), otel());
    rows.push(row(
        "set + capture, 65 inheritable bound",
        w64,
        "opentelemetry Context::current()",
        p,
        Gate::None,
    ));
    // A write then a capture must cost what it costs with one inheritable local bound: the
    // capture copies what changed, not the whole frame.
    let (w64, w1) = pair(captures(&many, true), captures(&one, true));
    rows.push(row(
        "set + capture, 65 inheritable bound",
        w64,
        "set + capture, 1 bound",
        w1,
        Gate::AtMost(1.1),
    ));
}

fn forks(rows: &mut Vec<Row>) {
    let parent = Context::new();
    let snapshot = parent.run(|| {
        ONE.set(1);
        Snapshot::capture()
    });
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                snapshot.run(|| black_box(()));
            }
        },
        |n| {
            for _ in 0..n {
                Context::new().run(|| black_box(()));
            }
        },
    );
    rows.push(row(
        "Snapshot::run, empty closure",
        o,
        "Context::new().run(..)",
        p,
        Gate::AtMost(1.0),
    ));
    let fork = snapshot.fork();
    let plain = Context::new();
    plain.run(|| PLAIN.set(1));
    let (o, p) = pair(
        |n| {
            fork.run(|| {
                for _ in 0..n {
                    black_box(ONE.with(|v| *v));
                }
            })
        },
        |n| {
            plain.run(|| {
                for _ in 0..n {
                    black_box(PLAIN.with(|v| *v));
                }
            })
        },
    );
    rows.push(row(
        "read of an inherited value in a fork",
        o,
        "read of a value bound there",
        p,
        Gate::AtMost(2.0),
    ));
}

fn spawns(rows: &mut Vec<Row>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    ONE.set(1);
    let (o, p) = pair(
        |n| {
            rt.block_on(async {
                for _ in 0..n {
                    context_local::tokio::spawn(async { black_box(()) })
                        .await
                        .unwrap();
                }
            })
        },
        |n| {
            rt.block_on(async {
                for _ in 0..n {
                    let cx = opentelemetry::Context::current();
                    tokio::spawn(async { black_box(()) }.with_context(cx))
                        .await
                        .unwrap();
                }
            })
        },
    );
    rows.push(row(
        "context_local::tokio::spawn + await",
        o,
        "tokio::spawn(fut.with_context(current))",
        p,
        Gate::None,
    ));
    let (o, p) = pair(
        |n| {
            rt.block_on(async {
                for _ in 0..n {
                    tokio::spawn(async { black_box(()) }.in_new_context())
                        .await
                        .unwrap();
                }
            })
        },
        |n| {
            rt.block_on(async {
                for _ in 0..n {
                    tokio::spawn(async { black_box(()) }).await.unwrap();
                }
            })
        },
    );
    rows.push(row(
        "tokio::spawn(fut.in_new_context()) + await",
        o,
        "tokio::spawn + await",
        p,
        Gate::None,
    ));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (o, p) = pair(
        |n| {
            context_local::rayon::install(&pool, || {
                (0..n).into_par_iter().in_child_contexts().for_each(|i| {
                    black_box(ONE.with(|v| v + i));
                })
            })
        },
        |n| {
            let one = ONE.get().unwrap();
            pool.install(|| {
                (0..n).into_par_iter().for_each(|i| {
                    Context::new().run(|| {
                        ONE.set(one);
                        black_box(ONE.with(|v| v + i));
                    })
                })
            })
        },
    );
    rows.push(row(
        "rayon in_child_contexts, per item",
        o,
        "Context::new().run(set + f) per item",
        p,
        Gate::None,
    ));
    ONE.release();
}
