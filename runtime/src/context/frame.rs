//! A frame: the inheritable values of a context at one moment, by local index, as snapshots
//! and forks share them; what a fork inherited; the inherited values it lends out.

use std::any::{Any, TypeId};
use std::ptr::NonNull;

use super::table::Frozen;
use crate::sync::Arc;

/// One local's frozen value, tagged with the serial of the local it belongs to (indices of
/// dropped locals are reused; serials are not) and with the type of the value, so that a read
/// needs no virtual call to check it.
#[derive(Clone)]
pub(crate) struct Entry {
    serial: u64,
    type_id: TypeId,
    value: Frozen,
}

impl Entry {
    pub(super) fn new(serial: u64, value: Frozen) -> Self {
        Self {
            serial,
            // The type behind the `dyn`: the invariant `Frame::get` relies on.
            type_id: (*value).type_id(),
            value,
        }
    }
}

/// Entries a frame keeps apart from its shared bulk (see `Frame::delta`); one more folds
/// them into a new bulk.
const DELTA: usize = 8;

/// The inheritable values of a context at one moment, indexed by local index.
///
/// A capture after a write builds the new frame from the last one: it shares the bulk
/// (`flat`, one reference count) and copies only the few entries changed since (`delta`), so
/// its cost does not grow with the number of values bound.
#[derive(Clone, Default)]
pub(crate) struct Frame {
    /// The bulk of the entries, by local index; shared between frames built one from another.
    /// A slice in the `Arc`'s own allocation: a read follows one pointer to it.
    flat: std::sync::Arc<[Option<Entry>]>,
    /// Entries set since `flat` was built (at most `DELTA` locals, each once): they win over
    /// `flat` (`None`: unbound since).
    delta: Vec<(usize, Option<Entry>)>,
}

impl Frame {
    /// A frame of these entries, by local index.
    pub(super) fn from_entries(entries: Vec<Option<Entry>>) -> Self {
        Self {
            flat: entries.into(),
            delta: Vec::new(),
        }
    }

    /// The entry of the local at `index`, if bound.
    #[inline]
    fn entry(&self, index: usize) -> Option<&Entry> {
        match self.delta.iter().find(|(i, _)| *i == index) {
            Some((_, e)) => e.as_ref(),
            None => self.flat.get(index)?.as_ref(),
        }
    }

    /// The frozen value of the local with `index` and `serial`, if bound here and a `V`.
    #[inline]
    pub(crate) fn get<V: Any>(&self, index: usize, serial: u64) -> Option<&V> {
        match self.entry(index)? {
            e if e.serial == serial && e.type_id == TypeId::of::<V>() => {
                // SAFETY: `type_id` is the type of the value `e.value` points at (set from it in
                // `Entry::new`, and neither changes after), so this is `downcast_ref` without its
                // virtual call; the value lives as long as `self` holds its `Arc`.
                Some(unsafe { &*std::sync::Arc::as_ptr(&e.value).cast::<V>() })
            }
            _ => None,
        }
    }

    /// Binds a local's value (an extracted one: see `baggage`).
    pub(crate) fn put(&mut self, index: usize, serial: u64, value: Frozen) {
        self.set(index, Some(Entry::new(serial, value)));
    }

    /// Sets one entry: into `delta` while it has room, else into a bulk of this frame's own.
    pub(super) fn set(&mut self, index: usize, entry: Option<Entry>) {
        if let Some((_, e)) = self.delta.iter_mut().find(|(i, _)| *i == index) {
            *e = entry;
        } else if self.delta.len() < DELTA {
            self.delta.push((index, entry));
        } else {
            // A new bulk: once per `DELTA` locals changed.
            let mut flat = self.flat.to_vec();
            for (i, e) in self.delta.drain(..).chain([(index, entry)]) {
                set_entry(&mut flat, i, e);
            }
            self.flat = flat.into();
        }
    }

    /// This frame sharing its bulk, without the changes to the locals at `indices` that it
    /// keeps apart (about to be set anew: not copied only to be dropped).
    pub(super) fn without(&self, indices: &[usize]) -> Frame {
        let mut delta = Vec::with_capacity(DELTA);
        let kept = self.delta.iter().filter(|(i, _)| !indices.contains(i));
        delta.extend(kept.cloned());
        Frame {
            flat: self.flat.clone(),
            delta,
        }
    }

