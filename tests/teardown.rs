//! Teardown and re-entrancy: what a value's `Drop` sees when its context is dropped or its
//! thread exits, initializers that use their own local, chains of `Drop`-time re-binds, and
//! `LocalManager::cleanup` against values whose `Drop` binds managed locals again.
//!
//! Every test names the fault it reproduces:
//! - Fault 4: a dropped context's values are dropped with that context current, in reverse
//!   order of each local's first binding there (also at thread exit).
//! - Fault 5: re-entrant initializers and re-binding during teardown and cleanup.

mod common;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread;
use std::time::Duration;

use common::{
    expect_panic, keep, no_panic, run_child, tail, within, Counted, Log, Probe, Sees, Tally,
};
use context_local::{
    Context, ContextGuard, ContextId, Local, LocalManager, LocalStack, Release, Snapshot,
};

const CHILD_ENV: &str = "CONTEXT_LOCAL_TEARDOWN_CHILD";

/// A probe that, when dropped, logs `label` and what `look` sees then.
fn watcher(t: &Tally, log: &Log, label: &'static str, n: u64, look: fn() -> String) -> Probe {
    let log = log.clone();
    Probe::new(t, n, move || log.push(format!("{label}: {}", look())))
}

/// The current context's value of `l`, as `n` of its probe, without panicking.
fn peek(l: &'static Local<Probe>) -> Option<u64> {
    l.try_with(|p| p.n).ok()
}

// ---------------------------------------------------------------------------------------------
// Fault 4: a dropped context's values are dropped with that context current.

/// Fault 4: a value dropped with its explicit context sees that context's id as current, and
/// after the drop the dropping thread is back in its own context.
#[test]
fn a_value_dropped_with_its_context_sees_that_context_current() {
    static L: Local<Probe> = Local::named("F4_ID");
    within(60, || {
        let t = Tally::new();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let home = ContextId::current();
        let ctx = Context::new();
        let id = ctx.id();
        let s = seen.clone();
        ctx.run(|| {
            L.set(Probe::new(&t, 1, move || {
                s.lock().unwrap().push(ContextId::try_current())
            }))
        });
        drop(ctx);
        assert_eq!(
            *seen.lock().unwrap(),
            [Some(id)],
            "the Drop saw the dropped context"
        );
        assert_eq!(ContextId::current(), home);
        assert_eq!(t.live(), 0);
        assert_eq!(L.contexts(), 0);
    });
}

/// Fault 4: a value dropped with its context reads the dropped context's value of another
/// local (bound before it), not the dropping thread's.
#[test]
fn a_value_dropped_with_its_context_reads_that_contexts_other_locals() {
    static A: Local<Probe> = Local::named("F4_READ_A");
    static B: Local<Probe> = Local::named("F4_READ_B");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        A.set(Probe::plain(&t, 100));
        let ctx = Context::new();
        ctx.run(|| {
            A.set(Probe::plain(&t, 1));
            B.set(watcher(&t, &log, "B", 2, || format!("A={:?}", peek(&A))));
        });
        drop(ctx);
        assert_eq!(log.entries(), ["B: A=Some(1)"]);
        assert_eq!(peek(&A), Some(100), "the dropper's own value is untouched");
        A.release();
        assert_eq!(t.live(), 0);
        assert_eq!((A.contexts(), B.contexts()), (0, 0));
    });
}

/// Fault 4: a value's `Drop` that binds a local (and pushes onto a stack) while its context is
/// dropped writes into the dropped context, whose new values are dropped too; the dropping
/// thread's own values are unchanged.
#[test]
fn a_value_dropped_with_its_context_writes_into_that_context() {
    static TRIGGER: Local<Probe> = Local::named("F4_WRITE_TRIGGER");
    static W: Local<Probe> = Local::named("F4_WRITE_W");
    static S: LocalStack<Probe> = LocalStack::named("F4_WRITE_S");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        W.set(Probe::plain(&t, 100));
        S.push(Probe::plain(&t, 200));
        let home = ContextId::current();
        let ctx = Context::new();
        let id = ctx.id();
        let (t2, log2) = (t.clone(), log.clone());
        ctx.run(|| {
            TRIGGER.set(Probe::new(&t, 1, move || {
                W.set(Probe::new(&t2, 7, {
                    let log = log2.clone();
                    move || log.push(format!("W7 dropped in {:?}", ContextId::try_current()))
                }));
                S.push(Probe::new(&t2, 8, move || {
                    log2.push(format!("S8 dropped in {:?}", ContextId::try_current()))
                }));
            }))
        });
        no_panic("dropping the context", move || drop(ctx));
        let mut entries = log.entries();
        entries.sort();
        assert_eq!(
            entries,
            [
                format!("S8 dropped in {:?}", Some(id)),
                format!("W7 dropped in {:?}", Some(id)),
            ],
            "values bound by a Drop during teardown go with the dropped context"
        );
        assert_eq!(ContextId::current(), home);
        assert_eq!(peek(&W), Some(100), "the dropper's own W is untouched");
        assert_eq!((S.len(), S.with_top(|p| p.n)), (1, Some(200)));
        W.release();
        S.release();
        assert_eq!(t.live(), 0);
        assert_eq!((TRIGGER.contexts(), W.contexts(), S.contexts()), (0, 0, 0));
    });
}

