//! A visitor: a thread that does not hold a context removes a guard's value there anyway, by
//! claiming the context just long enough (`Removing`), or queues the removal for its holder.

use std::ptr::NonNull;

use super::inner::CtxInner;
use super::table::{Queued, Removal, Remover, SlotHeader};

impl CtxInner {
    /// Removes the element numbered `id` from the slot `hdr` (at `index`) of this context,
    /// which this thread does not hold. If nobody holds it, this thread claims it just long
    /// enough to move the value out, applying what others queued before (no user code runs
    /// under the claim), and drops the value after. If another thread or a task holds it, or
    /// this thread is iterating the slot, the removal is queued and applied by the holder the
    /// next time it enters, before anything else runs there. A foreign reader on the slot is
    /// waited for outside the claim, then the claim is tried again.
    ///
    /// # Safety
    ///
    /// `hdr` must be this context's slot at `index` and stay live until this returns (the
    /// caller borrows the local, which alone could detach it).
    #[cold]
    pub(crate) unsafe fn remove_as_visitor(&self, index: usize, hdr: NonNull<SlotHeader>, id: u64) {
        loop {
            let Some(claim) = self.owner.try_remove() else {
                return self.post_removal(index, id);
            };
            let mut removed = if self.has_pending() {
                self.apply_removals(Remover::Visitor)
            } else {
                Vec::new()
            };
            // SAFETY: we hold the context (`Removing`); the slot is live (the caller).
            match unsafe { SlotHeader::remove(hdr, &mut Queued::Remove(id), Remover::Visitor) } {
                Removal::Done(v) => {
                    // SAFETY: live (the caller). Still under the claim: the next holder sees it.
                    if unsafe { hdr.as_ref() }.capture.is_some() {
                        self.mark_changed();
                    }
                    removed.extend(v);
                }
                // Read by this thread's own `for_each`: the next holder removes it.
                Removal::Busy => self.post_removal(index, id),
                // A reader is on the slot: wait for it outside the claim, then retry.
                Removal::Readers => {
                    drop(claim);
                    drop(removed);
                    // SAFETY: live (the caller).
                    if unsafe { SlotHeader::wait_readers(hdr) } {
                        continue;
                    }
                    return self.post_removal(index, id);
                }
            }
            drop(claim);
            drop(removed);
            return;
        }
    }
}
