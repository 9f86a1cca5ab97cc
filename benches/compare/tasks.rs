//! Per-poll overhead of running a future in a context (`InContext`) or with a scoped value
//! (`scope_future`), against tokio's `task_local!` scopes and OpenTelemetry's `with_context`.
//!
//! Each subject wraps the same `Yields` future, which returns `Pending` until polled enough;
//! one op is one poll. The overhead of a wrapper is its time per poll minus the bare future's,
//! all three sampled alternately in one loop.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context as Cx, Poll, Waker};
use std::time::Instant;

use context_local::{Context, FutureExt, Local, LocalStack};
use opentelemetry::context::FutureExt as _;

use super::{calibrate, median, row, Gate, Row, SAMPLES};

/// Pending until polled `left` times.
struct Yields {
    left: u64,
}

impl Future for Yields {
    type Output = ();
    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, _: &mut Cx<'_>) -> Poll<()> {
        self.left = black_box(self.left).saturating_sub(1);
        if self.left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Polls `fut` `n` times (it is `Yields(n)` inside whatever wrapper).
fn drive(fut: impl Future<Output = ()>, n: u64) {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Cx::from_waker(Waker::noop());
    for _ in 0..n {
        if fut.as_mut().poll(&mut cx).is_ready() {
            break;
        }
    }
}

tokio::task_local! {
    static K1: u64;
    static K2: u64;
    static K3: u64;
    static K4: u64;
}

static ONE: Local<u64> = Local::named("ONE");
static STACK: LocalStack<u64> = LocalStack::named("STACK");
static MANY: [Local<u64>; 64] = [const { Local::new() }; 64];

/// Medians of ns/poll for each subject, sampled alternately.
fn sample_all(subjects: &mut [&mut dyn FnMut(u64)]) -> Vec<f64> {
    let iters: Vec<u64> = subjects.iter_mut().map(|f| calibrate(*f)).collect();
    let mut samples = vec![Vec::new(); subjects.len()];
    for _ in 0..SAMPLES {
        for (k, f) in subjects.iter_mut().enumerate() {
            let t = Instant::now();
            f(iters[k]);
            samples[k].push(t.elapsed().as_nanos() as f64 / iters[k] as f64);
        }
    }
    samples.into_iter().map(median).collect()
}

pub(crate) fn tasks(rows: &mut Vec<Row>) {
    let bare = &mut |n| drive(Yields { left: n }, n);
    // The same future in both: only the number of locals bound in its context differs.
    let in_ctx_one = &mut |n| {
        let ctx = Context::new();
        ctx.run(|| ONE.set(1));
        drive(Yields { left: n }.in_context(ctx), n)
    };
    let in_ctx_many = &mut |n| {
        let ctx = Context::new();
        ctx.run(|| MANY.iter().for_each(|l| l.set(1)));
        drive(Yields { left: n }.in_context(ctx), n)
    };
    let local_scope = &mut |n| drive(ONE.scope_future(1, Yields { left: n }), n);
    let stack_scope = &mut |n| drive(STACK.scope_future(1, Yields { left: n }), n);
    let tokio_one = &mut |n| drive(K1.scope(1, Yields { left: n }), n);
    let tokio_four = &mut |n| {
        let inner = K3.scope(3, K4.scope(4, Yields { left: n }));
        drive(K1.scope(1, K2.scope(2, inner)), n)
    };
    let otel = &mut |n| {
        let cx = opentelemetry::Context::current();
        drive(Yields { left: n }.with_context(cx), n)
    };
    let m = sample_all(&mut [
        bare,
        in_ctx_one,
        in_ctx_many,
        local_scope,
        stack_scope,
        tokio_one,
        tokio_four,
        otel,
    ]);
    let over = |i: usize| (m[i] - m[0]).max(0.01);
    let (ctx1, ctx64, lscope, sscope, tok1, tok4, otel) = (
        over(1),
        over(2),
        over(3),
        over(4),
        over(5),
        over(6),
        over(7),
    );
    let tokio1 = "tokio task_local! scope, 1 key";
    rows.push(row(
        "InContext, per poll (1 local bound)",
        ctx1,
        tokio1,
        tok1,
        Gate::AtMost(0.5),
    ));
    rows.push(row(
        "InContext, per poll (64 locals bound)",
        ctx64,
        "InContext, 1 local bound",
        ctx1,
        Gate::AtMost(1.1),
    ));
    rows.push(row(
        "InContext, per poll (1 local bound)",
        ctx1,
        "tokio task_local! scope, 4 keys",
        tok4,
        Gate::None,
    ));
    rows.push(row(
        "InContext, per poll (1 local bound)",
        ctx1,
        "opentelemetry FutureExt::with_context",
        otel,
        Gate::None,
    ));
    rows.push(row(
        "Local::scope_future, per poll",
        lscope,
        tokio1,
        tok1,
        Gate::AtMost(1.0),
    ));
    rows.push(row(
        "LocalStack::scope_future, per poll",
        sscope,
        tokio1,
        tok1,
        Gate::AtMost(1.0),
    ));
    rows.push(row(
        "(baseline) bare poll, subtracted above",
        m[0],
        "-",
        m[0],
        Gate::None,
    ));
}