/// Fault 4 (order): values are dropped in reverse order of each local's first binding in the
/// context: the later-bound value's `Drop` still sees the earlier one, not the other way round.
/// Two contexts bind the same two locals in opposite orders, so one of them disagrees with any
/// fixed (e.g. index) order; a third binds a stack first.
#[test]
fn context_values_are_dropped_in_reverse_order_of_first_binding() {
    static P: Local<Probe> = Local::named("F4_ORDER_P");
    static Q: Local<Probe> = Local::named("F4_ORDER_Q");
    static S: LocalStack<Probe> = LocalStack::named("F4_ORDER_S");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        // The dropping thread's values, which no Drop below may see.
        P.set(Probe::plain(&t, 100));
        Q.set(Probe::plain(&t, 200));
        S.push(Probe::plain(&t, 300));
        let see_q = || format!("Q={:?}", peek(&Q));
        let see_p = || format!("P={:?}", peek(&P));
        let see_p_and_s = || format!("P={:?} S={}", peek(&P), S.len());

        let x = Context::new();
        x.run(|| {
            P.set(watcher(&t, &log, "x.P", 1, see_q));
            Q.set(watcher(&t, &log, "x.Q", 2, see_p));
        });
        drop(x);
        assert_eq!(log.entries(), ["x.Q: P=Some(1)", "x.P: Q=None"]);

        let log = Log::new();
        let y = Context::new();
        y.run(|| {
            Q.set(watcher(&t, &log, "y.Q", 2, see_p));
            P.set(watcher(&t, &log, "y.P", 1, see_q));
        });
        drop(y);
        assert_eq!(log.entries(), ["y.P: Q=Some(2)", "y.Q: P=None"]);

        let log = Log::new();
        let z = Context::new();
        z.run(|| {
            S.push(Probe::plain(&t, 3));
            S.push(watcher(&t, &log, "z.S", 4, see_p));
            P.set(watcher(&t, &log, "z.P", 1, see_p_and_s));
        });
        drop(z);
        assert_eq!(log.entries(), ["z.P: P=None S=2", "z.S: P=None"]);

        assert_eq!((peek(&P), peek(&Q), S.len()), (Some(100), Some(200), 1));
        P.release();
        Q.release();
        S.release();
        assert_eq!(t.live(), 0);
    });
}

/// Fault 4 (order, re-binding): releasing and re-binding a local does not move it: the order is
/// that of each local's FIRST binding in the context.
#[test]
fn rebinding_a_local_keeps_the_order_of_its_first_binding() {
    static P: Local<Probe> = Local::named("F4_REBIND_P");
    static Q: Local<Probe> = Local::named("F4_REBIND_Q");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        let ctx = Context::new();
        ctx.run(|| {
            P.set(Probe::plain(&t, 1));
            Q.set(watcher(&t, &log, "Q", 2, || format!("P={:?}", peek(&P))));
            P.release();
            P.set(watcher(&t, &log, "P", 3, || format!("Q={:?}", peek(&Q))));
        });
        drop(ctx);
        assert_eq!(log.entries(), ["Q: P=Some(3)", "P: Q=None"]);
        assert_eq!(t.live(), 0);
    });
}

/// Fault 4 (thread exit): a thread's own values are dropped at exit with its context current,
/// in reverse order of first binding, each `Drop` seeing the values bound before it. The two
/// locals get their storage in the order of binding, so ascending index order would be wrong.
#[test]
fn thread_exit_drops_values_in_the_threads_context_in_reverse_order_of_first_binding() {
    static FIRST: Local<Probe> = Local::named("F4_EXIT_FIRST");
    static SECOND: Local<Probe> = Local::named("F4_EXIT_SECOND");
    within(60, || {
        let t = Tally::new();
        // Storage (index) for FIRST before SECOND: teardown in index order would then drop
        // FIRST first, the opposite of what is asked for.
        FIRST.set(Probe::plain(&t, 0));
        SECOND.set(Probe::plain(&t, 0));
        FIRST.release();
        SECOND.release();
        let log = Log::new();
        let (t2, log2) = (t.clone(), log.clone());
        let id = thread::spawn(move || {
            let me = ContextId::current();
            let log = log2.clone();
            FIRST.set(Probe::new(&t2, 1, move || {
                log.push(format!(
                    "FIRST: own={} SECOND={:?}",
                    ContextId::try_current() == Some(me),
                    peek(&SECOND)
                ))
            }));
            SECOND.set(Probe::new(&t2, 2, move || {
                log2.push(format!(
                    "SECOND: own={} FIRST={:?}",
                    ContextId::try_current() == Some(me),
                    peek(&FIRST)
                ))
            }));
            me
        })
        .join()
        .unwrap();
        assert_ne!(id, ContextId::current());
        assert_eq!(
            log.entries(),
            [
                "SECOND: own=true FIRST=Some(1)",
                "FIRST: own=true SECOND=None"
            ]
        );
        assert_eq!(t.live(), 0);
        assert_eq!((FIRST.contexts(), SECOND.contexts()), (0, 0));
    });
}

/// Fault 4 (extra: a `Drop` in teardown that takes, replaces and binds values): the later-bound
/// value's `Drop` takes the earlier one (dropping it itself) and binds a replacement, whose own
/// `Drop` binds a third local; every value is dropped exactly once, all within the dropped
/// context, and the dropping thread's context stays empty.
#[test]
fn a_drop_in_teardown_may_take_replace_and_bind_values() {
    static A: Local<Probe> = Local::named("F4_TAKE_A");
    static B: Local<Probe> = Local::named("F4_TAKE_B");
    static C: Local<Probe> = Local::named("F4_TAKE_C");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        let ctx = Context::new();
        let id = format!("{:?}", Some(ctx.id()));
        let (t2, log2) = (t.clone(), log.clone());
        ctx.run(|| {
            A.set(Probe::plain(&t, 1));
            B.set(Probe::new(&t, 2, move || {
                log2.push(format!("B sees A={:?}", peek(&A)));
                drop(A.take());
                B.release(); // its own value is already on its way out: nothing to do
                let (t3, log3) = (t2.clone(), log2.clone());
                A.set(Probe::new(&t2, 3, move || {
                    log3.push(format!("A3 in {:?}", ContextId::try_current()));
                    let log4 = log3.clone();
                    C.set(Probe::new(&t3, 4, move || {
                        log4.push(format!(
                            "C4 in {:?}, B={:?}",
                            ContextId::try_current(),
                            peek(&B)
                        ))
                    }));
                }));
            }));
        });
        no_panic("dropping the context", move || drop(ctx));
        assert_eq!(
            log.entries(),
            [
                "B sees A=Some(1)".to_string(),
                format!("A3 in {id}"),
                format!("C4 in {id}, B=None"),
            ]
        );
        assert_eq!(t.created(), 4);
        assert_eq!(t.live(), 0);
        assert!(!A.is_set() && !B.is_set() && !C.is_set());
        assert_eq!((A.contexts(), B.contexts(), C.contexts()), (0, 0, 0));
    });
}

