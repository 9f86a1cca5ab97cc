//! `with_context_fields`: the one line of subscriber set-up.

use tracing::Subscriber;
use tracing_subscriber::fmt::format::{Compact, Format, Full, Json};
use tracing_subscriber::fmt::{FormatEvent, FormatFields, Layer, MakeWriter, SubscriberBuilder};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Registry;

use super::{ContextEventFormat, ContextFieldFormat, ContextFields};

/// Adds [`ContextFields`] to a tracing-subscriber fmt subscriber or layer in one call: every
/// event it formats carries the bound fields — after the event's own fields in the text
/// formats (`Full`, `Compact`), as top-level members in JSON.
///
/// Call it last, after choosing the format (`.json()`, `.compact()`, `.flatten_event(..)`,
/// `.with_target(..)`): those configure the format this wraps. Other formatters (`Pretty`,
/// your own): [`ContextEventFormat`].
///
/// # Examples
///
/// ```
/// use context_local::tracing::{ContextFields, ContextFieldsExt};
/// use context_local::Local;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
/// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
///
/// // A whole subscriber ...
/// let subscriber = tracing_subscriber::fmt().with_context_fields(&fields).finish();
/// # let _ = subscriber;
/// // ... or a layer next to others.
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer().json().with_context_fields(&fields));
/// # let _ = subscriber;
/// ```
pub trait ContextFieldsExt: Sized + sealed::Sealed {
    /// The subscriber builder or layer, formatting with the fields.
    type Output;

    /// Puts `fields` on every event this subscriber or layer formats.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextFields, ContextFieldsExt};
    /// use context_local::Local;
    ///
    /// static TENANT: Local<String> = Local::named("TENANT");
    /// let fields = ContextFields::builder().display("tenant", TENANT.proxy()).build();
    /// let subscriber = tracing_subscriber::fmt()
    ///     .json()
    ///     .flatten_event(true)
    ///     .with_context_fields(&fields)
    ///     .finish();
    /// tracing::subscriber::with_default(subscriber, || {
    ///     TENANT.set("acme".into());
    ///     tracing::info!("carries tenant=acme");
    /// });
    /// ```
    fn with_context_fields(self, fields: &ContextFields) -> Self::Output;
}

/// How each of tracing-subscriber's formats takes the fields: the text ones through their
/// `FormatFields` too (see [`ContextFieldFormat`]), JSON by its event format alone — its
/// `JsonFields` formats span fields only and merges a span's later `record`s itself.
pub trait Style: sealed::Sealed {
    /// The `FormatFields` the layer gets.
    type Fields<N>;
    /// Wraps the layer's `FormatFields`.
    fn fields<N>(inner: N, fields: &ContextFields) -> Self::Fields<N>;
    /// Wraps the layer's `FormatEvent`.
    fn event<E>(inner: E, fields: &ContextFields) -> ContextEventFormat<E>;
}

impl Style for Full {
    type Fields<N> = ContextFieldFormat<N>;
    fn fields<N>(inner: N, fields: &ContextFields) -> ContextFieldFormat<N> {
        ContextFieldFormat::new(inner, fields)
    }
    fn event<E>(inner: E, fields: &ContextFields) -> ContextEventFormat<E> {
        ContextEventFormat::text(inner, fields)
    }
}

impl Style for Compact {
    type Fields<N> = ContextFieldFormat<N>;
    fn fields<N>(inner: N, fields: &ContextFields) -> ContextFieldFormat<N> {
        ContextFieldFormat::new(inner, fields)
    }
    fn event<E>(inner: E, fields: &ContextFields) -> ContextEventFormat<E> {
        ContextEventFormat::text(inner, fields)
    }
}

impl Style for Json {
    type Fields<N> = N;
    fn fields<N>(inner: N, _: &ContextFields) -> N {
        inner
    }
    fn event<E>(inner: E, fields: &ContextFields) -> ContextEventFormat<E> {
        ContextEventFormat::json(inner, fields)
    }
}

impl<N, L, T, F, W> ContextFieldsExt for SubscriberBuilder<N, Format<L, T>, F, W>
where
    L: Style,
    L::Fields<N>: for<'w> FormatFields<'w> + 'static,
    ContextEventFormat<Format<L, T>>: FormatEvent<Registry, L::Fields<N>> + 'static,
    W: for<'w> MakeWriter<'w> + 'static,
{
    type Output = SubscriberBuilder<L::Fields<N>, ContextEventFormat<Format<L, T>>, F, W>;

    fn with_context_fields(self, fields: &ContextFields) -> Self::Output {
        self.map_fmt_fields(|n| L::fields(n, fields))
            .map_event_format(|e| L::event(e, fields))
    }
}

impl<S, N, L, T, W> ContextFieldsExt for Layer<S, N, Format<L, T>, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Style,
    L::Fields<N>: for<'w> FormatFields<'w> + 'static,
    ContextEventFormat<Format<L, T>>: FormatEvent<S, L::Fields<N>> + 'static,
    W: for<'w> MakeWriter<'w> + 'static,
{
    type Output = Layer<S, L::Fields<N>, ContextEventFormat<Format<L, T>>, W>;

    fn with_context_fields(self, fields: &ContextFields) -> Self::Output {
        self.map_fmt_fields(|n| L::fields(n, fields))
            .map_event_format(|e| L::event(e, fields))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<N, E, F, W> Sealed for tracing_subscriber::fmt::SubscriberBuilder<N, E, F, W> {}
    impl<S, N, E, W> Sealed for tracing_subscriber::fmt::Layer<S, N, E, W> {}
    impl Sealed for tracing_subscriber::fmt::format::Full {}
    impl Sealed for tracing_subscriber::fmt::format::Compact {}
    impl Sealed for tracing_subscriber::fmt::format::Json {}
}
