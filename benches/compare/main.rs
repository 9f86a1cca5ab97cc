//! Side-by-side benchmarks against the peers, and the DESIGN.md gates, in one process.
//!
//! `scripts/bench-report` (or `cargo bench --bench compare`) prints one table: op, ours ns/op,
//! peer ns/op, ratio, gate, met. Every figure is a median; every ratio compares two medians of
//! the same run, whose samples were taken alternately (ours, peer, ours, ...) so that drift of
//! a shared machine hits both sides alike. Allocation counts come from a counting global
//! allocator, memory from it and from /proc.
//!
//! A custom harness rather than criterion: the report needs paired, same-run ratios across
//! very different peers (and multi-threaded runs), which criterion does not produce.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::thread::{self, ThreadId};
use std::time::Instant;

use context_local::{Context, Local, LocalStack};

mod baggage;
mod edges;
mod footprint;
mod inherit;
mod iteration;
mod tasks;
mod tracing;
use context_local_alloc_counter::CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------------
// Measurement.

const SAMPLES: usize = 31;

/// ns/op of `f(iters)`, calibrated so one sample takes about 2 ms.
fn calibrate(f: &mut dyn FnMut(u64)) -> u64 {
    let mut iters = 1_000u64;
    loop {
        let t = Instant::now();
        f(iters);
        let ns = t.elapsed().as_nanos() as u64;
        if ns > 2_000_000 || iters >= 1 << 28 {
            return iters;
        }
        iters = (iters * 2_000_000 / ns.max(1)).clamp(iters * 2, iters * 100);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Medians of ours and peer, sampled alternately.
fn pair(mut ours: impl FnMut(u64), mut peer: impl FnMut(u64)) -> (f64, f64) {
    let (io, ip) = (calibrate(&mut ours), calibrate(&mut peer));
    let (mut so, mut sp) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let t = Instant::now();
        ours(io);
        so.push(t.elapsed().as_nanos() as f64 / io as f64);
        let t = Instant::now();
        peer(ip);
        sp.push(t.elapsed().as_nanos() as f64 / ip as f64);
    }
    (median(so), median(sp))
}

/// One sample: ns/op when `threads` threads run `f(iters)` at once (the slowest thread's time).
fn parallel_sample(threads: usize, iters: u64, f: &(dyn Fn(u64) + Sync)) -> f64 {
    let start = Barrier::new(threads);
    let times: Vec<f64> = thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    f(16); // warm this thread's context
                    start.wait();
                    let t = Instant::now();
                    f(iters);
                    t.elapsed().as_nanos() as f64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.into_iter().fold(0.0, f64::max) / iters as f64
}

/// Medians of ns/op with 1 and with 2 threads at once, for each of `subjects`, all sampled in
/// one interleaved loop so that machine noise hits every subject alike.
fn scaling_pairs(subjects: &[&(dyn Fn(u64) + Sync)]) -> Vec<(f64, f64)> {
    let iters: Vec<u64> = subjects.iter().map(|f| calibrate(&mut |n| f(n))).collect();
    let mut samples = vec![(Vec::new(), Vec::new()); subjects.len()];
    for _ in 0..SAMPLES {
        for (k, f) in subjects.iter().enumerate() {
            samples[k].0.push(parallel_sample(1, iters[k], *f));
            samples[k].1.push(parallel_sample(2, iters[k], *f));
        }
    }
    samples
        .into_iter()
        .map(|(one, two)| (median(one), median(two)))
        .collect()
}

/// ns/op when `threads` threads run `f` at once (median of 15 samples).
fn parallel(threads: usize, f: impl Fn(u64) + Sync) -> f64 {
    let iters = calibrate(&mut |n| f(n));
    median(
        (0..15)
            .map(|_| parallel_sample(threads, iters, &f))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// The report.

enum Gate {
    /// ours / peer must be at most this.
    AtMost(f64),
    /// peer / ours must be at least this.
    Speedup(f64),
    /// Informational.
    None,
}

struct Row {
    op: String,
    ours: f64,
    peer: Option<(String, f64)>,
    gate: Gate,
    unit: &'static str,
}

impl Row {
    fn print(&self) {
        let peer = match &self.peer {
            Some((name, v)) => format!("{v:>9.2} {name}"),
            None => "        -".to_string(),
        };
        let (ratio, gate, met) = match (&self.peer, &self.gate) {
            (Some((_, p)), Gate::AtMost(max)) => {
                let r = self.ours / p;
                (
                    format!("{r:.2}x"),
                    format!("<= {max}x"),
                    if r <= *max { "met" } else { "MISSED" },
                )
            }
            (Some((_, p)), Gate::Speedup(min)) => {
                let r = p / self.ours;
                (
                    format!("{r:.0}x faster"),
                    format!(">= {min}x faster"),
                    if r >= *min { "met" } else { "MISSED" },
                )
            }
            (Some((_, p)), Gate::None) => (format!("{:.2}x", self.ours / p), "-".into(), ""),
            (None, Gate::AtMost(max)) => (
                "-".into(),
                format!("<= {max}"),
                if self.ours <= *max { "met" } else { "MISSED" },
            ),
            (None, _) => ("-".into(), "-".into(), ""),
        };
        println!(
            "| {:<44} | {:>9.2} {:<5}| {:<38} | {:>12} | {:>16} | {:<6} |",
            self.op, self.ours, self.unit, peer, ratio, gate, met
        );
    }
}

fn header() {
    println!(
        "| {:<44} | {:>15} | {:<38} | {:>12} | {:>16} | {:<6} |",
        "op", "ours", "peer", "ratio", "gate", "met"
    );
    println!(
        "|{:-<46}|{:->17}|{:-<40}|{:->14}|{:->18}|{:-<8}|",
        "", "", "", "", "", ""
    );
}

// ---------------------------------------------------------------------------------------------
// Subjects.

static L: Local<u64> = Local::named("L");
static S: LocalStack<u64> = LocalStack::named("S");

thread_local! {
    static STD_CELL: Cell<u64> = const { Cell::new(1) };
    static STD_REFCELL: RefCell<u64> = const { RefCell::new(1) };
    static STD_VEC: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

scoped_tls::scoped_thread_local!(static SCOPED: u64);

tokio::task_local! {
    static TASK: u64;
}

/// The seeds' design ported as-is: one lock around `{ident: stack}`, entry removed on last pop.
#[derive(Default)]
struct Naive(Mutex<HashMap<ThreadId, Vec<u64>>>);

impl Naive {
    fn push(&self, v: u64) {
        let id = thread::current().id();
        self.0.lock().unwrap().entry(id).or_default().push(v);
    }
    fn pop(&self) -> Option<u64> {
        let id = thread::current().id();
        let mut map = self.0.lock().unwrap();
        let stack = map.get_mut(&id)?;
        let v = stack.pop();
        if stack.is_empty() {
            map.remove(&id);
        }
        v
    }
}

fn ours_with(n: u64) {
    for i in 0..n {
        black_box(L.with(|v| *v + black_box(i)));
    }
}

fn ours_push_pop(n: u64) {
    for i in 0..n {
        S.push(black_box(i));
        black_box(S.pop());
    }
}

/// Work the compiler cannot see through, as code deep in a call stack does with a value.
#[inline(never)]
fn opaque(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

static XL: Local<u64> = Local::named("XL").explicit_only();
static XS: LocalStack<u64> = LocalStack::named("XS").explicit_only();

/// An explicit-only local against a plain one, both in an explicit context (where an
/// explicit-only local may be written): reads must cost the same, writes at most a branch.
fn explicit_only_rows(rows: &mut Vec<Row>) {
    let ctx = Context::new();
    let _entered = ctx.enter();
    L.set(1);
    XL.set(1);
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                black_box(XL.with(|v| *v + black_box(i)));
            }
        },
        ours_with,
    );
    rows.push(row(
        "Local::with, explicit-only (in a Context)",
        o,
        "Local::with, plain (in a Context)",
        p,
        Gate::None,
    ));
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                XS.push(black_box(i));
                black_box(XS.pop());
            }
        },
        ours_push_pop,
    );
    rows.push(row(
        "push + pop, explicit-only (in a Context)",
        o,
        "push + pop, plain (in a Context)",
        p,
        Gate::None,
    ));
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                XL.set(black_box(i));
            }
        },
        |n| {
            for i in 0..n {
                L.set(black_box(i));
            }
        },
    );
    rows.push(row(
        "Local::set, explicit-only (in a Context)",
        o,
        "Local::set, plain (in a Context)",
        p,
        Gate::None,
    ));
}