/// Fault 4 (extra: panicking `Drop` in teardown): the panic comes out of `drop(ctx)`, every
/// other value is still dropped with the dropped context current, and the dropping thread is
/// back in its own context with its own values.
#[test]
fn a_panicking_drop_in_context_teardown_restores_the_droppers_context() {
    static BOMB: Local<Probe> = Local::named("F4_BOMB");
    static SEE: Local<Probe> = Local::named("F4_BOMB_SEE");
    static MINE: Local<Probe> = Local::named("F4_BOMB_MINE");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        MINE.set(Probe::plain(&t, 100));
        let home = ContextId::current();
        let ctx = Context::new();
        let id = ctx.id();
        ctx.run(|| {
            SEE.set(watcher(&t, &log, "SEE", 1, || {
                format!("{:?} MINE={:?}", ContextId::try_current(), peek(&MINE))
            }));
            MINE.set(Probe::plain(&t, 2));
            BOMB.set(Probe::bomb(&t, 3));
        });
        assert_eq!(expect_panic(move || drop(ctx)), "bomb");
        assert_eq!(ContextId::current(), home, "back in the dropper's context");
        assert_eq!(peek(&MINE), Some(100));
        assert_eq!(log.entries(), [format!("SEE: {:?} MINE=None", Some(id))]);
        MINE.release();
        assert_eq!(t.live(), 0);
        assert_eq!(
            (BOMB.contexts(), SEE.contexts(), MINE.contexts()),
            (0, 0, 0)
        );
    });
}

/// Fault 4 (extra: nested teardown): a context holding another context as a value; dropping
/// the outer drops the inner with the inner current, then the outer's remaining values with
/// the outer current again; a `Drop` that runs a third context returns to the dying one.
#[test]
fn a_context_held_by_a_value_is_torn_down_nested() {
    static INNER: Local<Context> = Local::named("F4_NEST_INNER");
    static M: Local<Probe> = Local::named("F4_NEST_M");
    static L: Local<Probe> = Local::named("F4_NEST_L");
    static X: Local<Probe> = Local::named("F4_NEST_X");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        M.set(Probe::plain(&t, 100));
        let home = ContextId::current();
        let (outer, inner, third) = (Context::new(), Context::new(), Context::new());
        let ids = [outer.id(), inner.id()].map(|id| format!("{:?}", Some(id)));
        let look = || format!("{:?} M={:?}", ContextId::try_current(), peek(&M));
        inner.run(|| {
            M.set(Probe::plain(&t, 20));
            L.set(watcher(&t, &log, "inner.L", 21, look));
        });
        let third_ref: &'static Context = common::keep(third);
        let t2 = t.clone();
        let log2 = log.clone();
        outer.run(|| {
            M.set(Probe::plain(&t, 10));
            L.set(watcher(&t, &log, "outer.L", 11, look));
            X.set(Probe::new(&t, 12, move || {
                third_ref.run(|| X.set(Probe::plain(&t2, 30)));
                log2.push(format!("outer.X: {}", look()));
            }));
            INNER.set(inner);
        });
        no_panic("dropping the outer context", move || drop(outer));
        assert_eq!(
            log.entries(),
            [
                format!("inner.L: {} M=Some(20)", ids[1]),
                format!("outer.X: {} M=Some(10)", ids[0]),
                format!("outer.L: {} M=Some(10)", ids[0]),
            ]
        );
        assert_eq!(ContextId::current(), home);
        assert_eq!(peek(&M), Some(100));
        assert_eq!(third_ref.run(|| peek(&X)), Some(30), "third got its value");
        assert_eq!(peek(&X), None);
        third_ref.run(|| X.release());
        M.release();
        assert_eq!(t.live(), 0);
    });
}

/// Fault 4 (extra): a context dropped while another explicit context is current: its values
/// see it current, and afterwards the other context is current again with its values intact.
#[test]
fn a_context_dropped_inside_another_context() {
    static M: Local<Probe> = Local::named("F4_INSIDE_M");
    static L: Local<Probe> = Local::named("F4_INSIDE_L");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        let (a, b) = (Context::new(), Context::new());
        let b_id = b.id();
        b.run(|| {
            M.set(Probe::plain(&t, 2));
            L.set(watcher(&t, &log, "b.L", 3, || {
                format!("{:?} M={:?}", ContextId::try_current(), peek(&M))
            }));
        });
        a.run(|| {
            M.set(Probe::plain(&t, 1));
            no_panic("dropping b inside a", move || drop(b));
            assert_eq!(ContextId::current(), a.id());
            assert_eq!(peek(&M), Some(1));
            assert!(!L.is_set());
        });
        assert_eq!(log.entries(), [format!("b.L: {:?} M=Some(2)", Some(b_id))]);
        drop(a);
        assert_eq!(t.live(), 0);
    });
}

