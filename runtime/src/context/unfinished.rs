//! Teardowns that had to leave values, finished by the thread that started them.
//!
//! A context dropped inside a `for_each` callback cannot drop a value that this thread's
//! iteration is reading right now (the callback holds `&V` to it), nor wait for a reader that
//! waits for this thread. Left alone, the value would be dropped with the context's storage,
//! by whichever thread lets go of the context last — another thread's iteration, inside its
//! own callback and with its own context current: that thread's `M.set` in the value's
//! `Drop` then panics there, or binds in the wrong context. Instead the dropping thread keeps
//! the context (still claimed: its owner word stays `Dropping`) and, when the `for_each` it
//! was in returns — the read is over — runs the teardown again, with the context current.

use std::any::Any;
use std::cell::{Cell, RefCell};

use super::inner::CtxInner;
use crate::sync::Arc;

crate::sync::thread_locals! {
    /// `for_each` calls running on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Contexts this thread dropped whose teardown left values, oldest first.
    static LEFT: RefCell<Vec<Arc<CtxInner>>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `ctx` — dropped by this thread (`Dropping`), unregistered, its teardown unfinished —
/// for the end of the `for_each` this thread is in. Outside any, nothing reads what was left
/// on this thread's account, and it goes with the context's storage.
pub(crate) fn defer(ctx: Arc<CtxInner>) {
    if DEPTH.try_with(Cell::get).unwrap_or(0) == 0 {
        return;
    }
    let _ = LEFT.try_with(|l| l.borrow_mut().push(ctx));
}

/// A `for_each` running on this thread; see [`Iteration::end`].
pub(crate) struct Iteration {
    /// How many contexts were left before this `for_each` began (those are an outer one's).
    from: usize,
}

impl Iteration {
    pub(crate) fn begin() -> Self {
        let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
        Iteration {
            from: LEFT.try_with(|l| l.borrow().len()).unwrap_or(0),
        }
    }

    /// The `for_each` returns: finishes the teardowns left during it, and returns the first
    /// panic of their values' `Drop` for the caller to resume.
    pub(crate) fn end(self) -> Option<Box<dyn Any + Send>> {
        let panicked = self.finish();
        std::mem::forget(self);
        panicked
    }

    fn finish(&self) -> Option<Box<dyn Any + Send>> {
        let _ = DEPTH.try_with(|d| d.set(d.get() - 1));
        let left = LEFT
            .try_with(|l| {
                let mut l = l.borrow_mut();
                let from = self.from.min(l.len());
                l.split_off(from)
            })
            .unwrap_or_default();
        let mut first_panic = None;
        for ctx in left {
            let done = {
                // SAFETY: this thread dropped the context and still holds it: its owner word
                // stays `Dropping` for good (no other party can claim it), and `ctx` keeps it
                // alive until the guard is dropped.
                let _entered = unsafe { super::enter(&ctx) };
                ctx.teardown()
            };
            if let Some(p) = done.panicked {
                first_panic.get_or_insert(p);
            }
            if done.left {
                // An outer `for_each` of this thread still reads it: for that one's end.
                defer(ctx);
            }
        }
        first_panic
    }
}

impl Drop for Iteration {
    fn drop(&mut self) {
        // Unwinding out of the `for_each`: its reads are over too. A second panic from a
        // value's `Drop` is not raised while unwinding.
        drop(self.finish());
    }
}