fn hot_paths(rows: &mut Vec<Row>) {
    read_rows(rows);
    hot_writes(rows);
}

/// The reads of a bound `Local` against their peers, and `with_mut` against `with`: the
/// `read` section alone, for measuring a change of the read path.
fn read_rows(rows: &mut Vec<Row>) {
    L.set(1);
    let (floor, _) = pair(
        |n| {
            for i in 0..n {
                black_box(black_box(i) + 1);
            }
        },
        |_| {},
    );
    rows.push(Row {
        op: "(floor) the measuring loop alone, per iteration".into(),
        ours: floor,
        peer: None,
        gate: Gate::None,
        unit: "ns",
    });
    // The same reads with opaque work on the value: the compiler cannot fold either side.
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                black_box(L.with(|v| opaque(*v)));
            }
        },
        |n| {
            for _ in 0..n {
                black_box(STD_REFCELL.with_borrow(|v| opaque(*v)));
            }
        },
    );
    rows.push(row(
        "Local::with + opaque work",
        o,
        "std RefCell::with_borrow + opaque work",
        p,
        Gate::None,
    ));
    let (o, p) = pair(ours_with, std_with);
    rows.push(row(
        "Local::with, bound (read)",
        o,
        "std thread_local! RefCell::with_borrow",
        p,
        Gate::AtMost(1.5),
    ));
    let (o, p) = pair(ours_with, |n| {
        for i in 0..n {
            black_box(STD_CELL.with(|c| c.get()) + black_box(i));
        }
    });
    rows.push(row(
        "Local::with, bound (read)",
        o,
        "std thread_local! const Cell::get",
        p,
        Gate::None,
    ));
    let tl = thread_local::ThreadLocal::new();
    tl.get_or(|| 1u64);
    let (o, p) = pair(ours_with, |n| {
        for i in 0..n {
            black_box(*tl.get().unwrap() + black_box(i));
        }
    });
    rows.push(row(
        "Local::with, bound (read)",
        o,
        "thread_local::ThreadLocal::get",
        p,
        Gate::AtMost(1.0),
    ));

    let (o, p) = pair(
        |n| {
            for i in 0..n {
                black_box(L.with_mut(|v| {
                    *v = black_box(i);
                    *v
                }));
            }
        },
        ours_with,
    );
    rows.push(row(
        "Local::with_mut, bound (write through &mut)",
        o,
        "Local::with, bound (read)",
        p,
        Gate::AtMost(1.5),
    ));
}

