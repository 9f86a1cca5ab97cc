//! Shared helpers: values that count their drops, so every test can prove "exactly once".
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts live and dropped values of one test.
#[derive(Clone, Default)]
pub struct Tally(Arc<(AtomicUsize, AtomicUsize)>);

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }
    /// A new counted value carrying `n`.
    pub fn make(&self, n: u64) -> Counted {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        Counted {
            n,
            tally: self.clone(),
            dropped: false,
        }
    }
    pub fn created(&self) -> usize {
        self.0 .0.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.0 .1.load(Ordering::SeqCst)
    }
    pub fn live(&self) -> usize {
        self.created() - self.dropped()
    }
}

/// A value whose drop is counted; dropping it twice panics.
pub struct Counted {
    pub n: u64,
    tally: Tally,
    dropped: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        assert!(!self.dropped, "value {} dropped twice", self.n);
        self.dropped = true;
        self.tally.0 .1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.tally.make(self.n)
    }
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counted({})", self.n)
    }
}

/// The message of a caught panic.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        String::from("<non-string panic>")
    }
}

/// Runs `f`, expecting a panic, and returns its message.
pub fn expect_panic<R>(f: impl FnOnce() -> R) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => panic_message(p),
    }
}
