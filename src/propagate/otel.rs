//! [`Otel`]: any OpenTelemetry `TextMapPropagator` at the edges (feature `opentelemetry`).

use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::{self as otel, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;

use super::{nothing_extracted, Propagate};
use crate::baggage::{BaggageError, Extracted, Extractor, Injector, Propagator, HEADER};
use crate::{Context, Local};

/// The OpenTelemetry context a request was started with (its remote parent span, its
/// OpenTelemetry baggage): inheritable, so spawned tasks and jobs carry it on too.
static REMOTE: Local<opentelemetry::Context> =
    Local::named("context_local::propagate::REMOTE").inheritable();

/// An OpenTelemetry `TextMapPropagator` — typically a `TextMapCompositePropagator` of
/// `TraceContextPropagator` and a [`Propagator`](crate::baggage::Propagator) — as a
/// [`Propagate`] for the layers.
///
/// Incoming: the request's context is a fork of what the `Propagator` inside extracted, and the
/// whole OpenTelemetry context extracted (the caller's span context, other baggage) is kept in
/// it: [`otel_context`] returns it, in the handler and in every child it spawns. Outgoing: the
/// propagator injects OpenTelemetry's current context if it has an active span, else the one
/// the request was started with, so trace context passes through a service that starts no
/// span of its own; the baggage is the request's, with the current context's on top (both
/// reach the next service). Members of an outgoing `baggage` header set by others are kept.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::{baggage::Propagator, propagate::{otel_context, Otel, Propagate}, Local};
/// use opentelemetry::propagation::TextMapCompositePropagator;
/// use opentelemetry::trace::TraceContextExt;
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
///
/// let propagator = Otel(TextMapCompositePropagator::new(vec![
///     Box::new(TraceContextPropagator::new()),
///     Box::new(Propagator::new().with(&TENANT)),
/// ]));
/// let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// let incoming = HashMap::from([
///     ("traceparent".to_string(), parent.to_string()),
///     ("baggage".to_string(), "tenant=acme".to_string()),
/// ]);
/// let (request, _extracted) = propagator.start(&incoming);
/// let outgoing = request.run(|| {
///     assert_eq!(TENANT.get().as_deref(), Some("acme"));
///     assert!(otel_context().unwrap().span().span_context().is_remote());
///     let mut outgoing = HashMap::new();
///     propagator.inject(&mut outgoing).unwrap();
///     outgoing
/// });
/// assert_eq!(outgoing["traceparent"], parent);
/// assert_eq!(outgoing["baggage"], "tenant=acme");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Otel<T>(pub T);

/// The OpenTelemetry context the current request was started with by [`Otel`], if it was: the
/// parent for the spans it starts.
///
/// # Examples
///
/// ```
/// assert!(context_local::propagate::otel_context().is_none());
/// ```
pub fn otel_context() -> Option<opentelemetry::Context> {
    REMOTE.get()
}

impl<T: TextMapPropagator + Send + Sync> Propagate for Otel<T> {
    fn start(&self, headers: &dyn Extractor) -> (Context, Extracted) {
        let extractor = OtelExtractor::new(headers);
        let cx = self
            .0
            .extract_with_context(&opentelemetry::Context::new(), &extractor);
        let extracted = cx
            .get::<Extracted>()
            .cloned()
            .unwrap_or_else(nothing_extracted)
            .__and_errors(extractor.left_out);
        let request = extracted.snapshot().fork();
        request.run(|| REMOTE.set(cx));
        (request, extracted)
    }

    fn inject(&self, headers: &mut dyn Injector) -> Result<(), BaggageError> {
        let cx = outgoing();
        let mut injector = OtelInjector {
            headers,
            baggage: Vec::new(),
        };
        let carried = crate::baggage::__carried_keys_during(|| {
            self.0.inject_context(&cx, &mut injector);
        });
        // A `TextMapPropagator` cannot report an error; what the merge with the carrier's
        // header left out is reported here.
        merge(injector.headers, &injector.baggage, &carried)
    }
}

/// The OpenTelemetry context to inject: the current one's span if it has an active span, else
/// the request's remote parent; the request's baggage with the current context's on top (a
/// span of the handler's own does not hold the remote baggage, nor does the request's context
/// hold what the handler attached).
fn outgoing() -> opentelemetry::Context {
    let current = opentelemetry::Context::current();
    let Some(remote) = REMOTE.get() else {
        return current;
    };
    if !current.has_active_span() && current.baggage().is_empty() {
        return remote; // the usual case: a handler that attached nothing of its own
    }
    // The current (newer) entries first: at OpenTelemetry's limits, what does not fit is the
    // request's, not what the handler attached.
    let own = current.baggage();
    let baggage: Baggage = own
        .iter()
        .chain(
            remote
                .baggage()
                .iter()
                .filter(|(k, _)| own.get(k.as_str()).is_none()),
        )
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let base = if current.has_active_span() {
        current
    } else {
        remote
    };
    base.with_baggage(baggage)
}

/// An incoming request's headers, for OpenTelemetry, which reads text: the members of a
/// `baggage` header that hold a byte no header may hold (not ASCII, a control character) are
/// left out and reported in `left_out` with that byte, so that the valid members still apply
/// (a value that is not text would be lost whole, unreported) and the bad one is not passed on
/// with U+FFFD as if the client had sent it.
struct OtelExtractor<'a> {
    headers: &'a dyn Extractor,
    baggage: Vec<String>,
    left_out: Vec<BaggageError>,
}