/// The write rows of `hot_paths` after the reads.
fn hot_writes(rows: &mut Vec<Row>) {
    let (o, p) = pair(ours_push_pop, std_push_pop);
    rows.push(row(
        "push + pop, 1 element (release-on-pop)",
        o,
        "std thread_local! RefCell<Vec>",
        p,
        Gate::AtMost(1.5),
    ));
    explicit_only_rows(rows);
    let naive = Naive::default();
    let naive_push_pop = |n| {
        for i in 0..n {
            naive.push(black_box(i));
            black_box(naive.pop());
        }
    };
    let (o, p) = pair(ours_push_pop, naive_push_pop);
    rows.push(row(
        "push + pop, 1 thread",
        o,
        "naive Mutex<HashMap<ThreadId, Vec>>",
        p,
        Gate::Speedup(15.0),
    ));
    let o = parallel(2, ours_push_pop);
    let p = parallel(2, naive_push_pop);
    rows.push(row(
        "push + pop, 2 contending threads",
        o,
        "naive Mutex<HashMap<ThreadId, Vec>>",
        p,
        Gate::Speedup(50.0),
    ));
}

fn row(op: &str, ours: f64, peer: &str, p: f64, gate: Gate) -> Row {
    Row {
        op: op.into(),
        ours,
        peer: Some((peer.into(), p)),
        gate,
        unit: "ns",
    }
}

fn std_push_pop(n: u64) {
    for i in 0..n {
        STD_VEC.with_borrow_mut(|v| v.push(black_box(i)));
        black_box(STD_VEC.with_borrow_mut(Vec::pop));
    }
}

