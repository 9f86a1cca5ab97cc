//! Local indices: each `Local`/`LocalStack` gets a small index on first use, its slot's place
//! in every context's table. Indices are recycled when a non-`static` local is dropped.

use super::borrow::IndexSync;
use crate::sync::{self as s, lock, Mutex, Ordering};

const UNASSIGNED: usize = usize::MAX;

struct Indices {
    next: usize,
    next_serial: u64,
    free: Vec<usize>,
    syncs: Vec<&'static IndexSync>,
}

s::globals! {
    static INDICES: Mutex<Indices> = Mutex::new(Indices {
        next: 0,
        next_serial: 0,
        free: Vec::new(),
        syncs: Vec::new(),
    });
}

/// The index of one local, and its serial (unique for the process: indices of dropped locals
/// are reused, serials never). Plain std atomics even under loom: `Key::new` must stay
/// `const`, and both are only ever published under the `INDICES` lock.
pub(crate) struct Key {
    index: std::sync::atomic::AtomicUsize,
    serial: std::sync::atomic::AtomicU64,
}

impl Key {
    pub(crate) const fn new() -> Self {
        Self {
            index: std::sync::atomic::AtomicUsize::new(UNASSIGNED),
            serial: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The index, if one was assigned.
    #[inline]
    pub(crate) fn get(&self) -> Option<usize> {
        let i = self.index.load(Ordering::Acquire);
        (i != UNASSIGNED).then_some(i)
    }

    /// The index, or a number no table has a slot at (never assigned): lets the hot path test
    /// "assigned" and "inline" with one comparison (see `Table::slot_at`).
    #[inline]
    pub(crate) fn raw(&self) -> usize {
        self.index.load(Ordering::Acquire)
    }

    /// The serial; meaningful once [`get`](Self::get) returned an index (it is published
    /// before the index).
    #[inline]
    pub(crate) fn serial(&self) -> u64 {
        self.serial.load(Ordering::Relaxed)
    }

    /// The index, assigned now if needed.
    pub(crate) fn get_or_assign(&self) -> usize {
        if let Some(i) = self.get() {
            return i;
        }
        s::init_fence();
        let mut idx = lock(&INDICES);
        // Re-check under the lock: another thread may have assigned it meanwhile.
        if let Some(i) = self.get() {
            return i;
        }
        let i = match idx.free.pop() {
            Some(i) => i,
            None => {
                let i = idx.next;
                idx.next += 1;
                idx.syncs.push(Box::leak(Box::new(IndexSync::new())));
                i
            }
        };
        idx.next_serial += 1;
        self.serial.store(idx.next_serial, Ordering::Relaxed);
        self.index.store(i, Ordering::Release);
        i
    }

    /// Gives the index back for reuse (the local is being dropped, its slots are gone).
    pub(crate) fn recycle(&mut self) {
        let i = *self.index.get_mut();
        if i != UNASSIGNED {
            lock(&INDICES).free.push(i);
            *self.index.get_mut() = UNASSIGNED;
        }
    }
}

/// What readers and writers of `index` share.
pub(crate) fn sync_of(index: usize) -> &'static IndexSync {
    lock(&INDICES).syncs[index]
}
