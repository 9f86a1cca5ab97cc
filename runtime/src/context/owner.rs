//! Who holds a context: the one place that decides it.
//!
//! A context's values may be touched by one party at a time. The owner word says which:
//!
//! | state      | held by                                             | entered how                |
//! |------------|-----------------------------------------------------|----------------------------|
//! | `Idle`     | nobody                                              | -                          |
//! | `Own`      | the thread whose own context it is, for its life    | bottom of that thread's chain |
//! | `Entered`  | the thread holding a `ContextGuard`                 | until the guard is dropped |
//! | `Task`     | the future (`InContext`) that owns the `Context`    | during each of its polls   |
//! | `Removing` | a thread removing a `StackGuard`'s value from afar  | never; no user code runs   |
//! | `Dropping` | the thread dropping the `Context`                   | during its teardown        |
//!
//! Every transition is a method here and the only compare-and-swap on the word; the claims
//! that end (`Entered`, `Removing`) are released by guards, so unwinding cannot skip them.
//! `Removing` runs no user code and never waits, so the parties that wait for it to end (a
//! thread entering, a task claiming, a `Context` being dropped) wait a bounded time.

use crate::sync::{backoff, thread_locals, AtomicU8, Ordering};

thread_locals! {
    /// Its address identifies this thread (see `thread_mark`).
    static MARK: u8 = const { 0 };
}

/// A number that identifies this thread while it lives, for a holder that left a context and
/// still holds it (`CtxInner::deferred_by`): the address of a thread-local of its own.
pub(crate) fn thread_mark() -> usize {
    MARK.try_with(|m| std::ptr::from_ref(m).addr()).unwrap_or(0)
}

/// The states of the owner word; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Idle = 0,
    Own = 1,
    Entered = 2,
    Task = 3,
    Removing = 4,
    Dropping = 5,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Idle,
            1 => Self::Own,
            2 => Self::Entered,
            3 => Self::Task,
            4 => Self::Removing,
            _ => Self::Dropping,
        }
    }
}

pub(crate) struct Owner(AtomicU8);

impl Owner {
    pub(crate) fn new(state: State) -> Self {
        Self(AtomicU8::new(state as u8))
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.0.load(Ordering::Acquire))
    }

    /// `Idle -> to`; `Err` with the state found otherwise. Acquire: the claimant sees every
    /// write of the previous holder, which released the word.
    fn claim(&self, to: State) -> Result<(), State> {
        self.0
            .compare_exchange(
                State::Idle as u8,
                to as u8,
                Ordering::Acquire,
                Ordering::Acquire,
            )
            .map(drop)
            .map_err(State::from_u8)
    }

    /// Like [`claim`](Self::claim), waiting out a `Removing` claim (bounded: it runs no user
    /// code and never waits).
    fn claim_after_removal(&self, to: State, also_from: Option<State>) -> Result<(), State> {
        let mut round = 0;
        loop {
            match self.claim(to) {
                Err(State::Removing) => backoff(&mut round),
                Err(found) if Some(found) == also_from => {
                    // Only the holder of `also_from` calls this, so nobody else changes it.
                    self.0.store(to as u8, Ordering::Relaxed);
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    /// A thread enters with a `ContextGuard`: `Idle -> Entered`, waiting out a removal.
    pub(crate) fn try_enter(&self) -> Result<EnterClaim<'_>, State> {
        self.claim_after_removal(State::Entered, None)?;
        Ok(EnterClaim(self))
    }

    /// A future takes the context for its whole life: `Idle -> Task`.
    pub(crate) fn begin_task(&self) -> Result<(), State> {
        self.claim_after_removal(State::Task, None)
    }

    /// A foreign `StackGuard` removes its value: `Idle -> Removing`, or `None` when the context
    /// is held by someone who will apply the removal instead. Waits out another `Removing`.
    pub(crate) fn try_remove(&self) -> Option<RemovalClaim<'_>> {
        self.claim_after_removal(State::Removing, None).ok()?;
        Some(RemovalClaim(self))
    }

    /// The `Context` is dropped: `Idle | Task -> Dropping`. `Err(Entered)` means a
    /// `ContextGuard` was leaked (`mem::forget`): some thread may still run in the context.
    pub(crate) fn start_drop(&self) -> Result<(), State> {
        self.claim_after_removal(State::Dropping, Some(State::Task))
    }

    /// Ends an `Entered` claim whose guard is gone: the context was left while one of its
    /// values was borrowed, and that borrow has now ended (see `CtxInner::apply_deferred`).
    pub(crate) fn end_deferred(&self) {
        self.release();
    }

    fn release(&self) {
        // Release: the next claimant sees every write made while held.
        self.0.store(State::Idle as u8, Ordering::Release);
    }
}

/// `Entered`, until dropped (or handed to [`Owner::end_deferred`] with `mem::forget`).
pub(crate) struct EnterClaim<'a>(&'a Owner);

impl Drop for EnterClaim<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// `Removing`, until dropped.
pub(crate) struct RemovalClaim<'a>(&'a Owner);

impl Drop for RemovalClaim<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}
