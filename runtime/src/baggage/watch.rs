//! Which baggage keys the [`Propagator`](super::Propagator)s inside an OpenTelemetry
//! composite carry, for the code that runs it and merges the header they write with one
//! already in the carrier: a member there under a carried key is stale even when the
//! propagator, its local unbound, writes nothing for it. `TextMapPropagator` has no way to
//! ask (and a composite hides what it holds), so each `inject_context` reports its keys here.

use std::cell::{Cell, RefCell};

thread_local! {
    /// The keys reported by the injections under way on this thread, if one is watched.
    static KEYS: RefCell<Option<Vec<&'static str>>> = const { RefCell::new(None) };
    /// Whether a `Propagator` is writing its header now.
    static OURS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `inject` (an OpenTelemetry `inject_context`) and returns the baggage keys carried by
/// every `Propagator` that injected during it. Not public API.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "opentelemetry")] {
/// use context_local::{baggage::{self, Propagator}, Local};
/// use opentelemetry::propagation::TextMapPropagator;
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// let propagator = Propagator::new().with(&TENANT);
/// let mut headers = std::collections::HashMap::new();
/// let keys = baggage::__carried_keys_during(|| {
///     propagator.inject_context(&opentelemetry::Context::new(), &mut headers)
/// });
/// assert_eq!(keys, ["tenant"]);
/// # }
/// ```
#[doc(hidden)]
pub fn __carried_keys_during(inject: impl FnOnce()) -> Vec<&'static str> {
    /// Puts back what an enclosing watch had seen, on unwinding too (and during thread-local
    /// teardown, when there is nothing left to put it in).
    struct Restore(Option<Vec<&'static str>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = KEYS.try_with(|k| *k.borrow_mut() = self.0.take());
        }
    }
    let mut restore = Restore(KEYS.with(|k| k.borrow_mut().replace(Vec::new())));
    inject();
    let seen = KEYS.with(|k| k.borrow_mut().take()).unwrap_or_default();
    // The enclosing watch's propagators include this one's: it sees its keys too.
    if let Some(outer) = &mut restore.0 {
        outer.extend_from_slice(&seen);
    }
    drop(restore);
    seen
}

/// Reports `keys`, carried by a propagator injecting now, to the watch under way, if any.
pub(crate) fn report(keys: impl Iterator<Item = &'static str>) {
    KEYS.with(|k| {
        if let Some(seen) = k.borrow_mut().as_mut() {
            seen.extend(keys);
        }
    });
}

/// Runs `write` (a `Propagator` setting its header) so that the injector can tell that header
/// from other propagators': under a carried key, only its member is current.
pub(crate) fn as_ours(write: impl FnOnce()) {
    /// Clears the mark, on unwinding too.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = OURS.try_with(|o| o.set(false));
        }
    }
    OURS.set(true);
    let _clear = Clear;
    write();
}

/// Whether the `baggage` header being set now is written by a
/// [`Propagator`](super::Propagator). Not public API.
///
/// # Examples
///
/// ```
/// assert!(!context_local::baggage::__written_by_ours());
/// ```
#[doc(hidden)]
pub fn __written_by_ours() -> bool {
    OURS.try_with(Cell::get).unwrap_or(false)
}