    /// All entries by index, `delta` applied, for a frame to be built from scratch.
    pub(super) fn to_entries(&self) -> Vec<Option<Entry>> {
        let mut entries = self.flat.to_vec();
        for (i, e) in &self.delta {
            set_entry(&mut entries, *i, e.clone());
        }
        entries
    }

    /// How many locals are bound.
    pub(crate) fn len(&self) -> usize {
        let overridden = |i: usize| self.delta.iter().any(|(d, _)| *d == i);
        let in_flat = self.flat.iter().enumerate();
        let kept = in_flat.filter(|(i, e)| e.is_some() && !overridden(*i));
        kept.count() + self.delta.iter().filter(|(_, e)| e.is_some()).count()
    }

    /// Whether no local is bound.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sets `entries[index]`, growing the vector for a value (not for an absent one).
pub(super) fn set_entry(entries: &mut Vec<Option<Entry>>, index: usize, entry: Option<Entry>) {
    if index >= entries.len() {
        if entry.is_none() {
            return;
        }
        entries.resize(index + 1, None);
    }
    entries[index] = entry;
}

/// What a fork inherited: its own reference to the frame, or one lent by `Snapshot::run` for
/// the fork's whole life (saving a reference count up and down per run).
pub(crate) struct Inherited {
    /// The frame itself, for reads without a branch on how it is held.
    frame: NonNull<Frame>,
    held: Held,
}

enum Held {
    Owned(Arc<Frame>),
    /// Points at the `Arc` of the snapshot that runs the fork; see [`Inherited::lent`].
    Lent(NonNull<Arc<Frame>>),
}

impl Inherited {
    pub(crate) fn owned(frame: Arc<Frame>) -> Self {
        Self {
            frame: NonNull::from(&*frame),
            held: Held::Owned(frame),
        }
    }

    /// A reference to `frame` that does not count.
    ///
    /// # Safety
    ///
    /// `frame` must outlive the teardown of the context that gets it (which ends its use of
    /// it), and that context must be torn down (not leaked).
    pub(crate) unsafe fn lent(frame: &Arc<Frame>) -> Self {
        Self {
            frame: NonNull::from(&**frame),
            held: Held::Lent(NonNull::from(frame)),
        }
    }

    /// The frame itself, while this exists.
    #[inline]
    pub(crate) fn frame(&self) -> &Frame {
        // SAFETY: the frame lives while its `Arc` does: ours (owned), or the lender's, which
        // outlives us (see `lent`).
        unsafe { self.frame.as_ref() }
    }

    /// A counted reference (for a capture, or to keep the frame beyond the lender).
    pub(crate) fn to_arc(&self) -> Arc<Frame> {
        match &self.held {
            Held::Owned(frame) => frame.clone(),
            // SAFETY: lent for as long as this exists (see `lent`).
            Held::Lent(frame) => unsafe { frame.as_ref() }.clone(),
        }
    }

    /// A counted reference in place of this one (a lent one becomes owned), to outlive the
    /// lender.
    pub(crate) fn into_owned(self) -> Arc<Frame> {
        match self.held {
            Held::Owned(frame) => frame,
            // SAFETY: as in `to_arc`.
            Held::Lent(frame) => unsafe { frame.as_ref() }.clone(),
        }
    }
}

/// Lends of inherited values kept inline (more nest rarely): a fork's first read allocates
/// nothing.
pub(super) const INLINE_LENDS: usize = 4;

/// The inherited values a fork lends out to user code right now (`with` of a local it has not
/// written yet), by local index. A write of such a local would make the fork's own copy behind
/// the borrow's back: it is refused, as a write of a borrowed slot is; and the fork's release
/// waits for them, as for borrowed slots. Holder-only. Lends nested deeper than
/// `INLINE_LENDS` are in the context's `Rare::lends`. (32-bit indices: a table holds fewer
/// locals than that.)
#[derive(Default)]
pub(crate) struct Lends {
    pub(super) count: u32,
    pub(super) inline: [u32; INLINE_LENDS],
}

impl Lends {
    /// Whether `index` is lent: `Some` if the inline lends decide it, `None` if the deeper
    /// ones must be asked.
    pub(super) fn contains(&self, index: usize) -> Option<bool> {
        let inline = (self.count as usize).min(INLINE_LENDS);
        if self.inline[..inline].contains(&(index as u32)) {
            return Some(true);
        }
        (self.count as usize <= INLINE_LENDS).then_some(false)
    }
}