/// Fault 4 (thread exit, extra: nested teardown): a thread's own context holds an explicit
/// context as a value; at thread exit the held context is torn down with itself current, then
/// the thread's remaining values with the thread's own context current again; a `Drop` that
/// runs a third context there binds into that one and comes back.
#[test]
fn thread_exit_tears_down_a_context_held_by_a_value_nested() {
    static HELD: Local<Context> = Local::named("F4_EXIT_HELD");
    static M: Local<Probe> = Local::named("F4_EXIT_NEST_M");
    static L: Local<Probe> = Local::named("F4_EXIT_NEST_L");
    static X: Local<Probe> = Local::named("F4_EXIT_NEST_X");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        let third: &'static Context = common::keep(Context::new());
        let look = || format!("{:?} M={:?}", ContextId::try_current(), peek(&M));
        let (t2, log2) = (t.clone(), log.clone());
        let (own, held) = thread::spawn(move || {
            let own = ContextId::current();
            let held = Context::new();
            let held_id = held.id();
            held.run(|| {
                M.set(Probe::plain(&t2, 20));
                L.set(watcher(&t2, &log2, "held.L", 21, look));
            });
            M.set(Probe::plain(&t2, 10));
            L.set(watcher(&t2, &log2, "own.L", 11, look));
            let (t3, log3) = (t2.clone(), log2.clone());
            X.set(Probe::new(&t2, 12, move || {
                third.run(|| X.set(Probe::plain(&t3, 30)));
                log3.push(format!("own.X: {}", look()));
            }));
            HELD.set(held);
            (own, held_id)
        })
        .join()
        .unwrap();
        let (own, held) = (format!("{:?}", Some(own)), format!("{:?}", Some(held)));
        assert_eq!(
            log.entries(),
            [
                format!("held.L: {held} M=Some(20)"),
                format!("own.X: {own} M=Some(10)"),
                format!("own.L: {own} M=Some(10)"),
            ]
        );
        assert_eq!(
            third.run(|| peek(&X)),
            Some(30),
            "the third context got its value"
        );
        third.run(|| X.release());
        assert_eq!(t.live(), 0);
        assert_eq!((HELD.contexts(), M.contexts(), L.contexts()), (0, 0, 0));
    });
}

thread_local! {
    /// Registered before the crate's own thread-locals, so destroyed after its teardown.
    static EARLY_GUARD: RefCell<Option<ContextGuard<'static>>> = const { RefCell::new(None) };
}

/// The child half of
/// `thread_exit_tears_down_the_threads_own_context_while_a_user_guard_is_alive`.
#[test]
#[ignore = "run as a child process by thread_exit_tears_down_the_threads_own_context_while_a_user_guard_is_alive"]
fn child_thread_exit_with_a_user_guard_alive() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    static OWN: Local<Probe> = Local::named("F4_TLS_OWN");
    static M: Local<Probe> = Local::named("F4_TLS_M");
    let t = Tally::new();
    let log = Log::new();
    let foreign: &'static Context = common::keep(Context::new());
    let (t2, log2) = (t.clone(), log.clone());
    let own = thread::spawn(move || {
        EARLY_GUARD.with(|_| ());
        let me = ContextId::current();
        M.set(Probe::plain(&t2, 1));
        OWN.set(Probe::new(&t2, 2, move || {
            log2.push(format!(
                "own={} M={:?}",
                ContextId::try_current() == Some(me),
                peek(&M)
            ))
        }));
        EARLY_GUARD.with(|g| *g.borrow_mut() = Some(foreign.enter()));
        M.set(Probe::plain(&t2, 3)); // the foreign context's
        me
    })
    .join();
    println!("joined: {}", own.is_ok());
    println!("log: {:?}", log.entries());
    let entered = foreign.try_enter();
    println!("foreign enterable: {}", entered.is_ok());
    if let Ok(g) = entered {
        println!("foreign M: {:?}", peek(&M));
        M.release();
        drop(g);
    }
    println!("live: {}", t.live());
}

/// Fault 4 (thread exit) with Fault 2: a thread exits while a `ContextGuard` of another context
/// is still alive in a user thread-local destroyed after the crate's teardown. The thread's own
/// values are still dropped with its own context current, the process does not abort, and the
/// foreign context keeps its value and can be entered again.
#[test]
fn thread_exit_tears_down_the_threads_own_context_while_a_user_guard_is_alive() {
    let out = run_child("child_thread_exit_with_a_user_guard_alive", CHILD_ENV, 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in [
        "joined: true",
        r#"log: ["own=true M=Some(1)"]"#,
        "foreign enterable: true",
        "foreign M: Some(3)",
        "live: 0",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in:\n{stdout}");
    }
}

// ---------------------------------------------------------------------------------------------
// Fault 5: re-entrant initializers and re-binding during teardown and cleanup.

static REENTRANT: Local<u32> = Local::with_init("F5_REENTRANT_INIT", reentrant_init);

fn reentrant_init() -> u32 {
    REENTRANT.with(|v| *v + 1)
}

/// The child half of `an_init_that_uses_its_own_local_panics_naming_it`.
#[test]
#[ignore = "run as a child process by an_init_that_uses_its_own_local_panics_naming_it"]
fn child_reentrant_init() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let msg = expect_panic(|| REENTRANT.with(|v| *v));
    println!("caught: {msg}");
    println!("bound after: {}", REENTRANT.is_set());
    REENTRANT.set(5);
    println!("usable after: {}", REENTRANT.with(|v| *v));
}

/// Fault 5: `with` inside the local's own initializer panics with a message naming the local,
/// instead of recursing until the stack overflows; nothing is bound and the local stays usable.
#[test]
fn an_init_that_uses_its_own_local_panics_naming_it() {
    let out = run_child("child_reentrant_init", CHILD_ENV, 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child died ({}), e.g. of a stack overflow:\n{stdout}\n{}",
        out.status,
        tail(&stderr, 8)
    );
    let caught = stdout
        .lines()
        .find(|l| l.contains("caught: "))
        .unwrap_or_else(|| panic!("no caught panic:\n{stdout}"));
    assert!(caught.contains("F5_REENTRANT_INIT"), "{caught}");
    assert!(stdout.contains("bound after: false"), "{stdout}");
    assert!(stdout.contains("usable after: 5"), "{stdout}");
}