fn std_with(n: u64) {
    for i in 0..n {
        black_box(STD_REFCELL.with_borrow(|v| *v + black_box(i)));
    }
}

fn scaling(rows: &mut Vec<Row>) {
    let ours_with_bound = |n| {
        L.set(1);
        ours_with(n)
    };
    // Five runs of paired samples: the gate holds only if it holds in every run, so each row
    // shows the worst run, with the range of all five in its name.
    let runs: Vec<Vec<(f64, f64)>> = (0..5)
        .map(|_| scaling_pairs(&[&ours_push_pop, &std_push_pop, &ours_with_bound, &std_with]))
        .collect();
    let labels = [
        (
            "push + pop, 2 threads at once",
            "ours, 1 thread",
            Gate::AtMost(1.1),
        ),
        (
            "(control) std RefCell<Vec> push + pop, 2 thr.",
            "std, 1 thread",
            Gate::None,
        ),
        (
            "Local::with, 2 threads at once",
            "ours, 1 thread",
            Gate::AtMost(1.1),
        ),
        (
            "(control) std RefCell::with_borrow, 2 thr.",
            "std, 1 thread",
            Gate::None,
        ),
    ];
    for (k, (op, peer, gate)) in labels.into_iter().enumerate() {
        let ratios: Vec<f64> = runs.iter().map(|r| r[k].1 / r[k].0).collect();
        let worst = (0..runs.len())
            .max_by(|&a, &b| ratios[a].total_cmp(&ratios[b]))
            .unwrap();
        let (lo, hi) = (
            ratios.iter().copied().fold(f64::MAX, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
        );
        rows.push(row(
            &format!("{op} ({lo:.2}-{hi:.2}x in 5 runs)"),
            runs[worst][k].1,
            peer,
            runs[worst][k].0,
            gate,
        ));
    }
}

/// A scope's body as code deep in a call stack is: a call the compiler does not inline.
#[inline(never)]
fn body_ours() -> Option<u64> {
    S.with_top(|v| *v)
}

#[inline(never)]
fn body_scoped_tls() -> u64 {
    SCOPED.with(|v| *v)
}

/// As [`body_ours`], for a `Local`.
#[inline(never)]
fn body_local() -> u64 {
    SL.with(|v| *v)
}

static SL: Local<u64> = Local::named("SL");

fn scopes(rows: &mut Vec<Row>) {
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                black_box(SL.scope(black_box(i), body_local));
            }
        },
        |n| {
            for i in 0..n {
                black_box(SCOPED.set(&black_box(i), body_scoped_tls));
            }
        },
    );
    rows.push(row(
        "Local::scope(value, non-inlined body reading)",
        o,
        "scoped-tls set + with, same body",
        p,
        Gate::AtMost(1.0),
    ));
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                black_box(S.scope(black_box(i), body_ours));
            }
        },
        |n| {
            for i in 0..n {
                black_box(SCOPED.set(&black_box(i), body_scoped_tls));
            }
        },
    );
    rows.push(row(
        "scope(value, non-inlined body reading it)",
        o,
        "scoped-tls set + with, same body",
        p,
        Gate::AtMost(1.0),
    ));
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                black_box(S.scope(black_box(i), || S.with_top(|v| *v)));
            }
        },
        |n| {
            for i in 0..n {
                black_box(SCOPED.set(&black_box(i), || SCOPED.with(|v| *v)));
            }
        },
    );
    rows.push(row(
        "scope(value, f) + read, inlined",
        o,
        "scoped-tls set + with",
        p,
        Gate::None,
    ));
    let (o2, p2) = pair(
        |n| {
            for i in 0..n {
                black_box(S.scope(black_box(i), || S.with_top(|v| *v)));
            }
        },
        |n| {
            for i in 0..n {
                black_box(TASK.sync_scope(black_box(i), || TASK.with(|v| *v)));
            }
        },
    );
    rows.push(row(
        "scope(value, f) + read",
        o2,
        "tokio task_local! sync_scope + with",
        p2,
        Gate::None,
    ));
    // What the gate asks of any by-value stack: std's own thread-local stack doing the same.
    let (c, p3) = pair(
        |n| {
            for i in 0..n {
                STD_VEC.with_borrow_mut(|v| v.push(black_box(i)));
                black_box(STD_VEC.with_borrow(|v| v.last().copied()));
                black_box(STD_VEC.with_borrow_mut(Vec::pop));
            }
        },
        |n| {
            for i in 0..n {
                black_box(SCOPED.set(&black_box(i), || SCOPED.with(|v| *v)));
            }
        },
    );
    rows.push(row(
        "(control) std RefCell<Vec> push + top + pop",
        c,
        "scoped-tls set + with",
        p3,
        Gate::None,
    ));
    // 40,000 guards dropped oldest-first must cost what newest-first costs: O(n), not O(n²).
    let round = |oldest_first: bool| {
        let mut gs: Vec<_> = (0..40_000u64).map(|i| S.enter(i)).collect();
        if !oldest_first {
            gs.reverse();
        }
        let t = Instant::now();
        drop(black_box(gs)); // a Vec drops its elements first to last
        t.elapsed().as_nanos() as f64 / 40_000.0
    };
    let (mut oldest, mut newest) = (Vec::new(), Vec::new());
    for _ in 0..11 {
        oldest.push(round(true));
        newest.push(round(false));
    }
    rows.push(row(
        "drop 40k StackGuards oldest-first (per guard)",
        median(oldest),
        "newest-first",
        median(newest),
        Gate::AtMost(2.0),
    ));
    let dispatch = tracing_core::Dispatch::none();
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                drop(black_box(S.enter(black_box(i))));
            }
        },
        |n| {
            for _ in 0..n {
                drop(black_box(tracing_core::dispatcher::set_default(&dispatch)));
            }
        },
    );
    rows.push(row(
        "enter + drop of a StackGuard",
        o,
        "tracing-core set_default + drop",
        p,
        Gate::None,
    ));
}

