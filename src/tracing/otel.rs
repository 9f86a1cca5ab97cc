//! `ContextSpanProcessor`: the same [`ContextFields`] as attributes of every OpenTelemetry
//! span, set when the span starts (feature `opentelemetry-sdk`).

use std::fmt;
use std::time::Duration;

use opentelemetry::trace::Span as _;
use opentelemetry::{Context, Key, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tracing::field::{Field, Visit};

use super::ContextFields;

/// An OpenTelemetry SDK [`SpanProcessor`] that sets the bound [`ContextFields`] as attributes
/// of every span when it starts — what other languages' SDKs call a baggage span processor,
/// here from any chosen locals, declared once for `tracing` events, `log` records and spans.
///
/// The SDK calls [`on_start`](SpanProcessor::on_start) on the thread that starts the span, so
/// the values are the ones bound in the context current there: with `ContextLayer` outermost
/// and this crate's spawn helpers, the request's own, in its handler and children. A value
/// that changes later does not change the span.
///
/// - A field whose local is unbound is left out: spans started outside any request get none.
/// - An attribute the span was started with (`SpanBuilder::with_attributes`) wins over a field
///   of the same name: the field is not added a second time (the SDK itself would keep both).
/// - Values: `i64`, `f64`, `bool` and strings keep their type; a `u64` is an `i64` attribute
///   up to `i64::MAX` and a string above (OpenTelemetry has no unsigned integers); `display`
///   and `debug` fields are strings.
/// - Cost per span started: one read per declared field; when any is bound, one copy of the
///   span's start data to see its own attribute names.
///
/// Spans made through `tracing-opentelemetry` reach the SDK too; the values are read where
/// that layer starts the SDK span.
///
/// # Examples
///
/// ```
/// use context_local::tracing::{ContextFields, ContextSpanProcessor};
/// use context_local::{Context, Local};
/// use opentelemetry::trace::{Tracer, TracerProvider};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// # use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
/// # use std::sync::{Arc, Mutex};
/// # #[derive(Debug, Default, Clone)]
/// # struct Exporter(Arc<Mutex<Vec<SpanData>>>);
/// # impl SpanProcessor for Exporter {
/// #     fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
/// #     fn on_end(&self, span: SpanData) { self.0.lock().unwrap().push(span) }
/// #     fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult { Ok(()) }
/// #     fn shutdown_with_timeout(&self, _: std::time::Duration) -> opentelemetry_sdk::error::OTelSdkResult { Ok(()) }
/// # }
/// # let exporter = Exporter::default();
///
/// static TENANT: Local<String> = Local::named("TENANT");
///
/// let fields = ContextFields::builder().display("tenant", TENANT.proxy()).build();
/// let provider = SdkTracerProvider::builder()
///     .with_span_processor(ContextSpanProcessor::new(&fields))
///     // ... then your exporting processor, e.g. `.with_batch_exporter(otlp_exporter)`
/// #   .with_span_processor(exporter.clone())
///     .build();
/// let tracer = provider.tracer("app");
///
/// Context::new().run(|| {
///     TENANT.set("acme".into());
///     tracer.in_span("handle", |_| {}); // attribute tenant="acme"
/// });
/// tracer.in_span("idle", |_| {}); // no attribute
/// # let spans = exporter.0.lock().unwrap();
/// # assert_eq!(spans[0].attributes, [opentelemetry::KeyValue::new("tenant", "acme")]);
/// # assert_eq!(spans[1].attributes, []);
/// ```
#[derive(Clone, Debug)]
pub struct ContextSpanProcessor {
    fields: ContextFields,
}

impl ContextSpanProcessor {
    /// A processor setting `fields`; register it with
    /// `SdkTracerProvider::builder().with_span_processor(..)`, before the exporting one.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextFields, ContextSpanProcessor};
    /// use context_local::Local;
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
    /// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
    /// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
    ///     .with_span_processor(ContextSpanProcessor::new(&fields))
    ///     .build();
    /// # let _ = provider;
    /// ```
    pub fn new(fields: &ContextFields) -> Self {
        Self {
            fields: fields.clone(),
        }
    }
}

impl SpanProcessor for ContextSpanProcessor {
    fn on_start(&self, span: &mut Span, _parent: &Context) {
        let mut attributes = Attributes(Vec::new());
        if self.fields.record(&mut attributes) == 0 {
            return;
        }
        let mut attributes = attributes.0;
        // The SDK appends without replacing: keep the span's own attribute of a name.
        if let Some(data) = span.exported_data() {
            attributes.retain(|new| data.attributes.iter().all(|own| own.key != new.key));
        }
        span.set_attributes(attributes);
    }

    fn on_end(&self, _span: SpanData) {}

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Turns the fields [`ContextFields::record`] hands over into attributes.
struct Attributes(Vec<KeyValue>);

impl Attributes {
    fn push(&mut self, field: &Field, value: impl Into<Value>) {
        self.0
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
}

impl Visit for Attributes {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, v),
            Err(_) => self.push(field, value.to_string()),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `display` fields arrive here as `format_args!("{v}")`, whose Debug is its Display.
        self.push(field, format!("{value:?}"));
    }
}
