//! `context_local::rayon`: every closure handed to an `in_child_contexts()` iterator runs in a
//! fork of the caller's snapshot — not only the per-item ones — and nothing stays in a pool
//! thread's own context (issue 17, fault 1).
//!
//! Each case runs "requests" 1..=8 one after another, each from its own context on the test
//! thread, so that the work runs on rayon's global pool. Every closure of the adaptor under
//! test (`init`, identities, combining ops, a `map_with` value's `Clone`) checks that it sees
//! its request's inheritable `TENANT` and no other request's `LEAK` (which every closure then
//! binds, as a careless callback would), and counts what it saw wrong; after all requests no
//! context may hold `LEAK`. Before the fix those closures ran in the pool thread's own
//! context: `TENANT` unbound, and `LEAK` left there for the next request.
#![cfg(feature = "rayon")]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use context_local::rayon::{install, ParallelIteratorExt};
use context_local::{Context, Local};
use rayon::prelude::*;

/// What the closures of one case saw.
struct Probe {
    tenant: &'static Local<u64>,
    leak: &'static Local<u64>,
    calls: AtomicUsize,
    wrong: AtomicUsize,
}

impl Probe {
    const fn new(tenant: &'static Local<u64>, leak: &'static Local<u64>) -> Self {
        Probe {
            tenant,
            leak,
            calls: AtomicUsize::new(0),
            wrong: AtomicUsize::new(0),
        }
    }

    /// Called from every closure of request `request`.
    fn touch(&self, request: u64) {
        self.calls.fetch_add(1, SeqCst);
        let leaked = self.leak.get().is_some_and(|other| other != request);
        if self.tenant.get() != Some(request) || leaked {
            self.wrong.fetch_add(1, SeqCst);
        }
        self.leak.set(request); // a callback's careless binding: must not outlive its fork
    }
}

/// A value whose `Clone` (run by rayon when it splits a `map_with` / `for_each_with` /
/// `fold_with`) is the caller's code too.
struct Cloned<'p> {
    probe: &'p Probe,
    request: u64,
}

impl Clone for Cloned<'_> {
    fn clone(&self) -> Self {
        self.probe.touch(self.request);
        Cloned { ..*self }
    }
}

/// Runs requests 1..=8, each `job(request)` in its own context, and returns (closures that saw
/// the wrong values, contexts left holding `LEAK`).
fn run_requests(probe: &'static Probe, job: impl Fn(u64)) -> (usize, usize) {
    for request in 1..=8u64 {
        Context::new().run(|| {
            probe.tenant.set(request);
            job(request);
        });
    }
    assert!(probe.calls.load(SeqCst) > 8, "the closures under test ran");
    (probe.wrong.load(SeqCst), probe.leak.contexts())
}

/// [`run_requests`], asserting that every closure ran in a fork of its request and that no
/// pool thread kept anything.
fn requests(probe: &'static Probe, job: impl Fn(u64)) {
    let (wrong, leaked) = run_requests(probe, job);
    assert_eq!(wrong, 0, "closures outside a fork of their request");
    assert_eq!(leaked, 0, "a pool thread kept what a closure bound");
    assert_eq!(probe.tenant.contexts(), 0);
}

macro_rules! case {
    ($name:ident, |$p:ident, $r:ident| $job:expr) => {
        #[test]
        fn $name() {
            static TENANT: Local<u64> = Local::named("TENANT").inheritable();
            static LEAK: Local<u64> = Local::named("LEAK");
            static PROBE: Probe = Probe::new(&TENANT, &LEAK);
            requests(&PROBE, |$r| {
                let $p = &PROBE;
                $job;
            });
        }
    };
}

/// Items per request: enough for the pool to split the work.
const N: u64 = 256;

case!(map_init_init, |p, r| {
    let n = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .map_init(|| p.touch(r), |_, i| i)
        .count();
    assert_eq!(n, N as usize);
});

case!(for_each_init_init, |p, r| {
    (0..N)
        .into_par_iter()
        .in_child_contexts()
        .for_each_init(|| p.touch(r), |_, _| {});
});