fn contexts(rows: &mut Vec<Row>) {
    let ctx = Context::new();
    let (o, _) = pair(
        |n| {
            for _ in 0..n {
                drop(black_box(ctx.enter()));
            }
        },
        |_| {},
    );
    rows.push(Row {
        op: "Context::enter + drop (switch context)".into(),
        ours: o,
        peer: None,
        gate: Gate::None,
        unit: "ns",
    });
    leave(rows);
    contexts_iteration(rows);
}

/// Leaving a context must not scan what it holds: 64 values bound cost what none do.
fn leave(rows: &mut Vec<Row>) {
    static RUN_MANY: [Local<u64>; 64] = [const { Local::new() }; 64];
    let (empty, full) = (Context::new(), Context::new());
    full.run(|| RUN_MANY.iter().for_each(|l| l.set(1)));
    let (o, p) = pair(
        |n| {
            for _ in 0..n {
                full.run(|| black_box(()));
            }
        },
        |n| {
            for _ in 0..n {
                empty.run(|| black_box(()));
            }
        },
    );
    rows.push(row(
        "Context::run, context holding 64 values",
        o,
        "the same, context holding none",
        p,
        Gate::AtMost(1.1),
    ));
}

fn contexts_iteration(rows: &mut Vec<Row>) {
    for count in [1usize, 16, 256] {
        let local: Local<u64> = Local::named("ITER");
        let ctxs: Vec<Context> = (0..count).map(|_| Context::new()).collect();
        for (i, c) in ctxs.iter().enumerate() {
            c.run(|| local.set(i as u64));
        }
        let naive: Mutex<HashMap<usize, u64>> =
            Mutex::new((0..count).map(|i| (i, i as u64)).collect());
        let (o, p) = pair(
            |n| {
                for _ in 0..n {
                    let mut sum = 0;
                    local.for_each(|_, v| sum += *v);
                    black_box(sum);
                }
            },
            |n| {
                for _ in 0..n {
                    black_box(naive.lock().unwrap().values().sum::<u64>());
                }
            },
        );
        rows.push(row(
            &format!("for_each over {count} contexts (per call)"),
            o,
            "naive Mutex<HashMap> values().sum()",
            p,
            Gate::None,
        ));
    }
    // A burst of contexts that are gone again must not slow iteration down for good.
    let local: Local<u64> = Local::named("BURST");
    let one = Context::new();
    one.run(|| local.set(1));
    let iterate = |n: u64| {
        for _ in 0..n {
            let mut sum = 0;
            local.for_each(|_, v| sum += *v);
            black_box(sum);
        }
    };
    let (before, _) = pair(iterate, |_| {});
    let burst: Vec<Context> = (0..200_000).map(|_| Context::new()).collect();
    drop(burst);
    let (after, _) = pair(iterate, |_| {});
    rows.push(row(
        "for_each over 1 context after a burst of 200k",
        after,
        "the same before the burst",
        before,
        Gate::AtMost(1.5),
    ));
    let (o, p) = pair(
        |n| {
            for i in 0..n {
                thread::spawn(move || L.set(black_box(i))).join().unwrap();
            }
        },
        |n| {
            for i in 0..n {
                thread::spawn(move || STD_REFCELL.with_borrow_mut(|v| *v = black_box(i)))
                    .join()
                    .unwrap();
            }
        },
    );
    rows.push(row(
        "spawn + first set in a new thread + exit",
        o,
        "std thread_local! RefCell set",
        p,
        Gate::None,
    ));
}