static TRY_REENTRANT: Local<u32> = Local::with_init("F5_TRY_REENTRANT", try_reentrant_init);
static TRY_REENTRANT_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn try_reentrant_init() -> u32 {
    match TRY_REENTRANT.try_with(|v| *v + 1) {
        Ok(v) => v,
        Err(e) => {
            TRY_REENTRANT_ERRORS.lock().unwrap().push(e.to_string());
            7
        }
    }
}

/// The child half of `try_with_inside_its_own_init_is_an_error_naming_the_local`.
#[test]
#[ignore = "run as a child process by try_with_inside_its_own_init_is_an_error_naming_the_local"]
fn child_try_reentrant_init() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let v = TRY_REENTRANT.with(|v| *v);
    println!("value: {v}");
    println!("errors: {:?}", TRY_REENTRANT_ERRORS.lock().unwrap());
}

/// Fault 5: `try_with` inside the local's own initializer returns an error whose message names
/// the local (instead of recursing until the stack overflows); the initializer's value is bound.
#[test]
fn try_with_inside_its_own_init_is_an_error_naming_the_local() {
    let out = run_child("child_try_reentrant_init", CHILD_ENV, 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child died ({}), e.g. of a stack overflow:\n{stdout}\n{}",
        out.status,
        tail(&stderr, 8)
    );
    assert!(stdout.contains("value: 7"), "{stdout}");
    let errors = stdout
        .lines()
        .find(|l| l.contains("errors: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(errors.matches("F5_TRY_REENTRANT").count(), 1, "{errors}");
}

static MUTUAL_A: Local<u32> = Local::with_init("F5_MUTUAL_A", mutual_a_init);
static MUTUAL_B: Local<u32> = Local::with_init("F5_MUTUAL_B", mutual_b_init);

fn mutual_a_init() -> u32 {
    MUTUAL_B.with(|b| *b + 1)
}

fn mutual_b_init() -> u32 {
    MUTUAL_A.with(|a| *a + 1)
}

/// The child half of `mutually_reentrant_initializers_panic_naming_the_reentered_local`.
#[test]
#[ignore = "run as a child process by mutually_reentrant_initializers_panic_naming_the_reentered_local"]
fn child_mutually_reentrant_init() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let msg = expect_panic(|| MUTUAL_A.with(|a| *a));
    println!("caught: {msg}");
    println!(
        "bound after: A={} B={}",
        MUTUAL_A.is_set(),
        MUTUAL_B.is_set()
    );
}

/// Fault 5 (extra: two initializers that use each other's local): A's init uses B, whose init
/// uses A again. The re-entered local is named in the panic instead of a stack overflow, and
/// nothing is bound afterwards.
#[test]
fn mutually_reentrant_initializers_panic_naming_the_reentered_local() {
    let out = run_child("child_mutually_reentrant_init", CHILD_ENV, 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child died ({}), e.g. of a stack overflow:\n{stdout}\n{}",
        out.status,
        tail(&stderr, 8)
    );
    let caught = stdout
        .lines()
        .find(|l| l.contains("caught: "))
        .unwrap_or_else(|| panic!("no caught panic:\n{stdout}"));
    assert!(caught.contains("F5_MUTUAL_A"), "{caught}");
    assert!(stdout.contains("bound after: A=false B=false"), "{stdout}");
}

static CROSS_CTX: LazyLock<Context> = LazyLock::new(Context::new);
static CROSS: Local<u64> = Local::with_init("F5_CROSS", cross_init);

/// 10 in `CROSS_CTX`; elsewhere one more than `CROSS_CTX`'s value, read through `CROSS` itself.
fn cross_init() -> u64 {
    if ContextId::current() == CROSS_CTX.id() {
        10
    } else {
        CROSS_CTX.run(|| CROSS.with(|v| *v)) + 1
    }
}

/// Fault 5 (extra: re-entrancy is per context): an initializer that uses its own local in
/// another context is not re-entrant: that context runs the initializer for itself.
#[test]
fn an_init_may_use_its_own_local_in_another_context() {
    within(60, || {
        let v = no_panic("CROSS.with", || CROSS.with(|v| *v));
        assert_eq!(v, 11);
        assert_eq!(CROSS_CTX.run(|| CROSS.get()), Some(10));
        assert!(CROSS.is_set());
        CROSS.release();
    });
}

static SELF_BINDING_TALLY: LazyLock<Tally> = LazyLock::new(Tally::new);
static SELF_BINDING: Local<Probe> = Local::with_init("F5_SELF_BINDING", self_binding_init);

/// Binds the local itself, then returns a value whose `Drop` releases the local.
fn self_binding_init() -> Probe {
    SELF_BINDING.set(Probe::plain(&SELF_BINDING_TALLY, 1));
    Probe::new(&SELF_BINDING_TALLY, 2, || SELF_BINDING.release())
}

/// Fault 5: an initializer that binds its local and returns a value whose `Drop` releases it:
/// `with(f)` still calls `f` with a bound value and returns `f`'s result; every value is
/// dropped exactly once.
#[test]
fn an_init_that_binds_its_local_and_returns_a_releasing_value_still_runs_f() {
    within(60, || {
        let t = &*SELF_BINDING_TALLY;
        let ctx = Context::new();
        let r = ctx.run(|| {
            no_panic("SELF_BINDING.with", || {
                SELF_BINDING.with(|p| {
                    assert!(p.n == 1 || p.n == 2, "{p:?}");
                    "f's result"
                })
            })
        });
        assert_eq!(r, "f's result");
        no_panic("dropping the context", move || drop(ctx));
        assert_eq!(t.created(), 2);
        assert_eq!(t.live(), 0);
        assert_eq!(SELF_BINDING.contexts(), 0);
    });
}

/// A value whose `Drop` binds a new one with `left - 1` through `rebind`, until 0.
struct Chain {
    left: u32,
    tally: Tally,
    rebind: fn(Chain),
    _counted: Counted,
}

impl Chain {
    fn new(t: &Tally, left: u32, rebind: fn(Chain)) -> Self {
        Self {
            left,
            tally: t.clone(),
            rebind,
            _counted: t.make(u64::from(left)),
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        if self.left > 0 {
            (self.rebind)(Chain::new(&self.tally, self.left - 1, self.rebind));
        }
    }
}

static EXIT_CHAIN: Local<Chain> = Local::named("F5_EXIT_CHAIN");
static EXIT_CHAIN_STACK: LocalStack<Chain> = LocalStack::named("F5_EXIT_CHAIN_STACK");

/// The child half of `a_chain_of_21_rebinds_at_thread_exit_completes`.
#[test]
#[ignore = "run as a child process by a_chain_of_21_rebinds_at_thread_exit_completes"]
fn child_chain_at_thread_exit() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let t = Tally::new();
    let t2 = t.clone();
    thread::spawn(move || EXIT_CHAIN.set(Chain::new(&t2, 21, |c| EXIT_CHAIN.set(c))))
        .join()
        .unwrap();
    println!("local: created {} live {}", t.created(), t.live());
    let t = Tally::new();
    let t2 = t.clone();
    thread::spawn(move || EXIT_CHAIN_STACK.push(Chain::new(&t2, 21, |c| EXIT_CHAIN_STACK.push(c))))
        .join()
        .unwrap();
    println!("stack: created {} live {}", t.created(), t.live());
}

/// Fault 5: a chain of 21 `Drop`-time re-binds at thread exit (a local, then a stack) runs to
/// the end: all 22 values are dropped and the process does not abort.
#[test]
fn a_chain_of_21_rebinds_at_thread_exit_completes() {
    let out = run_child("child_chain_at_thread_exit", CHILD_ENV, 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child died ({}):\n{stdout}\n{}",
        out.status,
        tail(&stderr, 8)
    );
    assert!(stdout.contains("local: created 22 live 0"), "{stdout}");
    assert!(stdout.contains("stack: created 22 live 0"), "{stdout}");
}

/// Fault 5: the same chain of 21 re-binds when an explicit context is dropped: all 22 values
/// are dropped, with the context, and none leaks into the dropping thread's context.
#[test]
fn a_chain_of_21_rebinds_in_context_drop_completes() {
    static CHAIN: Local<Chain> = Local::named("F5_CTX_CHAIN");
    static CHAIN_STACK: LocalStack<Chain> = LocalStack::named("F5_CTX_CHAIN_STACK");
    within(60, || {
        let t = Tally::new();
        let ctx = Context::new();
        ctx.run(|| {
            CHAIN.set(Chain::new(&t, 21, |c| CHAIN.set(c)));
            CHAIN_STACK.push(Chain::new(&t, 21, |c| CHAIN_STACK.push(c)));
        });
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(ctx)))
            .map_err(common::panic_message);
        // Whatever landed in this thread's own context is forgotten, not dropped: its chain
        // would otherwise go on at this thread's exit and could abort the whole test process.
        let leaked_local = CHAIN.take().map(|c| {
            let left = c.left;
            std::mem::forget(c);
            left
        });
        let mut leaked_stack = Vec::new();
        while let Some(c) = CHAIN_STACK.pop() {
            leaked_stack.push(c.left);
            std::mem::forget(c);
        }
        assert_eq!(dropped, Ok(()), "dropping the context");
        assert_eq!(
            leaked_local, None,
            "a re-bind landed in the dropping thread's context"
        );
        // (`len`: with actix-web in the dependency graph `Vec == []` no longer infers.)
        assert_eq!(
            leaked_stack.len(),
            0,
            "a push landed in the dropping thread's context"
        );
        assert_eq!(t.created(), 44);
        assert_eq!(t.live(), 0);
        assert_eq!((CHAIN.contexts(), CHAIN_STACK.contexts()), (0, 0));
    });
}

