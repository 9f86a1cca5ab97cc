//! The registry of live contexts: dense, recycled ids for iteration (`for_each`, `contexts`).
//!
//! A context's values belong to its `CtxInner`, not to its id, so a recycled id can never show
//! a new context a dead one's values (Werkzeug 1.0.1's bug).

use super::inherit::Frame;
use super::inner::CtxInner;
use super::owner::State;
use super::ContextId;
use crate::sync::{lock, Arc, Mutex};

struct Registry {
    entries: Vec<Option<Arc<CtxInner>>>,
    free: Vec<u32>,
    next_serial: u64,
}

crate::sync::globals! {
    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        entries: Vec::new(),
        free: Vec::new(),
        next_serial: 1,
    });
}

/// A new context in `state`, starting with the `inherited` values, registered.
pub(crate) fn register(state: State, inherited: Option<Arc<Frame>>) -> Arc<CtxInner> {
    crate::sync::init_fence();
    let mut reg = lock(&REGISTRY);
    let serial = reg.next_serial;
    reg.next_serial += 1;
    // LIFO reuse keeps ids (and the registry) dense.
    let id = match reg.free.pop() {
        Some(id) => id,
        None => {
            let id = u32::try_from(reg.entries.len()).expect("more than 2^32 live contexts");
            reg.entries.push(None);
            id
        }
    };
    let inner = Arc::new(CtxInner::new(ContextId(id), serial, state, inherited));
    reg.entries[id as usize] = Some(inner.clone());
    inner
}

pub(crate) fn unregister(id: ContextId) -> Option<Arc<CtxInner>> {
    let mut reg = lock(&REGISTRY);
    let taken = reg.entries.get_mut(id.0 as usize).and_then(Option::take);
    if taken.is_some() {
        reg.free.push(id.0);
    }
    taken
}

/// Every live context, for iteration without holding the registry lock during user code.
pub(crate) fn snapshot() -> Vec<Arc<CtxInner>> {
    lock(&REGISTRY).entries.iter().flatten().cloned().collect()
}

/// Runs `f` on every live context while holding the registry lock. `f` must not run user code.
pub(crate) fn visit_locked(mut f: impl FnMut(&CtxInner)) {
    for c in lock(&REGISTRY).entries.iter().flatten() {
        f(c);
    }
}

/// The live context with this id and serial, if it still exists.
pub(crate) fn lookup(id: ContextId, serial: u64) -> Option<Arc<CtxInner>> {
    let reg = lock(&REGISTRY);
    let c = reg.entries.get(id.0 as usize)?.as_ref()?;
    (c.serial == serial).then(|| c.clone())
}

/// Number of live contexts.
pub(crate) fn live() -> usize {
    lock(&REGISTRY).entries.iter().flatten().count()
}
