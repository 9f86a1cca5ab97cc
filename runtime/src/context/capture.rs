//! A context's side of inheritance: what it hands down to its forks (captures of its
//! inheritable locals, frozen, by index) and how the frame it inherited is read.
//!
//! A context made by `Snapshot::fork` starts with the snapshot it was forked from (`inherited`)
//! and no slots: a read of an inheritable local that the fork has not written goes to the
//! snapshot; the first write materialises the fork's own copy (copy-on-write). A context's own
//! snapshot is cached: repeated captures cost an `Arc` clone and allocate nothing, and one
//! after writes updates the cache with the locals written since (`dirty`), not all of them.
//! The frames themselves are in `frame.rs`.

use std::any::Any;

use super::frame::{set_entry, Entry, Frame, Inherited, INLINE_LENDS};
use super::inner::SlotKeptAlive;
use super::table::SlotHeader;
use super::CtxInner;
use crate::sync::{Arc, Ordering};

/// Why a capture cannot read a local's value now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CaptureError {
    /// The local is being changed (`with_mut` of it encloses the capture).
    Writing(&'static str),
    /// The local's `Clone` is running for another capture, and this capture is made inside
    /// it (it would clone the value again, and again).
    Cloning(&'static str),
}

/// A build of this context's frame is running (see `CtxInner::building`); on unwind out of
/// it (a panicking `Clone`) the cached frame is marked stale again unless `complete`d.
struct Building<'a> {
    ctx: &'a CtxInner,
    complete: bool,
}

impl<'a> Building<'a> {
    fn start(ctx: &'a CtxInner) -> Self {
        ctx.rare
            .get_or_init()
            .building
            .fetch_add(1, Ordering::Relaxed);
        Building {
            ctx,
            complete: false,
        }
    }

    fn complete(mut self) {
        self.complete = true;
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        let rare = self.ctx.rare.get_or_init(); // allocated by `start`
        rare.building.fetch_sub(1, Ordering::Relaxed);
        if !self.complete {
            // The cleared mark was a promise that the cache would be rebuilt: it was not.
            self.ctx.mark_changed();
        }
    }
}

/// A capture is cloning the slot's payload (its `Clone` runs) until dropped, also on unwind.
struct Capturing<'a>(&'a SlotHeader);

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        self.0.capturing.store(false, Ordering::Relaxed);
    }
}

/// A lend of an inherited value (see `frame::Lends`), ended on drop, also on unwind.
pub(crate) struct Lend<'a>(&'a CtxInner);

impl Drop for Lend<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: holder-only; lends nest, so ours is the last one; no user code runs here.
        let left = self.0.lends.with_mut(|l| unsafe {
            let l = &mut *l;
            l.count -= 1;
            l.count
        });
        if left as usize >= INLINE_LENDS {
            self.0.pop_deep_lend();
        }
        // The context was left inside the borrow: its release waited for this.
        if left == 0 && self.0.release_deferred_pending() {
            apply_deferred_after_lend(self.0);
        }
    }
}

#[cold]
#[inline(never)]
fn apply_deferred_after_lend(ctx: &CtxInner) {
    drop(ctx.apply_deferred());
}

/// A foreign reader's hold on a context's inherited frame (`for_each`, `contexts`).
pub(crate) struct FrameRead<'a> {
    ctx: &'a CtxInner,
    frame: &'a Frame,
    _held: crate::waits::Holding,
}

impl std::ops::Deref for FrameRead<'_> {
    type Target = Frame;

    fn deref(&self) -> &Frame {
        self.frame
    }
}