/// Fault 5: `LocalManager::cleanup` where B's value's `Drop` binds A (already released) and
/// A's value's `Drop` binds B again: after cleanup neither is bound, every value dropped once.
#[test]
fn manager_cleanup_leaves_nothing_bound_when_drops_bind_managed_locals() {
    static A: Local<Probe> = Local::named("F5_MANAGER_A");
    static B: Local<Probe> = Local::named("F5_MANAGER_B");
    within(60, || {
        let t = Tally::new();
        let manager = LocalManager::new([&A as &'static dyn Release, &B]);
        A.set(Probe::plain(&t, 1));
        let t2 = t.clone();
        B.set(Probe::new(&t, 2, move || {
            let t3 = t2.clone();
            A.set(Probe::new(&t2, 3, move || B.set(Probe::plain(&t3, 4))));
        }));
        no_panic("cleanup", || manager.cleanup());
        assert!(!A.is_set(), "A was bound again by B's Drop");
        assert!(!B.is_set(), "B was bound again by A's Drop");
        assert_eq!(t.created(), 4);
        assert_eq!(t.live(), 0);
    });
}

/// Fault 5: `LocalManager::cleanup` where A's value's `Drop` binds A again: after cleanup A is
/// not bound; every value dropped exactly once.
#[test]
fn manager_cleanup_leaves_nothing_bound_when_a_drop_rebinds_its_own_local() {
    static A: Local<Probe> = Local::named("F5_MANAGER_SELF");
    within(60, || {
        let t = Tally::new();
        let manager = LocalManager::new([&A as &'static dyn Release]);
        let t2 = t.clone();
        A.set(Probe::new(&t, 1, move || A.set(Probe::plain(&t2, 2))));
        no_panic("cleanup", || manager.cleanup());
        assert!(!A.is_set(), "A was bound again by its own value's Drop");
        assert_eq!(t.created(), 2);
        assert_eq!(t.live(), 0);
    });
}

/// Fault 5 (via `scope` and `guard`, in an explicit context, with a stack): the end-of-request
/// cleanup leaves no managed local bound even when a `Drop` binds one again.
#[test]
fn manager_scope_and_guard_leave_nothing_bound_when_a_drop_binds_again() {
    static A: Local<Probe> = Local::named("F5_SCOPE_A");
    static S: LocalStack<Probe> = LocalStack::named("F5_SCOPE_S");
    within(60, || {
        let t = Tally::new();
        let manager = LocalManager::new([&S as &'static dyn Release, &A]);
        let ctx = Context::new();
        ctx.run(|| {
            manager.scope(|| {
                let t2 = t.clone();
                S.push(Probe::plain(&t, 1));
                A.set(Probe::new(&t, 2, move || S.push(Probe::plain(&t2, 3))));
            });
            assert!(!A.is_set() && S.is_empty(), "after scope");
            {
                let _end = manager.guard();
                let t2 = t.clone();
                A.set(Probe::new(&t, 4, move || S.push(Probe::plain(&t2, 5))));
            }
            assert!(!A.is_set() && S.is_empty(), "after guard");
        });
        drop(ctx);
        assert_eq!(t.created(), 5);
        assert_eq!(t.live(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Teardown order and re-entrancy: initializers that bind or leave, frozen copies, readers.

static INIT_ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Noisy(&'static str, fn() -> bool);

impl Drop for Noisy {
    fn drop(&mut self) {
        let saw = (self.1)();
        INIT_ORDER
            .lock()
            .unwrap()
            .push(format!("{} (saw other: {saw})", self.0));
    }
}

static INIT_A: Local<Noisy> = Local::with_init("INIT_A", init_a);
static INIT_B: Local<Noisy> = Local::named("INIT_B");

fn init_a() -> Noisy {
    INIT_B.set(Noisy("B", || INIT_A.is_set()));
    Noisy("A", || INIT_B.is_set())
}

/// Regression: a `with_init` local's first binding was recorded when its slot was created, before
/// `init()` ran and bound another local, so teardown dropped the init's value last and its `Drop`
/// no longer saw what was bound before it (DESIGN.md: reverse order of first binding), fixed in
/// be68822: the value counts as bound after what its initializer bound.
#[test]
fn with_init_value_is_dropped_before_what_its_init_bound() {
    within(60, || {
        let ctx = Context::new();
        ctx.run(|| INIT_A.with(|_| ()));
        drop(ctx);
        assert_eq!(
            *INIT_ORDER.lock().unwrap(),
            ["A (saw other: true)", "B (saw other: false)"],
            "teardown order (A was bound after B)"
        );
    });
}

static TD_READER_IN: AtomicBool = AtomicBool::new(false);

/// Regression: teardown waited for a foreign `for_each` while holding the context's detach lock,
/// and a reader whose callback dropped a non-`static` local waited for that lock (a deadlock;
/// every later drop of a non-`static` local hung too), fixed in be68822: teardown waits for
/// readers outside the detach lock.
#[test]
fn teardown_and_a_reader_dropping_a_local_do_not_deadlock() {
    common::child_must_succeed(
        "child_teardown_and_a_reader_dropping_a_local",
        CHILD_ENV,
        30,
    );
}

#[test]
#[ignore = "run in a child process by teardown_and_a_reader_dropping_a_local_do_not_deadlock"]
fn child_teardown_and_a_reader_dropping_a_local() {
    static S: LocalStack<u32> = LocalStack::named("TD_READER");
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let other: Local<u32> = Local::named("TD_OTHER");
    other.set(1); // assigns its index
    let ctx = Context::new();
    ctx.run(|| S.push(1));
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut other = Some(other);
            S.for_each(|_, _| {
                if let Some(other) = other.take() {
                    TD_READER_IN.store(true, SeqCst);
                    // Give the teardown time to reach its wait for us.
                    std::thread::sleep(Duration::from_millis(300));
                    drop(other);
                }
            });
        });
        while !TD_READER_IN.load(SeqCst) {
            std::thread::yield_now();
        }
        drop(ctx); // teardown: waits for the reader while holding the detach lock
        reader.join().unwrap();
    });
}

thread_local! {
    static REBIND_ON_DROP: Cell<bool> = const { Cell::new(false) };
}

/// A value whose clones' `Drop` (when armed) binds `LATE_X` in the current context.
struct Rebinder(bool);

impl Clone for Rebinder {
    fn clone(&self) -> Self {
        Rebinder(true)
    }
}

impl Drop for Rebinder {
    fn drop(&mut self) {
        if self.0 && REBIND_ON_DROP.with(Cell::get) {
            LATE_X.set(Sees(LATE_SEEN.with(|s| s.clone())));
        }
    }
}

static LATE_X: Local<Sees> = Local::named("LATE_X");
static LATE_R: Local<Rebinder> = Local::named("LATE_R").inheritable();
thread_local! {
    static LATE_SEEN: Arc<Mutex<Option<context_local::ContextId>>> = Arc::default();
}

/// Regression: a value bound by the `Drop` of a frozen copy in the context's cached capture was
/// never dropped by the teardown (DESIGN.md: "A value bound by a `Drop` during teardown is dropped
/// too"), but later, by whichever thread let go of the context's storage, with another context
/// current; fixed in be68822: the cached capture is dropped inside the teardown's rounds.
#[test]
fn a_value_bound_by_a_frozen_copys_drop_is_dropped_in_its_context() {
    within(60, || {
        let home = context_local::ContextId::current(); // so that ids are not recycled below
        let ctx = Context::new();
        ctx.run(|| {
            LATE_R.set(Rebinder(false));
            drop(Snapshot::capture()); // the context's cache now holds a frozen copy
        });
        let id = ctx.id();
        REBIND_ON_DROP.with(|r| r.set(true));
        drop(ctx);
        REBIND_ON_DROP.with(|r| r.set(false));
        let seen = LATE_SEEN.with(|s| *s.lock().unwrap());
        assert_eq!(
            seen,
            Some(id),
            "the value bound by the frozen copy's Drop was dropped in {seen:?} (home: {home:?})"
        );
    });
}

static INIT_LEAVES: Local<u32> = Local::with_init("INIT_LEAVES", init_leaves);
thread_local! {
    static INIT_GUARD: RefCell<Option<ContextGuard<'static>>> = const { RefCell::new(None) };
}

fn init_leaves() -> u32 {
    drop(INIT_GUARD.with(|g| g.borrow_mut().take()));
    7
}

/// Regression, fixed in be68822: `Local::init_then` marked the slot of the context current before
/// `init()` but bound the value — and ran the user's closure — in whatever context was
/// current after it, and cleared `INIT` in a slot of a context this thread no longer held (a
/// plain store racing its next holder). Now a running initializer holds its context like a
/// borrow (a `ContextGuard` dropped inside it defers the release), and an initializer that
/// leaves its context is a panic naming the local: nothing is bound anywhere, and the context
/// can be entered again afterwards.
#[test]
fn an_initializer_that_leaves_its_context_is_an_error_naming_the_local() {
    within(60, || {
        let ctx: &'static Context = common::keep(Context::new());
        let home = Context::new();
        home.run(|| {
            let g = ctx.enter();
            INIT_GUARD.with(|s| *s.borrow_mut() = Some(g));
            let msg = expect_panic(|| INIT_LEAVES.with(|v| *v));
            assert!(
                msg.contains("`INIT_LEAVES`") && msg.contains("left the context"),
                "{msg}"
            );
            // The same panic points at the caller's line, not into the runtime.
            let g = ctx.enter();
            INIT_GUARD.with(|s| *s.borrow_mut() = Some(g));
            let at = common::panic_location(|| INIT_LEAVES.with(|v| *v));
            let caller = (file!().to_owned(), line!() - 1);
            assert_eq!(at, caller, "where the panic points");
            assert!(!INIT_LEAVES.is_set(), "nothing bound in home");
        });
        assert!(ctx.try_enter().is_ok(), "the context was released");
        assert!(!ctx.run(|| INIT_LEAVES.is_set()), "nothing bound in ctx");
    });
}

/// `Drop`s during a context's teardown that start a thread (with the context's
/// snapshot), create, fill and drop another context, capture and fork, and bind new values:
/// everything is dropped once, the new values with the context.
#[test]
fn teardown_drops_that_spawn_fork_and_bind() {
    static INH: Local<u32> = Local::named("TD_INH").inheritable();
    static HOOK: Local<Hook2> = Local::named("TD_HOOK");
    static LATE: Local<Counted> = Local::named("TD_LATE");
    struct Hook2(Tally, Arc<Mutex<Vec<String>>>);
    impl Drop for Hook2 {
        fn drop(&mut self) {
            let log = self.1.clone();
            let seen = context_local::thread::spawn(|| INH.get()).join().unwrap();
            log.lock().unwrap().push(format!("thread saw {seen:?}"));
            let fork = Snapshot::capture().fork();
            log.lock()
                .unwrap()
                .push(format!("fork saw {:?}", fork.run(|| INH.get())));
            let other = Context::new();
            other.run(|| LATE.set(self.0.make(2)));
            drop(other);
            LATE.set(self.0.make(3)); // bound in the dying context
        }
    }
    within(60, || {
        let t = Tally::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let ctx = Context::new();
        ctx.run(|| {
            INH.set(4);
            HOOK.set(Hook2(t.clone(), log.clone()));
        });
        drop(ctx);
        assert_eq!(t.live(), 0);
        assert_eq!(
            *log.lock().unwrap(),
            ["thread saw Some(4)", "fork saw Some(4)"],
        );
    });
}

static INIT_LEAVES_PANICS: Local<u32> = Local::with_init("INIT_LEAVES_PANICS", || {
    drop(INIT_GUARD.with(|g| g.borrow_mut().take()));
    panic!("initializer failed after leaving its context")
});

/// Regression: an initializer that dropped its context's guard and then panicked left the context
/// claimed forever, fixed in 08ce2e6.
///
/// The guard's release was deferred (a running initializer counts as a borrow); on unwind only the
/// initializer's mark was cleared, and the deferred release waited "for the slot's next use",
/// which never came. A fork's copy-on-write `Clone` that leaves and panics did the same:
/// `a_copy_on_write_clone_that_leaves_and_panics_releases_the_fork` (tests/inherit.rs).
#[test]
fn an_initializer_that_leaves_and_panics_releases_its_context() {
    within(60, || {
        let ctx: &'static Context = keep(Context::new());
        let home = Context::new();
        home.run(|| {
            let g = ctx.enter();
            INIT_GUARD.with(|s| *s.borrow_mut() = Some(g));
            let msg = expect_panic(|| INIT_LEAVES_PANICS.with(|v| *v));
            assert!(msg.contains("initializer failed"), "{msg}");
        });
        assert!(
            !ctx.is_entered(),
            "the context stays claimed after its guard was dropped"
        );
        assert!(
            ctx.try_enter().is_ok(),
            "the context cannot be entered again"
        );
    });
}
