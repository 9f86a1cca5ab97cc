//! The registry of live contexts: small recycled ids, and a dense list for iteration
//! (`for_each`, `contexts`).
//!
//! Iteration walks only the live contexts (`live`), never the ids a past burst of contexts left
//! behind: after 200,000 short-lived contexts, `for_each` over one value costs what it cost
//! before. A context's values belong to its `CtxInner`, not to its id, so a recycled id can
//! never show a new context a dead one's values (Werkzeug 1.0.1's bug).

use super::frame::Inherited;
use super::inner::CtxInner;
use super::owner::State;
use super::ContextId;
use crate::sync::{lock, Arc, Mutex};

/// Where id `i` is in `live`, or `VACANT`.
const VACANT: u32 = u32::MAX;

struct Registry {
    /// Every live context, in no particular order.
    live: Vec<Arc<CtxInner>>,
    /// By id: the context's position in `live`.
    position: Vec<u32>,
    /// Ids free for reuse, most recently freed last (LIFO keeps ids small).
    free: Vec<u32>,
    next_serial: u64,
}

crate::sync::globals! {
    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        live: Vec::new(),
        position: Vec::new(),
        free: Vec::new(),
        next_serial: 1,
    });
}

/// A new context in `state`, starting with the `inherited` values, registered.
pub(crate) fn register(state: State, inherited: Option<Inherited>) -> Arc<CtxInner> {
    crate::sync::init_fence();
    let mut reg = lock(&REGISTRY);
    let serial = reg.next_serial;
    reg.next_serial += 1;
    let id = match reg.free.pop() {
        Some(id) => id,
        None => {
            let id = u32::try_from(reg.position.len())
                .ok()
                .filter(|&id| id != VACANT)
                .expect("more than 2^32 - 1 live contexts");
            reg.position.push(VACANT);
            id
        }
    };
    let inner = Arc::new(CtxInner::new(ContextId(id), serial, state, inherited));
    let at = u32::try_from(reg.live.len()).expect("more than 2^32 live contexts");
    reg.position[id as usize] = at;
    reg.live.push(inner.clone());
    inner
}

pub(crate) fn unregister(id: ContextId) -> Option<Arc<CtxInner>> {
    let mut reg = lock(&REGISTRY);
    let at = *reg.position.get(id.0 as usize)?;
    if at == VACANT {
        return None;
    }
    reg.position[id.0 as usize] = VACANT;
    let taken = reg.live.swap_remove(at as usize);
    if let Some(moved) = reg.live.get(at as usize) {
        let moved = moved.id.0 as usize;
        reg.position[moved] = at;
    }
    reg.free.push(id.0);
    // Give back what a burst left behind, so the registry stays proportional to what lives.
    if reg.live.capacity() > 64 && reg.live.len() < reg.live.capacity() / 4 {
        let keep = reg.live.len() * 2;
        reg.live.shrink_to(keep);
    }
    Some(taken)
}

/// Every live context, for iteration without holding the registry lock during user code.
pub(crate) fn snapshot() -> Vec<Arc<CtxInner>> {
    lock(&REGISTRY).live.clone()
}

/// Runs `f` on every live context while holding the registry lock. `f` must not run user code.
pub(crate) fn visit_locked(mut f: impl FnMut(&CtxInner)) {
    for c in &lock(&REGISTRY).live {
        f(c);
    }
}

/// The live context with this id and serial, if it still exists.
pub(crate) fn lookup(id: ContextId, serial: u64) -> Option<Arc<CtxInner>> {
    let reg = lock(&REGISTRY);
    let at = *reg.position.get(id.0 as usize)?;
    let c = reg.live.get(at as usize)?;
    (c.serial == serial).then(|| c.clone())
}

/// Number of live contexts.
pub(crate) fn live() -> usize {
    lock(&REGISTRY).live.len()
}
