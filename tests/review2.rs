//! Second fresh-eyes review of the latest runtime changes (scan handshake, pins, busy/init,
//! released inherited frame, cold slot header, lazy stack numbering).
//!
//! `FAILS`: reproduces a bug of the current code (the doc comment says where and why).

mod common;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::OnceLock;

use common::{expect_panic, keep, within};
use context_local::{Context, ContextGuard, Local, Snapshot};

thread_local! {
    /// A guard that a `Clone` or initializer below drops (leaving its context).
    static PARKED: RefCell<Option<ContextGuard<'static>>> = const { RefCell::new(None) };
    /// Whether `Leaver::clone` panics after leaving.
    static PANIC_AFTER_LEAVING: Cell<bool> = const { Cell::new(false) };
}

fn leave_parked() {
    drop(PARKED.with(|p| p.borrow_mut().take()));
}

/// A value whose `Clone` leaves the context parked in `PARKED` (and then panics, if asked).
#[derive(Debug)]
struct Leaver;

impl Clone for Leaver {
    fn clone(&self) -> Self {
        leave_parked();
        if PANIC_AFTER_LEAVING.with(Cell::get) {
            panic!("clone failed after leaving its context");
        }
        Leaver
    }
}

static TARGET: OnceLock<&'static Context> = OnceLock::new();
static PROBED: AtomicBool = AtomicBool::new(false);
static SECOND_PARTY: AtomicBool = AtomicBool::new(false);

/// A value whose `Clone` asks another thread to enter `TARGET` while the clone runs.
#[derive(Debug)]
struct Prober;

impl Clone for Prober {
    fn clone(&self) -> Self {
        if let Some(ctx) = TARGET.get() {
            PROBED.store(true, SeqCst);
            let entered =
                std::thread::scope(|s| s.spawn(|| ctx.try_enter().is_ok()).join().unwrap());
            if entered {
                SECOND_PARTY.store(true, SeqCst);
            }
        }
        Prober
    }
}

static CAP_LEAVER: Local<Leaver> = Local::named("CAP_LEAVER").inheritable();
static CAP_PROBER: Local<Prober> = Local::named("CAP_PROBER").inheritable();

/// FAILS (a second party in a context whose values are being read: data race).
///
/// `CtxInner::build_frame` (runtime/src/context/inherit.rs:203-207) settles queued work after
/// each slot's `capture`. When a `Clone` of an earlier slot dropped the context's guard, the
/// release was deferred to the end of that slot's borrow — and this `settle` ends it
/// (`owner.end_deferred`), in the middle of the build. The loop then goes on reading `order`
/// and the next slots (running their `Clone` on `&V` inside the slot), and `capture_own`
/// writes the holder-only `cache`, while the context is `Idle`: another thread can enter it and
/// write (or drop) exactly those values meanwhile. `copy_inherited` and `InitGuard::finish`
/// got the "context left inside user code" treatment; the capture did not.
///
/// Fix: hold the context for the whole build like a fork's copy does: `let _busy =
/// self.busy()` around `build_frame` + the cache write in `capture_own` (so the guard's
/// release stays deferred), then after dropping it `if self.release_deferred_pending() {
/// settle }` (the frame was captured while held, so it can still be returned).
#[test]
fn a_capture_keeps_its_context_after_a_clone_left_it() {
    within(60, || {
        let ctx: &'static Context = keep(Context::new());
        let g = ctx.enter();
        CAP_LEAVER.set(Leaver); // first binding: captured first
        CAP_PROBER.set(Prober); // captured after the context was left
        PARKED.with(|p| *p.borrow_mut() = Some(g));
        TARGET.set(ctx).unwrap();
        // A fix may also refuse the capture with a panic: only the second party matters.
        let _ = std::panic::catch_unwind(Snapshot::capture);
        assert_ne!(context_local::ContextId::current(), ctx.id(), "left");
        assert!(PROBED.load(SeqCst), "the second value was captured");
        assert!(
            !SECOND_PARTY.load(SeqCst),
            "another thread entered the context while this thread was still capturing its values"
        );
    });
}

static INIT_LEAVES_PANICS: Local<u32> = Local::with_init("INIT_LEAVES_PANICS", || {
    leave_parked();
    panic!("initializer failed after leaving its context")
});

/// FAILS (context claimed forever). An initializer that drops its context's guard defers the
/// release (the slot's `INIT` counts as a borrow, `PENDING` is set); `InitGuard::finish`
/// settles it. When the initializer then panics, `InitGuard::drop`
/// (runtime/src/storage/mod.rs:596-601) only clears `INIT` and leaves the queued work "for
/// the slot's next use" — which never comes: the claim is `Entered` with no guard, nobody can
/// enter the context again, and dropping it would report a leaked guard and leak its values.
/// The same holds for a fork's copy-on-write `Clone` that leaves and panics (`Busy::drop`,
/// context/inner.rs) and a capture's `Clone` (`EndShared::drop`, storage/slot.rs): see below.
///
/// Fix: on unwind, when `release_deferred` is set and this was the last borrow, settle too
/// (no user code of the dropped guard's claim runs: `settle` only ends the claim and applies
/// queued removals — or just end the claim when `deferred_here()` and nothing is borrowed).
#[test]
fn an_initializer_that_leaves_and_panics_releases_its_context() {
    within(60, || {
        let ctx: &'static Context = keep(Context::new());
        let home = Context::new();
        home.run(|| {
            let g = ctx.enter();
            PARKED.with(|p| *p.borrow_mut() = Some(g));
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

static COW_LEAVER: Local<Leaver> = Local::named("COW_LEAVER").inheritable();

/// FAILS (context claimed forever): as above, for a fork's copy-on-write `Clone` that drops
/// the fork's guard and then panics (`copy_inherited`, storage/mod.rs:145-161: `Busy` is
/// dropped on unwind, the deferred release is never settled).
#[test]
fn a_copy_on_write_clone_that_leaves_and_panics_releases_the_fork() {
    within(60, || {
        let fork: &'static Context = keep(Context::new().run(|| {
            COW_LEAVER.set(Leaver);
            Snapshot::capture().fork()
        }));
        let home = Context::new();
        home.run(|| {
            let g = fork.enter();
            PARKED.with(|p| *p.borrow_mut() = Some(g));
            PANIC_AFTER_LEAVING.with(|p| p.set(true));
            let msg = expect_panic(|| COW_LEAVER.set(Leaver)); // copy-on-write: clones
            PANIC_AFTER_LEAVING.with(|p| p.set(false));
            assert!(msg.contains("clone failed"), "{msg}");
        });
        assert!(
            !fork.is_entered(),
            "the fork stays claimed after its guard was dropped"
        );
        assert!(fork.try_enter().is_ok(), "the fork cannot be entered again");
    });
}
