//! What the edges (the tower, tonic and actix-web layers) do with a request's headers:
//! [`Propagate`] starts an incoming request's context from them, and writes the current
//! context's values into an outgoing request's.
//!
//! Implemented by [`baggage::Propagator`](crate::baggage::Propagator) (the carried locals, as W3C
//! Baggage), by [`NoBaggage`] (a plain child context, nothing read or written) and, with feature
//! `opentelemetry`, by `Otel`, which runs any OpenTelemetry `TextMapPropagator` — a
//! composite of `TraceContextPropagator` and a `Propagator`, say.

use std::sync::Arc;

use crate::baggage::{BaggageError, Extracted, Extractor, Injector, Propagator};
use crate::Context;

#[cfg(feature = "opentelemetry")]
mod otel;
#[cfg(feature = "opentelemetry")]
pub use otel::{otel_context, Otel};

/// Starts a request's context from its headers, and writes the current context's values into
/// outgoing headers. The layers take one by value, so it is cheap to clone: use a
/// `&'static Propagator` (from a `static` or `LazyLock`) or an `Arc`.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::{baggage::Propagator, propagate::Propagate, Local};
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// let propagator = Propagator::new().with(&TENANT);
///
/// TENANT.set("acme".into());
/// let mut headers = HashMap::new();
/// Propagate::inject(&propagator, &mut headers).unwrap();
///
/// let (request_context, extracted) = propagator.start(&headers);
/// assert!(extracted.errors().is_empty());
/// assert_eq!(request_context.run(|| TENANT.get()).as_deref(), Some("acme"));
/// ```
pub trait Propagate: Send + Sync {
    /// The context an incoming request runs in, started from `headers` (hostile: never a
    /// panic), and what was extracted — its errors for the handler to see.
    fn start(&self, headers: &dyn Extractor) -> (Context, Extracted);

    /// Writes the current context's values into outgoing `headers`, keeping the members of
    /// other parties.
    ///
    /// # Errors
    ///
    /// As [`Propagator::inject`]: over the W3C limits, the members that fit are written.
    fn inject(&self, headers: &mut dyn Injector) -> Result<(), BaggageError>;
}

/// Nothing extracted: what [`Propagator::extract`] gives for no header.
pub(crate) fn nothing_extracted() -> Extracted {
    Propagator::new().extract_headers([])
}

/// Headers as a sized carrier, for the runtime's `impl Injector` / `impl Extractor` methods.
pub(crate) struct DynInjector<'a>(pub(crate) &'a mut dyn Injector);

impl Injector for DynInjector<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name)
    }
    fn set(&mut self, name: &str, value: String) {
        self.0.set(name, value);
    }
    fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// See [`DynInjector`].
pub(crate) struct DynExtractor<'a>(pub(crate) &'a dyn Extractor);

impl Extractor for DynExtractor<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name)
    }
}

/// The carried locals: a request starts in a fork of the extracted snapshot (nothing of the
/// worker thread's own context), and outgoing requests carry their current values.
impl Propagate for Propagator {
    fn start(&self, headers: &dyn Extractor) -> (Context, Extracted) {
        let extracted = self.extract(&DynExtractor(headers));
        (extracted.snapshot().fork(), extracted)
    }

    fn inject(&self, headers: &mut dyn Injector) -> Result<(), BaggageError> {
        Propagator::inject(self, &mut DynInjector(headers))
    }
}

/// No baggage: a request starts in a plain child of the current context
/// ([`Context::child`]), as with `tower::ContextLayer`; nothing is
/// written out.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::propagate::{NoBaggage, Propagate};
///
/// let mut headers = HashMap::new();
/// NoBaggage.inject(&mut headers).unwrap();
/// assert!(headers.is_empty());
/// let (_context, extracted) = NoBaggage.start(&headers);
/// assert!(extracted.snapshot().is_empty());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBaggage;

impl Propagate for NoBaggage {
    #[track_caller]
    fn start(&self, _: &dyn Extractor) -> (Context, Extracted) {
        (Context::child(), nothing_extracted())
    }

    fn inject(&self, _: &mut dyn Injector) -> Result<(), BaggageError> {
        Ok(())
    }
}

impl<P: Propagate + ?Sized> Propagate for &P {
    fn start(&self, headers: &dyn Extractor) -> (Context, Extracted) {
        (**self).start(headers)
    }
    fn inject(&self, headers: &mut dyn Injector) -> Result<(), BaggageError> {
        (**self).inject(headers)
    }
}

impl<P: Propagate + ?Sized> Propagate for Arc<P> {
    fn start(&self, headers: &dyn Extractor) -> (Context, Extracted) {
        (**self).start(headers)
    }
    fn inject(&self, headers: &mut dyn Injector) -> Result<(), BaggageError> {
        (**self).inject(headers)
    }
}
