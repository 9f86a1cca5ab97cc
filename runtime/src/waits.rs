//! Who waits for whom among the readers (`for_each`) and writers of context locals, so that a
//! wait which would close a cycle is refused instead of hanging.
//!
//! Two kinds of waits exist (see `borrow.rs`): a writer (or a teardown, or a removal) waits
//! for the readers that mark one slot; a reader waits for the holder of a context to finish
//! writing a slot there. A reader's callback may itself write or iterate, so waits can chain:
//! thread A, inside `L.for_each` and marking `L` in B's context, sets `M` in its own context
//! and waits for B's mark there; B, inside `M.for_each`, sets `L` in its own context and waits
//! for A. Only waiting parties can be part of such a cycle, and each registers here before it
//! waits, with the slots it marks and the slots it writes; the last one to close a cycle finds
//! it and gives up instead (an error or a clear panic for its caller). Registration is a global
//! lock, taken only by parties about to block.

use std::cell::RefCell;
use std::ptr;

use crate::sync::{globals, lock, thread_locals, Mutex};

thread_locals! {
    /// What this thread's `for_each` calls hold right now: the slots (or inherited frames) their
    /// callbacks are looking at.
    static MARKED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Records, until dropped, that this thread's `for_each` callback looks at what lives at an
/// address.
///
/// What a thread *writes* is not recorded as it happens (that would cost every `with_mut`):
/// a thread about to block computes it from the `WRITING` marks of the contexts it holds
/// (`context::slots_written_here`), which cannot change while it is blocked.
pub(crate) struct Holding {
    addr: usize,
}

impl Holding {
    /// This thread's `for_each` callback is looking at what lives at `addr`.
    pub(crate) fn mark(addr: usize) -> Self {
        let _ = MARKED.try_with(|v| v.borrow_mut().push(addr));
        Holding { addr }
    }
}

impl Drop for Holding {
    #[inline]
    fn drop(&mut self) {
        let _ = MARKED.try_with(|v| remove_last(&mut v.borrow_mut(), &self.addr));
    }
}

/// Removes the last occurrence of `x` from `list` (entries nest: the newest is the one that
/// ends first).
pub(crate) fn remove_last<T: PartialEq>(list: &mut Vec<T>, x: &T) {
    if let Some(pos) = list.iter().rposition(|e| e == x) {
        list.remove(pos);
    }
}

/// Whether this thread's `for_each` callbacks hold `addr` (an outer iteration is inside its
/// callback).
pub(crate) fn marked_here(addr: usize) -> bool {
    MARKED
        .try_with(|v| v.borrow().contains(&addr))
        .unwrap_or(false)
}

/// Whether this thread's `for_each` callbacks hold `addr`, and whether they hold anything.
pub(crate) fn marked_here_and_any(addr: usize) -> (bool, bool) {
    MARKED
        .try_with(|v| {
            let v = v.borrow();
            (v.contains(&addr), !v.is_empty())
        })
        .unwrap_or((false, false))
}

/// A number identifying this thread while it lives, and what it marks.
fn holdings_here() -> (usize, Vec<usize>) {
    MARKED
        .try_with(|v| (ptr::from_ref(v).addr(), v.borrow().clone()))
        .unwrap_or((0, Vec::new()))
}

/// What a party waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum On {
    /// The readers marking the slot at this address to leave it.
    Marks(usize),
    /// The holder writing the slot at this address to finish.
    Writing(usize),
}

/// A party about to block. What it marks and writes cannot change while it is blocked, so the
/// edges through it stay true while it is registered; a reader polling a slot may register a
/// wait that has just ended, but such an edge leads nowhere (nobody registered writes it).
struct Waiter {
    thread: usize,
    on: On,
    /// Slots this thread marks (it is inside their `for_each` callbacks).
    marks: Vec<usize>,
    /// Slots this thread has marked `WRITING` (inside `with_mut`, or waiting to write).
    writes: Vec<usize>,
}

globals! {
    static WAITERS: Mutex<Vec<Waiter>> = Mutex::new(Vec::new());
}

/// A registered wait; unregistered when dropped.
pub(crate) struct Waiting {
    thread: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        lock(&WAITERS).retain(|w| w.thread != self.thread);
    }
}

/// Registers this thread as waiting `on`, writing the slots `writes()` returns meanwhile (those
/// it has marked `WRITING`: see `context::slots_written_here`); `None` if that wait would close
/// a cycle (then nothing is registered).
pub(crate) fn register(on: On, writes: impl FnOnce() -> Vec<usize>) -> Option<Waiting> {
    let (thread, marks) = holdings_here();
    if thread == 0 {
        // This thread's bookkeeping is gone (thread exit): it marks and writes nothing any
        // more, so nobody waits for it.
        return Some(Waiting { thread: 0 });
    }
    // Before the lock: the walk takes the registry's lock (never taken the other way round).
    let writes = writes();
    let mut waiters = lock(&WAITERS);
    let me = Waiter {
        thread,
        on,
        marks,
        writes,
    };
    if closes_cycle(&waiters, &me) {
        return None;
    }
    waiters.push(me);
    Some(Waiting { thread })
}

/// Whether some party that `me` waits for — directly or through others — waits for `me`.
fn closes_cycle(waiters: &[Waiter], me: &Waiter) -> bool {
    let mut stack = vec![me];
    let mut seen: Vec<usize> = Vec::new();
    while let Some(w) = stack.pop() {
        for (i, next) in waiters.iter().enumerate() {
            if seen.contains(&i) || !waits_for(w, next) {
                continue;
            }
            if waits_for(next, me) {
                return true;
            }
            seen.push(i);
            stack.push(next);
        }
    }
    false
}

/// Whether `w`'s wait can only end when `other` moves on.
fn waits_for(w: &Waiter, other: &Waiter) -> bool {
    w.thread != other.thread
        && match w.on {
            On::Marks(slot) => other.marks.contains(&slot),
            On::Writing(slot) => other.writes.contains(&slot),
        }
}