impl<'a> OtelExtractor<'a> {
    fn new(headers: &'a dyn Extractor) -> Self {
        let mut left_out = Vec::new();
        let baggage = headers
            .get_all(HEADER)
            .into_iter()
            .map(|raw| {
                let (safe, errors) = crate::baggage::__safe_members(raw);
                left_out.extend(errors);
                safe
            })
            .collect();
        OtelExtractor {
            headers,
            baggage,
            left_out,
        }
    }
}

impl otel::Extractor for OtelExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(HEADER) {
            return self.baggage.first().map(|v| &**v);
        }
        let first = self.headers.get_all(key).into_iter().next()?;
        std::str::from_utf8(first).ok()
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let all: Vec<&str> = if key.eq_ignore_ascii_case(HEADER) {
            self.baggage.iter().map(|v| &**v).collect()
        } else {
            self.headers
                .get_all(key)
                .into_iter()
                .filter_map(|v| std::str::from_utf8(v).ok())
                .collect()
        };
        (!all.is_empty()).then_some(all)
    }
}

/// The carrier, for OpenTelemetry: the `baggage` headers its propagators write are kept
/// aside, to be merged with the carrier's own after they all ran.
struct OtelInjector<'a> {
    headers: &'a mut dyn Injector,
    /// Each header written, and whether a `Propagator` of ours wrote it.
    baggage: Vec<(String, bool)>,
}

impl otel::Injector for OtelInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = key.to_ascii_lowercase();
        if key == HEADER {
            self.baggage
                .push((value, crate::baggage::__written_by_ours()));
        } else {
            self.headers.set(&key, value);
        }
    }
}

/// Writes into `headers` the `baggage` header they have, less the members under the keys
/// written now (`written`, with whether ours wrote each) or carried (`carried`, stale even when
/// their local is unbound and nothing was written for it), then what was written: one member
/// per key, the last written, and under a carried key only ours (another propagator's comes
/// from OpenTelemetry's baggage, not from the local).
fn merge(
    headers: &mut dyn Injector,
    written: &[(String, bool)],
    carried: &[&str],
) -> Result<(), BaggageError> {
    let old = headers.get_all(HEADER);
    if old.is_empty() && written.is_empty() {
        return Ok(());
    }
    let is_carried = |k: &[u8]| carried.iter().any(|c| c.as_bytes() == k);
    let mut members: Vec<&[u8]> = Vec::new();
    for (header, ours) in written {
        for member in header.as_bytes().split(|&b| b == b',') {
            let key = member_key(member);
            if !ours && key.is_some_and(is_carried) {
                continue;
            }
            if key.is_some() {
                members.retain(|m| member_key(m) != key);
            }
            members.push(member);
        }
    }
    let mut merged = Vec::new();
    for member in old.iter().flat_map(|h| h.split(|&b| b == b',')) {
        let key = member_key(member);
        let stale =
            key.is_some_and(|k| is_carried(k) || members.iter().any(|m| member_key(m) == Some(k)));
        if !stale {
            merged.extend_from_slice(member);
            merged.push(b',');
        }
    }
    merged.extend_from_slice(members.join(&b","[..]).as_slice());
    // A propagator that carries nothing passes on the members a receiver can read, within
    // the W3C limits, and reports the others: the same rules as for its own injection.
    let mut merge = Merge {
        raw: merged,
        out: None,
    };
    let result = Propagator::new().inject(&mut merge);
    match merge.out {
        Some(header) => headers.set(HEADER, header),
        None => headers.remove(HEADER),
    }
    result
}

/// The key of a raw member, trimmed, if it has one.
fn member_key(member: &[u8]) -> Option<&[u8]> {
    let eq = member.iter().position(|&b| b == b'=')?;
    let key = member[..eq].trim_ascii();
    (!key.is_empty()).then_some(key)
}

/// A `baggage` header being merged: read as bytes, written as the checked header.
struct Merge {
    raw: Vec<u8>,
    out: Option<String>,
}

impl Injector for Merge {
    fn get_all(&self, _: &str) -> Vec<&[u8]> {
        vec![&self.raw]
    }
    fn set(&mut self, _: &str, value: String) {
        self.out = Some(value);
    }
    fn remove(&mut self, _: &str) {
        self.out = None;
    }
}