impl Drop for FrameRead<'_> {
    fn drop(&mut self) {
        // After this, teardown may take the frame out.
        self.ctx.frame_readers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CtxInner {
    /// The frozen value this context inherited for a local, if any. Holder-only.
    #[inline]
    pub(crate) fn inherited<V: Any>(&self, index: usize, serial: u64) -> Option<&V> {
        // SAFETY: holder-only: only the holder's teardown changes it, and not while a holder's
        // access borrows from it.
        let frame = self.inherited.with(|i| unsafe { (*i).as_ref() })?;
        frame.frame().get(index, serial)
    }

    /// Records that the holder lends the inherited value of the local at `index` to user code
    /// until the returned guard is dropped.
    #[inline]
    pub(crate) fn lend_inherited(&self, index: usize) -> Lend<'_> {
        // SAFETY: holder-only, and no user code runs while it is borrowed.
        let deep = self.lends.with_mut(|l| unsafe {
            let l = &mut *l;
            let at = l
                .inline
                .get_mut(l.count as usize)
                .map(|at| *at = index as u32);
            l.count += 1;
            at.is_none()
        });
        if deep {
            self.push_deep_lend(index);
        }
        Lend(self)
    }

    /// A lend nested deeper than the inline ones (see `frame::Lends`).
    #[cold]
    fn push_deep_lend(&self, index: usize) {
        let rare = self.rare.get_or_init();
        // SAFETY: holder-only, and no user code runs while it is borrowed.
        rare.lends.with_mut(|l| unsafe { (*l).push(index) });
    }

    #[cold]
    fn pop_deep_lend(&self) {
        let rare = self.rare.get_or_init(); // allocated by `push_deep_lend`
                                            // SAFETY: as in `push_deep_lend`.
        rare.lends.with_mut(|l| unsafe { (*l).pop() });
    }

    /// Whether the holder lends the inherited value of the local at `index` right now.
    pub(crate) fn lends_inherited(&self, index: usize) -> bool {
        // SAFETY: holder-only, and no user code runs while it is borrowed.
        let inline = self.lends.with(|l| unsafe { (*l).contains(index) });
        inline.unwrap_or_else(|| {
            let rare = self.rare.get_or_init(); // allocated by `push_deep_lend`
                                                // SAFETY: as in `push_deep_lend`.
            rare.lends.with(|l| unsafe { (*l).contains(&index) })
        })
    }

    /// Whether the holder lends any inherited value right now (its release waits for them).
    pub(crate) fn lends_any_inherited(&self) -> bool {
        // SAFETY: as in `lends_inherited`.
        self.lends.with(|l| unsafe { (*l).count > 0 })
    }

    /// The inherited frame, for another thread (`for_each`, `contexts`).
    pub(crate) fn read_inherited_frame(&self) -> Option<FrameRead<'_>> {
        let gate = crate::sync::lock(&self.frame_gate);
        if !*gate {
            return None;
        }
        // Under the lock: a teardown that closes the gate after us sees the count, and our
        // read of the cell below comes before its take.
        self.frame_readers.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the holder writes `inherited` only in teardown, after closing the gate and
        // waiting for the count we just raised to drop (or leaving the frame to the context's
        // storage if it cannot wait), so it stays as it is while we read it.
        let Some(frame) = self.inherited.with(|i| unsafe { (*i).as_ref() }) else {
            // Unreachable (the gate is open only while there is a frame), but harmless.
            self.frame_readers.fetch_sub(1, Ordering::AcqRel);
            return None;
        };
        drop(gate);
        Some(FrameRead {
            ctx: self,
            frame: frame.frame(),
            _held: crate::waits::Holding::mark(self.frame_readers_addr()),
        })
    }

    fn frame_readers_addr(&self) -> usize {
        std::ptr::from_ref(&self.frame_readers).addr()
    }

    /// Teardown, once the gate is closed: waits until no foreign reader reads the frame any
    /// more (bounded by the readers' callbacks). `false` if that would wait for this thread.
    pub(super) fn wait_frame_readers(&self) -> bool {
        let addr = self.frame_readers_addr();
        if self.frame_readers.load(Ordering::Acquire) == 0 {
            return true;
        }
        if crate::waits::marked_here(addr) {
            return false;
        }
        let on = crate::waits::On::Marks(addr);
        let Some(_waiting) = crate::waits::register(on, super::slots_written_here) else {
            return false;
        };
        let mut round = 0;
        while self.frame_readers.load(Ordering::Acquire) != 0 {
            crate::sync::backoff(&mut round);
        }
        true
    }

    /// Whether this context inherited anything at all (cheap: a pointer test).
    #[inline]
    pub(crate) fn has_inherited(&self) -> bool {
        // SAFETY: as in `inherited`.
        self.inherited.with(|i| unsafe { (*i).is_some() })
    }

    /// An inheritable local changed here: the cached snapshot is stale. Holder-only.
    #[inline]
    pub(crate) fn mark_changed(&self) {
        self.changed.store(true, Ordering::Relaxed);
    }

    /// This context's inheritable values now (`None`: nothing): what it inherited if it never
    /// bound an inheritable local itself, else the cached frame if nothing changed since it
    /// was built, else a new one. Called by the holder, with the context current.
    ///
    /// # Errors
    ///
    /// A local whose value cannot be read now: see [`CaptureError`].
    pub(crate) fn capture(&self) -> Result<Option<Arc<Frame>>, CaptureError> {
        if !self.has_own_inheritable.load(Ordering::Relaxed) {
            // SAFETY: as in `inherited`.
            return Ok(self
                .inherited
                .with(|i| unsafe { (*i).as_ref().map(Inherited::to_arc) }));
        }
        self.capture_own().map(Some)
    }

    fn capture_own(&self) -> Result<Arc<Frame>, CaptureError> {
        // A capture made by user code (a `Clone`) while another capture builds is nested: the
        // cache is not to be trusted then (the outer build cleared `changed` before it began,
        // so writes it has not reached yet are not marked), and the nested build leaves the
        // cache and the mark to the outer one.
        // Every capture of a context's own values uses its cache (allocated here, once).
        let rare = self.rare.get_or_init();
        if rare.building.load(Ordering::Relaxed) > 0 {
            return self.build_nested();
        }
        let stale = self.changed.load(Ordering::Relaxed);
        // SAFETY: holder-only; no user code runs while it is borrowed.
        if !stale && rare.dirty.with(|d| unsafe { (*d).is_empty() }) {
            // SAFETY: holder-only, like `order`; no user code runs while it is borrowed.
            if let Some(frame) = rare.cache.with(|c| unsafe { (*c).clone() }) {
                return Ok(frame);
            }
        }
        // SAFETY: as above.
        let dirty = rare.dirty.with_mut(|d| unsafe { std::mem::take(&mut *d) });
        // The cache is current but for the locals written since (`dirty`): updated, not
        // rebuilt — in place if no snapshot holds it any more. Out of the cell meanwhile (a
        // capture nested in the build does not use it).
        // SAFETY: as above.
        let base = (!stale)
            .then(|| rare.cache.with_mut(|c| unsafe { (*c).take() }))
            .flatten();
        // The build runs user code (`Clone`, old copies' `Drop`): the context stays held, even
        // if that code drops its `ContextGuard`, until the build is done (then the release
        // happens, below — the frame was taken while the context was held).
        let built = {
            let _busy = self.busy();
            let building = Building::start(self);
            // Cleared before building: a write made by user code during the build (a
            // `Clone`) marks it again, and the next capture sees that write.
            self.changed.store(false, Ordering::Relaxed);
            let base = base.map(|mut frame| (Arc::get_mut(&mut frame).is_some(), frame));
            let built = match base {
                Some((true, mut frame)) => {
                    let own = Arc::get_mut(&mut frame).expect("unique");
                    self.update_frame(own, &dirty).map(|()| (frame, None))
                }
                Some((false, base)) => {
                    let mut frame = base.without(&dirty);
                    let updated = self.update_frame(&mut frame, &dirty);
                    updated.map(|()| (Arc::new(frame), Some(base)))
                }
                None => self.build_frame().map(|frame| (Arc::new(frame), None)),
            };
            let built = built.map(|(frame, base)| {
                // SAFETY: as above.
                let old = rare
                    .cache
                    .with_mut(|c| unsafe { (*c).replace(frame.clone()) });
                (frame, (old, base))
            });
            if built.is_ok() {
                building.complete();
            }
            built
        };
        self.reuse_dirty(dirty);
        if self.release_deferred_pending() {
            drop(self.apply_deferred());
        }
        let (frame, old) = built?;
        // The old frame (frozen copies, whose `Drop` may run user code) goes after the cell was
        // written.
        drop(old);
        Ok(frame)
    }

    /// A capture inside another capture's build: built afresh, without the cache.
    #[cold]
    fn build_nested(&self) -> Result<Arc<Frame>, CaptureError> {
        let built = {
            let _busy = self.busy();
            let _building = Building::start(self);
            self.build_frame()
        };
        if self.release_deferred_pending() {
            drop(self.apply_deferred());
        }
        built.map(Arc::new)
    }

    /// Builds the frame anew: what it inherited, then every inheritable local bound here.
    fn build_frame(&self) -> Result<Frame, CaptureError> {
        // SAFETY: as in `inherited`.
        let base = self
            .inherited
            .with(|i| unsafe { (*i).as_ref().map(Inherited::to_arc) });
        let mut entries = base.as_deref().map(Frame::to_entries).unwrap_or_default();
        // SAFETY: holder-only; the capture functions run no user code but `Clone`, which
        // cannot reach `order` (it only grows when a slot is created, by the holder).
        let len = self.order.with(|o| unsafe { (*o).len() });
        for i in 0..len {
            // SAFETY: as above.
            let index = self.order.with(|o| unsafe { (&*o)[i] }) as usize;
            if let Some(entry) = self.capture_slot(index)? {
                set_entry(&mut entries, index, entry);
            }
        }
        Ok(Frame::from_entries(entries))
    }

    /// Brings `frame` (this context's last frame, current but for the locals written since)
    /// up to date: those locals (`dirty`) captured anew. O(locals written), not O(locals
    /// bound).
    fn update_frame(&self, frame: &mut Frame, dirty: &[usize]) -> Result<(), CaptureError> {
        for &index in dirty {
            if let Some(entry) = self.capture_slot(index)? {
                frame.set(index, entry);
            }
        }
        Ok(())
    }

    /// The entry of the inheritable local at `index` as it is now, frozen anew if it was
    /// written since its last capture; `None` if it has no slot here or is not inheritable.
    fn capture_slot(&self, index: usize) -> Result<Option<Option<Entry>>, CaptureError> {
        // Kept alive while it is used: the user's `Clone` (or an old copy's `Drop`) may drop a
        // non-`static` local, whose `detach_all` then leaves the slot, kept alive, to us to free.
        let Some(hdr) = self.keep_slot_alive(index) else {
            return Ok(None);
        };
        let _kept = SlotKeptAlive(self, hdr);
        // SAFETY: kept alive, so live until `_kept` is dropped.
        let header = unsafe { hdr.as_ref() };
        let Some(capture) = header.capture else {
            return Ok(None);
        };
        let value = if header.frozen_fresh.load(Ordering::Relaxed) {
            // SAFETY: holder-only; no user code runs while it is borrowed.
            header.frozen.with(|f| unsafe { (*f).clone() })
        } else {
            if header.state.holder_view().is_writing() {
                return Err(CaptureError::Writing(header.name));
            }
            // Its `Clone` is running further up this thread's stack (it captures): a copy
            // would need that very `Clone` again, without end.
            if header.capturing.swap(true, Ordering::Relaxed) {
                return Err(CaptureError::Cloning(header.name));
            }
            let value = {
                let _capturing = Capturing(header);
                // SAFETY: we hold the context; the slot is live and not being written.
                unsafe { capture(hdr) }
            };
            // The user's `Clone` ran under a shared borrow: do what it queued for its end.
            if header.state.holder_view().is_pending_unborrowed() {
                drop(self.apply_deferred());
            }
            // SAFETY: holder-only. The old copy is dropped after the cell is written.
            let old = header
                .frozen
                .with_mut(|f| unsafe { std::mem::replace(&mut *f, value.clone()) });
            header.frozen_fresh.store(true, Ordering::Relaxed);
            drop(old);
            value
        };
        let serial = header.serial;
        Ok(Some(value.map(|value| Entry::new(serial, value))))
    }

    /// An inheritable local at `index` was written and its frozen copy is stale now: the next
    /// capture freezes it anew. Holder-only. Once per capture and local written: out of the
    /// write paths' line.
    #[cold]
    #[inline(never)]
    pub(crate) fn note_dirty(&self, index: usize) {
        // A frozen copy was fresh, so a capture ran here: `Rare` is there already.
        let rare = self.rare.get_or_init();
        // SAFETY: holder-only; no user code runs while it is borrowed.
        rare.dirty.with_mut(|d| unsafe { (*d).push(index) });
    }

    /// Takes the cached frame out (teardown). Holder-only.
    pub(super) fn take_cache(&self) -> Option<Arc<Frame>> {
        let rare = self.rare.get()?;
        // SAFETY: holder-only; no user code runs while it is borrowed.
        rare.cache.with_mut(|c| unsafe { (*c).take() })
    }

    /// Gives a build's (processed) list of written locals back, for its allocation, unless
    /// writes made during the build started a new one.
    fn reuse_dirty(&self, mut done: Vec<usize>) {
        done.clear();
        // SAFETY: as in `note_dirty`.
        self.rare.get_or_init().dirty.with_mut(|d| unsafe {
            if (*d).is_empty() {
                *d = done;
            }
        });
    }
}