fn memory(rows: &mut Vec<Row>) {
    // Allocations per push/pop cycle, after the first.
    S.push(0);
    S.pop();
    let before = CountingAlloc::allocations();
    ours_push_pop(1_000_000);
    let per_cycle = (CountingAlloc::allocations() - before) as f64 / 1e6;
    rows.push(Row {
        op: "heap allocations per push + pop cycle".into(),
        ours: per_cycle,
        peer: None,
        gate: Gate::None,
        unit: "",
    });
    // Bytes per (context, local) pair and per context, measured in a fresh thread.
    let locals: Vec<Local<u64>> = (0..100).map(|_| Local::new()).collect();
    for l in &locals {
        l.set(0); // indices assigned here, not in the measured thread
    }
    let (ctx_bytes, pair_bytes) = thread::scope(|s| {
        s.spawn(|| {
            let b0 = CountingAlloc::bytes();
            locals[0].set(1);
            let b1 = CountingAlloc::bytes();
            for l in &locals[1..] {
                l.set(1);
            }
            let b2 = CountingAlloc::bytes();
            (b1 - b0, (b2 - b1) as f64 / 99.0)
        })
        .join()
        .unwrap()
    });
    rows.push(Row {
        op: "bytes per (context, Local<u64>) pair".into(),
        ours: pair_bytes,
        peer: None,
        gate: Gate::None,
        unit: "B",
    });
    rows.push(Row {
        op: "bytes for a context's first local (context + slot)".into(),
        ours: ctx_bytes as f64,
        peer: None,
        gate: Gate::None,
        unit: "B",
    });
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` builds and lists benches; nothing to run then
    }
    // `cargo bench --bench compare -- NAME...` runs only the named sections.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    type Section = fn(&mut Vec<Row>);
    // Single rows of the gates, for measuring one change: `read`, `leave`, `capture`,
    // `explicit`.
    let sections: [(&str, Section); 16] = [
        ("hot_paths", hot_paths),
        ("read", read_rows),
        ("scaling", scaling),
        ("scopes", scopes),
        ("contexts", contexts),
        ("iteration", iteration::iteration),
        ("tasks", tasks::tasks),
        ("inherit", inherit::inherit),
        ("baggage", baggage::baggage),
        ("edges", edges::edges),
        ("tracing", tracing::tracing),
        ("memory", memory),
        ("footprint", footprint::footprint),
        ("leave", leave),
        ("capture", inherit::capture),
        ("explicit", explicit_only_rows),
    ];
    let mut rows = Vec::new();
    let extra = ["read", "leave", "capture", "explicit"]; // parts of the sections above
    for (name, section) in sections {
        let all = only.is_empty() && !extra.contains(&name);
        if all || only.iter().any(|o| o == name) {
            section(&mut rows);
        }
    }
    println!(
        "context-local benchmarks: {} cores, asymmetric fence (membarrier): {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        context_local::__diagnostics::uses_asymmetric_fence()
    );
    println!("medians of {SAMPLES} alternating samples of ~2 ms each; ratio = ours / peer\n");
    header();
    for r in &rows {
        r.print();
    }
}
