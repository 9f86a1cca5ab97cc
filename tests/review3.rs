//! Review 3: adversarial tests of the `for_each` protocol redesign (commit 42fd2b2 and after):
//! fresh slots for `set`/`release` under readers ("relocate"), retired slots and their sweep.
//!
//! Every test that could hang runs under `within`.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{within, Log, Probe, Tally};
use context_local::{Context, ContextId, Local, LocalStack};

/// A reader thread parked inside a `for_each` callback (on one context's value) until told to
/// go on. The callback is given by the test; it calls `park()` where it wants to wait.
struct Parked {
    go: mpsc::Sender<()>,
    join: thread::JoinHandle<()>,
}

impl Parked {
    /// Spawns `body(park)`, and returns once `park` has been called (the reader is inside its
    /// callback). `park` waits at most 5 s for `finish`.
    fn start(body: impl FnOnce(&mut dyn FnMut()) + Send + 'static) -> Self {
        let (in_tx, in_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let join = thread::spawn(move || {
            let _ = ContextId::current(); // own context first
            let mut parked = false;
            let mut park = || {
                if parked {
                    return;
                }
                parked = true;
                in_tx.send(()).unwrap();
                let _ = go_rx.recv_timeout(Duration::from_secs(5));
            };
            body(&mut park);
        });
        in_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the reader never reached its callback");
        Parked { go: go_tx, join }
    }

    fn finish(self) {
        let _ = self.go.send(());
        self.join.join().expect("the reader panicked");
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 1: guard / scope removals address a relocated stack's *new* slot by an id of the old.
// ---------------------------------------------------------------------------------------------

static S1: LocalStack<u32> = LocalStack::named("S1");

/// **Wrong value removed.** A `StackGuard`'s value is identified by a sequence number that is
/// unique only within one *slot* (`StackStore::next_seq`, `runtime/src/stack.rs:29`). Since
/// 42fd2b2, `LocalStack::release` under a foreign reader moves the stack to a fresh slot
/// (`Storage::relocate`, `runtime/src/storage/mod.rs` ~l.455) built from `V::empty()`, whose
/// numbering restarts at 0. A guard of the old slot that is later removed *through the table*
/// — `StackGuard::drop_elsewhere` (`stack.rs:775`, `slot_in` = the table's slot),
/// `defer_removal`/`apply_removals` (by `(index, id)`), `LocalStack::remove_scoped`
/// (`scope_future`) — then removes whatever element of the new slot got the same number.
///
/// Here: guard `g` pushes 1 (id 0) in context `c`; a reader sits on `c`'s stack; `release()`
/// moves the stack to a fresh slot; `g2` pushes 2 there (id 0 again). `c` is left, then `g`
/// is dropped: its removal claims `c` and removes id 0 from the *new* slot — the 2 that `g2`
/// still guards. Expected: `c` still has `[2]` (1 was released already).
///
/// Fix: keep sequence numbers unique per (context, local) across slots — e.g. a `Payload`
/// hook used by `relocate`/`spare` that carries `next_seq` over (`max` of old and spare), or
/// a per-context counter — or have removals check the slot they were pushed into.
#[test]
fn guard_dropped_elsewhere_after_release_under_a_reader_removes_only_its_own_value() {
    within(20, || {
        let c = Context::new();
        let cid = c.id();
        let entered = c.enter();
        let g = S1.enter(1);
        let reader = Parked::start(move |park| {
            S1.for_each(|id, _| {
                if id == cid {
                    park();
                }
            })
        });
        S1.release(); // the reader is on the slot: the stack moves to a fresh one
        reader.finish();
        let g2 = S1.enter(2);
        drop(entered);
        drop(g); // not current: removed through a claim on `c`
        let seen = c.run(|| S1.for_each_here());
        drop(g2);
        assert_eq!(seen, vec![2], "g's drop removed g2's value");
    });
}

/// The same root cause through `scope_future`: its end-of-poll removal (`remove_scoped`,
/// `stack.rs:524`) looks the id up in the table's slot. A future whose poll releases the
/// stack under a reader and then enters a guard gets that guard's element taken out at the
/// end of the poll (and re-pushed as "its" value at the next poll).
#[test]
fn scope_future_after_release_under_a_reader_removes_only_its_own_value() {
    static S2: LocalStack<u32> = LocalStack::named("S2");
    within(20, || {
        let c = Context::new();
        let cid = c.id();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fut = {
            let seen = seen.clone();
            S2.scope_future(1, async move {
                let reader = Parked::start(move |park| {
                    S2.for_each(|id, _| {
                        if id == cid {
                            park();
                        }
                    })
                });
                S2.release();
                reader.finish();
                // A numbered element in the fresh slot (id 0 there), guarded across the end of
                // the poll: leak the guard so it is never removed by the guard itself.
                std::mem::forget(S2.enter(2));
                seen.lock().unwrap().push(S2.for_each_here());
            })
        };
        c.run(|| block_on(fut));
        let after = c.run(|| S2.for_each_here());
        assert_eq!(
            after,
            vec![2],
            "the scope's end-of-poll removal took a value that was not its own (inside: {:?})",
            seen.lock().unwrap()
        );
    });
}

/// A guard dropped inside its stack's own `for_each` (this thread iterating) defers its
/// removal by `(index, id)`; the deferred removal then hits the fresh slot's element.
#[test]
fn deferred_guard_removal_after_release_under_a_reader_removes_only_its_own_value() {
    static S3: LocalStack<u32> = LocalStack::named("S3");
    within(20, || {
        let me = ContextId::current();
        let g = S3.enter(1);
        let reader = Parked::start(move |park| {
            S3.for_each(|id, _| {
                if id == me {
                    park();
                }
            })
        });
        S3.release();
        reader.finish();
        let g2 = S3.enter(2); // id 0 in the fresh slot
        let mut g = Some(g);
        S3.for_each(|_, _| drop(g.take())); // iterating: the removal of id 0 is queued
        let seen = S3.for_each_here();
        drop(g2);
        assert_eq!(seen, vec![2], "g's deferred removal removed g2's value");
    });
}

// ---------------------------------------------------------------------------------------------
// Finding 2: a retired slot is marked swept although its value is still in it.
// ---------------------------------------------------------------------------------------------

/// **Value dropped outside its context / out of teardown.** `CtxInner::sweep_retired`
/// (`runtime/src/context/inner.rs:160`) takes each retired slot's values with `take_impl`,
/// and marks the slot `swept` on any `Taken::Values(_)`. But `take_impl`
/// (`runtime/src/storage/slot.rs:472`) also returns `Taken::Values(None)` — values left in
/// place — when `begin_write(.., Mode::Try)` refuses because *this thread iterates the local*
/// (`Contended::Iterating`, borrow.rs:127) while some reader marks the retired slot. The
/// value then stays in a slot flagged swept: teardown's `take_retired` skips it, and it is
/// dropped only by `Drop for CtxInner` (the final free), i.e. after the teardown, with
/// another context current (or on whichever thread drops the last `Arc`), out of order.
///
/// Here: in context `c`, `L` holds P1. A reader R, inside `L.for_each` on `c`'s P1, nests a
/// `M.for_each` and parks on `c`'s `M`. `L.set(P2)` retires P1's slot (R marks it). Then,
/// inside `L.for_each` on this thread, `M.set(..)` relocates `M` (R marks it) and sweeps
/// the retired slots: P1's is refused as "Iterating" but flagged swept. After R leaves,
/// `drop(c)` must drop P1 with `c` current.
///
/// Fix: distinguish "cannot take now" from "took nothing" — e.g. `Taken::Busy` for the
/// `Iterating`/borrowed cases (teardown's `take_slot` keeps its current handling of it), and
/// have `sweep_retired` leave such a slot unswept.
#[test]
fn a_retired_value_refused_to_a_sweep_inside_for_each_is_still_dropped_by_its_context() {
    static K: Local<u32> = Local::named("K");
    static L: Local<Probe> = Local::named("L");
    static M: Local<u32> = Local::named("M");
    within(20, || {
        let t = Tally::new();
        let log = Log::new();
        let c = Context::new();
        let cid = c.id();
        let p1 = {
            let log = log.clone();
            Probe::new(&t, 1, move || {
                log.push(format!(
                    "P1 dropped in {:?}, K bound: {}",
                    ContextId::current(),
                    K.is_set()
                ));
            })
        };
        c.run(|| {
            K.set(7); // bound before L: still bound while L's values are dropped
            L.set(p1);
            M.set(0);
        });
        let reader = Parked::start(move |park| {
            L.for_each(|id, _| {
                if id == cid {
                    M.for_each(|id2, _| {
                        if id2 == cid {
                            park();
                        }
                    });
                }
            })
        });
        c.run(|| {
            L.set(Probe::plain(&t, 2)); // P1's slot retired (R marks it)
            let mut once = true;
            L.for_each(|_, _| {
                if std::mem::take(&mut once) {
                    M.set(1); // relocates M (R marks it) and sweeps L's retired slot
                }
            });
        });
        reader.finish();
        log.push("drop(c) starts");
        drop(c);
        log.push("drop(c) ended");
        assert_eq!(
            log.entries(),
            vec![
                "drop(c) starts".to_string(),
                format!("P1 dropped in {cid:?}, K bound: true"),
                "drop(c) ended".to_string(),
            ],
            "P1 was not dropped by its context's teardown"
        );
        assert_eq!(t.live(), 0, "a value was never dropped");
    });
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

trait Here {
    fn for_each_here(&self) -> Vec<u32>;
}

impl Here for LocalStack<u32> {
    /// The current context's stack, bottom first.
    fn for_each_here(&self) -> Vec<u32> {
        let me = ContextId::current();
        let mut out = Vec::new();
        self.for_each(|id, items| {
            if id == me {
                out = items.to_vec();
            }
        });
        out
    }
}

/// A minimal executor: polls `fut` to completion on this thread.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context as TaskCx, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = TaskCx::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::yield_now();
    }
}

/// Finding 2, worse: the same stale "swept" slot, with another thread iterating `L` (busy on
/// another context's value) while `c` is dropped. That reader's registry snapshot holds the
/// last reference to `c`'s storage, so `Drop for CtxInner` — and with it P1's `Drop` — runs
/// on the *reader's* thread, inside its `for_each`, long after `drop(c)` returned: exactly
/// what `Local::for_each` promises never happens ("values are only ever dropped by their own
/// context ... never by the thread that iterates").
#[test]
fn a_retired_value_refused_to_a_sweep_is_not_dropped_by_an_iterating_thread() {
    static L: Local<Probe> = Local::named("L2");
    static M: Local<u32> = Local::named("M2");
    within(20, || {
        let t = Tally::new();
        let log = Log::new();
        let blocker = Context::new();
        let bid = blocker.id();
        blocker.run(|| L.set(Probe::plain(&t, 9)));
        let c = Context::new();
        let cid = c.id();
        let p1 = {
            let log = log.clone();
            Probe::new(&t, 1, move || {
                let name = thread::current().name().unwrap_or("?").to_string();
                log.push(format!("P1 dropped on {name}"));
            })
        };
        c.run(|| {
            L.set(p1);
            M.set(0);
        });
        let reader = Parked::start(move |park| {
            L.for_each(|id, _| {
                if id == cid {
                    M.for_each(|id2, _| {
                        if id2 == cid {
                            park();
                        }
                    });
                }
            })
        });
        c.run(|| {
            L.set(Probe::plain(&t, 2));
            let mut once = true;
            L.for_each(|_, _| {
                if std::mem::take(&mut once) {
                    M.set(1);
                }
            });
        });
        reader.finish();
        // A second reader, parked on the blocker's value, holds a snapshot that includes `c`.
        let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let y = thread::Builder::new()
            .name("reader Y".into())
            .spawn(move || {
                let _ = ContextId::current();
                L.for_each(|id, _| {
                    if id == bid {
                        y_in_tx.send(()).unwrap();
                        let _ = go_rx.recv_timeout(Duration::from_secs(5));
                    }
                });
            })
            .unwrap();
        y_in_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let name = thread::current().name().unwrap_or("?").to_string();
        drop(c);
        log.push("drop(c) ended");
        go_tx.send(()).unwrap();
        y.join().unwrap();
        drop(blocker);
        assert_eq!(
            log.entries(),
            vec![format!("P1 dropped on {name}"), "drop(c) ended".to_string()],
            "P1 was dropped by the iterating thread, after its context was gone"
        );
        assert_eq!(t.live(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Finding 3: teardown inside `for_each` of the same local mistakes another thread's mark for
// this thread's own.
// ---------------------------------------------------------------------------------------------

/// **Value dropped outside teardown, by the wrong thread.** `take_impl` (`slot.rs:472`) maps
/// every refusal of `begin_write(.., Mode::Try)` other than `Readers` to "leave it for the
/// final free", on the grounds that "this thread's own `for_each` is reading the slot". But
/// `contended` (`borrow.rs:127`) answers `Iterating` whenever this thread iterates the local
/// *at all* and *anyone* marks the slot. So X, inside `L.for_each` on another context's
/// value, dropping context `c` while reader Y sits on `c`'s value (and waits for nobody),
/// does not wait for Y: `c`'s value is left in its slot and dropped when the last `Arc` of
/// `c`'s storage goes — after `drop(c)` returned, outside `c`, by an iterating thread.
///
/// Fix: in `take_impl` (and `remove_impl`), only treat the slot as "read by this thread" when
/// `waits::marked_here(slot addr)`; otherwise return `Taken::Readers` so teardown waits (the
/// wait-for graph still refuses a real cycle). The same `iterating_here` test in
/// `contended` for `Mode::Try` is what also produces Finding 2.
#[test]
fn a_context_dropped_inside_for_each_waits_for_another_threads_reader_of_its_value() {
    static L: Local<Probe> = Local::named("L3");
    within(20, || {
        let t = Tally::new();
        let log = Log::new();
        let blocker = Context::new();
        let bid = blocker.id();
        blocker.run(|| L.set(Probe::plain(&t, 9)));
        let c = Context::new();
        let cid = c.id();
        let p1 = {
            let log = log.clone();
            Probe::new(&t, 1, move || {
                let name = thread::current().name().unwrap_or("?").to_string();
                log.push(format!(
                    "P1 dropped on {name} in {:?}",
                    ContextId::current()
                ));
            })
        };
        c.run(|| L.set(p1));
        let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
        let y = thread::Builder::new()
            .name("reader Y".into())
            .spawn(move || {
                let _ = ContextId::current();
                L.for_each(|id, _| {
                    if id == cid {
                        y_in_tx.send(()).unwrap();
                        // Waits for nobody: a bounded callback.
                        thread::sleep(Duration::from_millis(300));
                    }
                });
            })
            .unwrap();
        y_in_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let x = thread::Builder::new()
            .name("X".into())
            .spawn({
                let log = log.clone();
                move || {
                    let _ = ContextId::current();
                    let mut c = Some(c);
                    L.for_each(|id, _| {
                        if id == bid {
                            if let Some(c) = c.take() {
                                drop(c);
                                log.push("X: drop(c) ended");
                            }
                        }
                    });
                }
            })
            .unwrap();
        x.join().unwrap();
        y.join().unwrap();
        drop(blocker);
        assert_eq!(
            log.entries(),
            vec![
                format!("P1 dropped on X in {cid:?}"),
                "X: drop(c) ended".to_string()
            ],
            "c's value was not dropped by c's teardown"
        );
        assert_eq!(t.live(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Finding 4: a retired value outlives the "next replacing write" it is promised to end at.
// ---------------------------------------------------------------------------------------------

/// **Value kept alive indefinitely.** `Local::for_each`'s docs (`runtime/src/local.rs` ~l.566)
/// promise that the old value left to a reader by `set`/`release` is dropped by its context
/// "at its next replacing write or when the context ends". But `sweep_retired` runs only in
/// `relocate` (`storage/mod.rs`), i.e. only when a later `set`/`release` *again* finds a
/// reader on the slot; an uncontended `set`, `release`, `take`, `with_mut`, pop... never
/// sweeps. On a long-lived thread context (a worker) a released value — a connection, a
/// lock guard, a large buffer — then lives until the thread exits: DESIGN's "dropped exactly
/// once, on release" is late without bound.
///
/// Fix: sweep on the uncontended path too, cheaply — e.g. a per-context "has unswept retired
/// slots" flag (holder-only, like `has_pending`) tested in the cold part of `write_in` / at
/// `set`/`release` end, or folded into `PENDING` of the fresh slot so its next write settles.
#[test]
fn a_value_released_under_a_reader_is_dropped_at_the_next_replacing_write() {
    static L: Local<Probe> = Local::named("L4");
    within(20, || {
        let t = Tally::new();
        let me = ContextId::current();
        L.set(Probe::plain(&t, 1));
        let reader = Parked::start(move |park| {
            L.for_each(|id, _| {
                if id == me {
                    park();
                }
            })
        });
        L.release(); // the reader keeps P1
        reader.finish(); // ... and lets go of it
        L.set(Probe::plain(&t, 2)); // the next replacing write
        L.release();
        let live = t.live();
        L.release();
        assert_eq!(
            live, 0,
            "the released value is still alive after two more replacing writes"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Found by the whole-change review: the teardown wait for readers of a fork's inherited frame
// (`CtxInner::wait_frame_readers`) had no test that fails without it.
// ---------------------------------------------------------------------------------------------

/// An inheritable value whose copies (made by a capture) log where they are dropped.
struct Noted {
    log: Log,
    copy: bool,
}

impl Clone for Noted {
    fn clone(&self) -> Self {
        Noted {
            log: self.log.clone(),
            copy: true,
        }
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        if self.copy {
            self.log
                .push(format!("copy dropped on {:?}", thread::current().id()));
        }
    }
}

static FRAMED: Local<Noted> = Local::named("FRAMED").inheritable();

/// Fault 5 for inherited values: a fork that only inherited a value holds the last reference
/// to its frame. Another thread's `for_each` is reading that inherited value (parked in its
/// callback) when the fork is dropped. Readers borrow the frame without a reference count, so
/// the fork's teardown must wait for them: the copy is dropped by the dropping thread, after
/// the reader's last use of it, before `drop(fork)` returns. Without the wait the frame is
/// freed under the reader (a use-after-free ASan reports) and the log shows the drop before
/// the reader's read.
#[test]
fn a_fork_dropped_while_its_inherited_value_is_read_waits_for_the_reader() {
    within(30, || {
        let log = Log::new();
        let fork = {
            let parent = Context::new();
            let snapshot = parent.run(|| {
                FRAMED.set(Noted {
                    log: log.clone(),
                    copy: false,
                });
                context_local::Snapshot::capture()
            });
            let fork = snapshot.fork();
            drop(snapshot);
            drop(parent); // the fork's frame is now the only holder of the copy
            fork
        };
        let reader_log = log.clone();
        let reader = Parked::start(move |park| {
            FRAMED.for_each(|_, v| {
                if v.copy {
                    park();
                    reader_log.push(format!("reader read a copy: {}", v.copy));
                }
            })
        });
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            reader.finish();
        });
        log.push("drop starts");
        drop(fork);
        log.push("drop ended");
        releaser.join().unwrap();
        let me = format!("{:?}", thread::current().id());
        assert_eq!(
            log.entries(),
            [
                "drop starts".to_owned(),
                "reader read a copy: true".to_owned(),
                format!("copy dropped on {me}"),
                "drop ended".to_owned(),
            ]
        );
    });
}