case!(try_for_each_init_init, |p, r| {
    let done: Result<(), ()> = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .try_for_each_init(|| p.touch(r), |_, _| Ok(()));
    assert!(done.is_ok());
});

case!(fold_identity_and_reduce_op, |p, r| {
    let sum = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .fold(
            || {
                p.touch(r);
                0
            },
            |a, i| a + i,
        )
        .reduce(
            || {
                p.touch(r);
                0
            },
            |a, b| {
                p.touch(r);
                a + b
            },
        );
    assert_eq!(sum, N * (N - 1) / 2);
});

case!(reduce_identity_and_op, |p, r| {
    let sum = (0..N).into_par_iter().in_child_contexts().reduce(
        || {
            p.touch(r);
            0
        },
        |a, b| {
            p.touch(r);
            a + b
        },
    );
    assert_eq!(sum, N * (N - 1) / 2);
});

case!(reduce_with_op, |p, r| {
    let sum = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .reduce_with(|a, b| {
            p.touch(r);
            a + b
        });
    assert_eq!(sum, Some(N * (N - 1) / 2));
});

case!(try_fold_and_try_reduce, |p, r| {
    let sum: Result<u64, ()> = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .try_fold(
            || {
                p.touch(r);
                0
            },
            |a, i| Ok(a + i),
        )
        .try_reduce(
            || {
                p.touch(r);
                0
            },
            |a, b| {
                p.touch(r);
                Ok(a + b)
            },
        );
    assert_eq!(sum, Ok(N * (N - 1) / 2));
});

case!(map_with_clone, |p, r| {
    let n = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .map_with(
            Cloned {
                probe: p,
                request: r,
            },
            |_, i| i,
        )
        .count();
    assert_eq!(n, N as usize);
});

case!(for_each_with_clone, |p, r| {
    (0..N).into_par_iter().in_child_contexts().for_each_with(
        Cloned {
            probe: p,
            request: r,
        },
        |_, _| {},
    );
});

case!(fold_with_clone, |p, r| {
    let n: usize = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .fold_with(
            Cloned {
                probe: p,
                request: r,
            },
            |c, _| c,
        )
        .map(|_| 1)
        .sum();
    assert!(n >= 1);
});

// Per-item closures (covered before the fix too), with the same probe: the control that the
// harness sees a closure run in the right fork.
case!(map_items, |p, r| {
    let n = (0..N)
        .into_par_iter()
        .in_child_contexts()
        .map(|i| {
            p.touch(r);
            i
        })
        .count();
    assert_eq!(n, N as usize);
});

/// The control: the same `map_init` without `in_child_contexts` runs `init` in the pool
/// threads' own contexts — it misses the request's value, and what it binds stays there.
#[test]
fn control_without_the_adaptor_leaks() {
    static TENANT: Local<u64> = Local::named("TENANT").inheritable();
    static LEAK: Local<u64> = Local::named("LEAK");
    static PROBE: Probe = Probe::new(&TENANT, &LEAK);
    let (wrong, leaked) = run_requests(&PROBE, |r| {
        (0..N)
            .into_par_iter()
            .map_init(|| PROBE.touch(r), |_, i| i)
            .count();
    });
    assert!(wrong > 0);
    assert!(leaked > 0, "the pool threads kept LEAK");
}

/// Inside a pool of one's own, through [`install`]: the same guarantees.
#[test]
fn through_install() {
    static TENANT: Local<u64> = Local::named("TENANT").inheritable();
    static LEAK: Local<u64> = Local::named("LEAK");
    static PROBE: Probe = Probe::new(&TENANT, &LEAK);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    requests(&PROBE, |r| {
        install(&pool, || {
            (0..N)
                .into_par_iter()
                .in_child_contexts()
                .fold(|| PROBE.touch(r), |(), _| ())
                .reduce(|| PROBE.touch(r), |(), ()| PROBE.touch(r));
        })
    });
}
