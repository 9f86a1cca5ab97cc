//! `Buf<T>`: a growable buffer whose live elements are always one contiguous slice, with O(1)
//! push and pop at the back *and* O(1) removal at the front.
//!
//! A stack's guards may be dropped oldest-first (40,000 of them, in one test): with a `Vec`,
//! each removal at the bottom shifts everything above it, O(n²) in all. Here the live elements
//! are `[head, tail)` of the allocation: removing at the front moves `head`, removing in the
//! middle shifts the shorter side, and the room freed at the front is reclaimed (everything
//! moved down once, amortised O(1)) when the back runs out. The slice stays contiguous, so
//! `for_each` can still hand out `&[T]`.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

pub(crate) struct Buf<T> {
    ptr: NonNull<T>,
    cap: usize,
    head: usize,
    tail: usize,
    _owns: PhantomData<T>,
}

// SAFETY: `Buf<T>` owns its `T`s like a `Vec<T>` does: sending it sends them, sharing it
// shares `&T` only.
unsafe impl<T: Send> Send for Buf<T> {}
// SAFETY: as above; `&Buf<T>` gives out `&T` only.
unsafe impl<T: Sync> Sync for Buf<T> {}

impl<T> Buf<T> {
    pub(crate) const fn new() -> Self {
        Self {
            ptr: NonNull::dangling(),
            cap: if size_of::<T>() == 0 { usize::MAX } else { 0 },
            head: 0,
            tail: 0,
            _owns: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.tail - self.head
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `[head, tail)` are initialised elements of the allocation (or, for a
        // zero-sized `T` or an empty buffer, a dangling but aligned pointer and length 0 /
        // zero-sized reads), and `&self` keeps them from changing.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.head), self.len()) }
    }

    #[inline]
    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        if self.is_empty() {
            return None;
        }
        // SAFETY: `tail - 1` is an initialised element (the buffer is not empty), and
        // `&mut self` makes the borrow exclusive.
        Some(unsafe { &mut *self.ptr.as_ptr().add(self.tail - 1) })
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        if self.tail == self.cap {
            self.make_room();
        }
        // SAFETY: `tail < cap` now, so the slot is inside the allocation and uninitialised.
        unsafe { self.ptr.as_ptr().add(self.tail).write(value) };
        self.tail += 1;
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        self.tail -= 1;
        // SAFETY: `tail` was the last initialised element; it is now outside `[head, tail)`,
        // so it is read exactly once.
        // (An emptied buffer keeps its `head`: the next `make_room` moves nothing back to 0.)
        Some(unsafe { self.ptr.as_ptr().add(self.tail).read() })
    }

    /// Removes the element at `index` of the slice, moving the shorter side.
    pub(crate) fn remove(&mut self, index: usize) -> T {
        let len = self.len();
        assert!(
            index < len,
            "Buf::remove: index {index} out of bounds ({len})"
        );
        let base = self.ptr.as_ptr();
        let at = self.head + index;
        // SAFETY: `at` is an initialised element; it is read once, and its place is then
        // overwritten by one of the two shifts below, each within `[head, tail)` (`ptr::copy`
        // allows the overlap), after which `head` or `tail` excludes the vacated place.
        unsafe {
            let v = base.add(at).read();
            if index < len / 2 {
                ptr::copy(base.add(self.head), base.add(self.head + 1), index);
                self.head += 1;
            } else {
                ptr::copy(base.add(at + 1), base.add(at), len - index - 1);
                self.tail -= 1;
            }
            if self.is_empty() {
                self.head = 0;
                self.tail = 0;
            }
            v
        }
    }

    /// Moves every element out, bottom first, leaving the buffer empty (allocation kept).
    pub(crate) fn drain_to_vec(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        let (head, tail) = (self.head, self.tail);
        self.head = 0;
        self.tail = 0;
        for i in head..tail {
            // SAFETY: `[head, tail)` were initialised; the buffer no longer counts them, so
            // each is read exactly once.
            out.push(unsafe { self.ptr.as_ptr().add(i).read() });
        }
        out
    }

    /// Frees the allocation of an empty buffer.
    pub(crate) fn shrink_empty(&mut self) {
        debug_assert!(self.is_empty());
        let old = std::mem::replace(self, Self::new());
        drop(old);
    }

    /// The back is full: reclaim the room at the front if it is at least as large as what is
    /// live (moving `len` elements after at least `len` removals: amortised O(1)), else grow.
    #[cold]
    fn make_room(&mut self) {
        let len = self.len();
        if self.head > 0 && self.head >= len {
            // SAFETY: moves the initialised `[head, tail)` to `[0, len)`; the ranges may
            // overlap, which `ptr::copy` allows.
            unsafe { ptr::copy(self.ptr.as_ptr().add(self.head), self.ptr.as_ptr(), len) };
            self.head = 0;
            self.tail = len;
            return;
        }
        self.grow(len);
    }

    fn grow(&mut self, len: usize) {
        let cap = (self.cap * 2).max(4);
        let layout = Layout::array::<T>(cap).expect("stack too large");
        // SAFETY: `layout` has a non-zero size (`T` is not zero-sized: a zero-sized `T` has
        // `cap == usize::MAX` and never gets here, and `cap >= 4`).
        let new = unsafe { alloc::alloc(layout) }.cast::<T>();
        let Some(new) = NonNull::new(new) else {
            alloc::handle_alloc_error(layout)
        };
        if self.cap > 0 {
            // SAFETY: copies the initialised `[head, tail)` into the fresh, disjoint
            // allocation, then frees the old one, whose elements are now moved out.
            unsafe {
                ptr::copy_nonoverlapping(self.ptr.as_ptr().add(self.head), new.as_ptr(), len);
                alloc::dealloc(
                    self.ptr.as_ptr().cast(),
                    Layout::array::<T>(self.cap).unwrap(),
                );
            }
        }
        self.ptr = new;
        self.cap = cap;
        self.head = 0;
        self.tail = len;
    }

    /// Reserves room for `n` elements in an empty, unallocated buffer.
    pub(crate) fn reserve_first(&mut self, n: usize) {
        if self.cap == 0 {
            let len = self.len();
            let target = n.max(4);
            while self.cap < target {
                self.grow(len);
            }
        }
    }
}

impl<T> Drop for Buf<T> {
    fn drop(&mut self) {
        // SAFETY: drops the initialised `[head, tail)` in place, exactly once (a panicking
        // element drop still drops the rest, as for any slice); then frees the allocation.
        unsafe {
            let live = ptr::slice_from_raw_parts_mut(self.ptr.as_ptr().add(self.head), self.len());
            let guard = Dealloc(self);
            ptr::drop_in_place(live);
            drop(guard);
        }
    }
}

/// Frees a buffer's allocation, also when dropping an element panicked.
struct Dealloc<'a, T>(&'a Buf<T>);

impl<T> Drop for Dealloc<'_, T> {
    fn drop(&mut self) {
        let b = self.0;
        if b.cap > 0 && size_of::<T>() > 0 {
            // SAFETY: allocated by `grow` with exactly this layout; nothing uses it after.
            unsafe { alloc::dealloc(b.ptr.as_ptr().cast(), Layout::array::<T>(b.cap).unwrap()) };
        }
    }
}
