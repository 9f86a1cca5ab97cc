//! The bridge to OpenTelemetry (feature `opentelemetry`): a [`Propagator`] is a
//! `TextMapPropagator`, so it sits in a `TextMapCompositePropagator` next to
//! `TraceContextPropagator`.

use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::{Context, Key, StringValue};

use super::codec;
use super::propagator::{Propagator, HEADER};

/// The header this propagator reads and writes.
static FIELDS: std::sync::LazyLock<[String; 1]> = std::sync::LazyLock::new(|| [HEADER.to_string()]);

/// Injects the carried locals' current values together with the OpenTelemetry baggage of the
/// context given (entries under a carried key are the locals'); extracts the carried keys into
/// an [`Extracted`](super::Extracted) stored in the returned `Context` (`cx.get::<Extracted>()`)
/// and every other member into its OpenTelemetry baggage — so it replaces
/// `opentelemetry_sdk`'s `BaggagePropagator` rather than running beside it (both write the
/// same header; the last writer wins). What either one injects, the other extracts.
///
/// OpenTelemetry metadata travels as W3C properties: keys that are tokens, values
/// percent-encoded (so that a `,` or `=` in them cannot make a member, nor CR LF end the
/// header); a property or key that is not a token is left out. Extracted properties become
/// metadata with their values percent-decoded, as `opentelemetry_sdk` does.
///
/// # Panics
///
/// `inject_context` inside the `with_mut` of a carried local (it cannot read the value, and a
/// `TextMapPropagator` has no error to return); the message names the local. The inherent
/// [`Propagator::inject`] returns that as an error instead.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::baggage::{Extracted, Propagator};
/// use context_local::Local;
/// use opentelemetry::propagation::TextMapPropagator;
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
///
/// let propagator = Propagator::new().with(&TENANT);
/// TENANT.set("acme".into());
/// let mut headers = HashMap::new();
/// propagator.inject_context(&opentelemetry::Context::new(), &mut headers);
///
/// // (`TextMapPropagator::extract`, not the inherent `extract`, which returns `Extracted`.)
/// let cx = TextMapPropagator::extract(&propagator, &headers);
/// let extracted = cx.get::<Extracted>().unwrap();
/// assert_eq!(extracted.snapshot().run(|| TENANT.get()).as_deref(), Some("acme"));
/// ```
impl TextMapPropagator for Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        super::watch::report(self.keys());
        let mut others = Vec::new();
        for (key, (value, metadata)) in cx.baggage() {
            // A key that is not a token would be a forged member (OpenTelemetry checks keys
            // when they are inserted; this does not rely on it).
            if self.carries(key.as_str()) || !codec::is_token(key.as_str().as_bytes()) {
                continue;
            }
            let mut member = format!("{}=", key.as_str());
            codec::encode_value(value.as_str(), &mut member);
            // Properties that cannot be written as W3C properties are left out (a
            // `TextMapPropagator` cannot report an error).
            let _dropped = codec::encode_properties(metadata.as_str(), &mut member);
            others.push(member);
        }
        // Over the W3C limits, the members that fit are sent (no error to report either).
        let (header, _dropped, unreadable) = self.header_after(others.iter().map(String::as_str));
        if let Some(e) = unreadable {
            // A programming error, not input: loud, like `with` inside `with_mut`.
            crate::error::fail(format_args!("{e}"));
        }
        if !header.is_empty() {
            super::watch::as_ours(|| injector.set(HEADER, header));
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let headers: Vec<&str> = match extractor.get_all(HEADER) {
            Some(all) => all,
            None => extractor.get(HEADER).into_iter().collect(),
        };
        let mut others: Vec<(Key, (StringValue, opentelemetry::baggage::BaggageMetadata))> =
            Vec::new();
        let extracted = self.extract_with(headers.iter().map(|h| h.as_bytes()), |k, v, p| {
            others.push((
                Key::new(k.to_string()),
                (StringValue::from(v), codec::decode_properties(p).into()),
            ));
        });
        let cx = if others.is_empty() {
            cx.clone()
        } else {
            let baggage: Baggage = others.into_iter().collect();
            cx.with_baggage(baggage)
        };
        cx.with_value(extracted)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(FIELDS.as_slice())
    }
}
