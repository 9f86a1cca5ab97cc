//! A table's cells beyond its inline ones: a small map from local index to cell, sized by the
//! number of locals bound in the context, not by their indices — in a program with 200 locals,
//! a context binding three of them pays for three cells, whatever their numbers.
//!
//! Cells never move (each is its own allocation), so a reference to one stays valid while the
//! table lives; the map from index to cell is replaced when it grows. A replaced map is kept
//! until the table drops, for readers on other threads (`for_each`) that may still be reading
//! it: they find there every cell that existed when they loaded it, as if they had read a
//! moment earlier.

use std::ptr;

use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

/// One entry of a map: `key` is a local index plus one (0: empty), `cell` that local's cell,
/// written before the key is published and never changed. Entry 0 of every map is its header
/// instead: `key` is the mask (capacity - 1), `cell` the map it replaced (cast), or null.
struct Entry<T> {
    key: AtomicUsize,
    cell: AtomicPtr<AtomicPtr<T>>,
}

impl<T> Entry<T> {
    fn new(key: usize, cell: *mut AtomicPtr<T>) -> Self {
        Self {
            key: AtomicUsize::new(key),
            cell: AtomicPtr::new(cell),
        }
    }
}

/// Cells by local index, beyond the inline ones (see the module docs). Only the context's
/// holder inserts; anyone may look up.
pub(crate) struct Overflow<T> {
    /// The current map (`mask + 2` entries, header first), null until the first insertion.
    map: AtomicPtr<Entry<T>>,
}

impl<T> Overflow<T> {
    pub(crate) fn new() -> Self {
        Self {
            map: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The current map's entries, header included.
    #[inline]
    fn entries(&self) -> Option<&[Entry<T>]> {
        let p = self.map.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null map was published by `grow` (Release, after writing its header),
        // holds `mask + 2` entries and lives until `self` drops.
        unsafe {
            let mask = (*p).key.load(Ordering::Relaxed);
            Some(&*ptr::slice_from_raw_parts(p, mask + 2))
        }
    }

    /// The cell of the local at `index`, if one was inserted. `index` may be any number.
    #[inline]
    pub(crate) fn cell(&self, index: usize) -> Option<&AtomicPtr<T>> {
        let entries = self.entries()?;
        let mask = entries[0].key.load(Ordering::Relaxed);
        let key = index.wrapping_add(1);
        let mut at = index & mask;
        loop {
            let e = &entries[1 + at];
            // Acquire: pairs with the insertion's Release, after which `cell` is written.
            match e.key.load(Ordering::Acquire) {
                // A map is never full (see `grow`), so the probe ends.
                0 => return None,
                k if k == key => {
                    // SAFETY: an entry's cell is a leaked box that lives until `self` drops.
                    return Some(unsafe { &*e.cell.load(Ordering::Relaxed) });
                }
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// The cell of the local at `index`, inserted (empty) if needed. Only the context's holder
    /// calls it, so nothing else inserts meanwhile.
    pub(crate) fn cell_or_insert(&self, index: usize) -> &AtomicPtr<T> {
        if let Some(cell) = self.cell(index) {
            return cell;
        }
        let cell = Box::into_raw(Box::new(AtomicPtr::new(ptr::null_mut())));
        let entries = self.room_for_one_more();
        let e = &entries[1 + free_entry(entries, index)];
        e.cell.store(cell, Ordering::Relaxed);
        e.key.store(index + 1, Ordering::Release);
        // SAFETY: just leaked; freed only when `self` drops.
        unsafe { &*cell }
    }

    /// The current map, replaced by one twice its size first if one more entry would fill it
    /// beyond three quarters.
    fn room_for_one_more(&self) -> &[Entry<T>] {
        let old = self.entries();
        let (used, cap) = old.map_or((0, 0), |e| {
            let used = e[1..].iter().filter(|e| e.key.load(Ordering::Relaxed) != 0);
            (used.count(), e.len() - 1)
        });
        match old {
            Some(entries) if (used + 1) * 4 <= cap * 3 => entries,
            _ => self.grow(old, (cap * 2).max(4)),
        }
    }

    /// Publishes a map of `cap` entries holding `old`'s; `old` stays allocated (see the module
    /// docs) and is linked from the new map's header.
    fn grow(&self, old: Option<&[Entry<T>]>, cap: usize) -> &[Entry<T>] {
        let prev = old.map_or(ptr::null_mut(), |e| e.as_ptr().cast_mut().cast());
        let map: Box<[Entry<T>]> = std::iter::once(Entry::new(cap - 1, prev))
            .chain((0..cap).map(|_| Entry::new(0, ptr::null_mut())))
            .collect();
        for e in old.into_iter().flat_map(|o| &o[1..]) {
            let key = e.key.load(Ordering::Relaxed);
            if key != 0 {
                let to = &map[1 + free_entry(&map, key - 1)];
                to.key.store(key, Ordering::Relaxed);
                to.cell
                    .store(e.cell.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let p = Box::into_raw(map).cast::<Entry<T>>();
        self.map.store(p, Ordering::Release);
        self.entries().expect("just published")
    }

    /// Every cell.
    pub(crate) fn for_each_cell(&self, mut f: impl FnMut(&AtomicPtr<T>)) {
        for e in self.entries().into_iter().flat_map(|e| &e[1..]) {
            if e.key.load(Ordering::Acquire) != 0 {
                // SAFETY: as in `cell`.
                f(unsafe { &*e.cell.load(Ordering::Relaxed) });
            }
        }
    }
}

/// Where `index` goes in `entries` (not holding it yet): the first empty entry of its probe.
fn free_entry<T>(entries: &[Entry<T>], index: usize) -> usize {
    let mask = entries[0].key.load(Ordering::Relaxed);
    let mut at = index & mask;
    while entries[1 + at].key.load(Ordering::Relaxed) != 0 {
        at = (at + 1) & mask;
    }
    at
}

impl<T> Drop for Overflow<T> {
    fn drop(&mut self) {
        // Every cell is in the current map (a new map copies all of the old one's).
        for e in self.entries().into_iter().flat_map(|e| &e[1..]) {
            if e.key.load(Ordering::Relaxed) != 0 {
                // SAFETY: leaked by `cell_or_insert`; nobody can reach it any more.
                drop(unsafe { Box::from_raw(e.cell.load(Ordering::Relaxed)) });
            }
        }
        let mut p = self.map.load(Ordering::Relaxed);
        while !p.is_null() {
            // SAFETY: a map published by `grow` (or linked from one) with `mask + 2` entries;
            // each is freed once, the newest first.
            unsafe {
                let mask = (*p).key.load(Ordering::Relaxed);
                let prev = (*p).cell.load(Ordering::Relaxed).cast::<Entry<T>>();
                drop(Box::from_raw(ptr::slice_from_raw_parts_mut(p, mask + 2)));
                p = prev;
            }
        }
    }
}
