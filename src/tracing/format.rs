//! The fmt wrappers that put a [`ContextFields`] on every formatted event: text after the
//! event's own fields, JSON as top-level members.

use std::cell::Cell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, JsonVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::ContextFields;

thread_local! {
    /// Set by a text [`ContextEventFormat`] while its inner formatter runs: the next
    /// [`ContextFieldFormat::format_fields`] on this thread formats that event's own fields
    /// and appends the context fields right after them. Span fields are formatted by the same
    /// `FormatFields`, but outside `format_event`, so they never see it set.
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Where a formatter puts the context fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// After the event's own fields (tracing-subscriber's `Full` and `Compact` format them
    /// through the layer's `FormatFields`, which [`ContextFieldFormat`] wraps); on a line of
    /// their own after the event for formatters that do not (`Pretty`).
    Text,
    /// First members of the event's JSON object: top-level, whether or not the event's own
    /// fields are flattened.
    Json,
}

/// A [`FormatEvent`] that adds the bound [`ContextFields`] to every event `inner` formats.
/// Made by [`with_context_fields`](super::ContextFieldsExt::with_context_fields); build one
/// yourself only around a formatter of your own ([`text`](Self::text) /
/// [`json`](Self::json)).
///
/// # Examples
///
/// ```
/// use context_local::tracing::{ContextEventFormat, ContextFieldFormat, ContextFields};
/// use context_local::Local;
/// use tracing_subscriber::fmt::format::DefaultFields;
///
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
/// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
/// let subscriber = tracing_subscriber::fmt()
///     .event_format(ContextEventFormat::text(tracing_subscriber::fmt::format(), &fields))
///     .fmt_fields(ContextFieldFormat::new(DefaultFields::new(), &fields))
///     .finish();
/// # let _ = subscriber;
/// ```
#[derive(Clone, Debug)]
pub struct ContextEventFormat<E> {
    inner: E,
    fields: ContextFields,
    placement: Placement,
}

impl<E> ContextEventFormat<E> {
    /// Wraps a text formatter: the fields follow the event's own ones when the layer's
    /// `FormatFields` is a [`ContextFieldFormat`] and `inner` formats the event's fields
    /// through it (as tracing-subscriber's `Full` and `Compact` do); otherwise they go on a
    /// line of their own after the event, indented.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextEventFormat, ContextFields};
    /// use context_local::Local;
    ///
    /// static USER: Local<String> = Local::named("USER");
    /// let fields = ContextFields::builder().display("user", USER.proxy()).build();
    /// let format = ContextEventFormat::text(tracing_subscriber::fmt::format().compact(), &fields);
    /// # let _ = format;
    /// ```
    pub fn text(inner: E, fields: &ContextFields) -> Self {
        Self {
            inner,
            fields: fields.clone(),
            placement: Placement::Text,
        }
    }

    /// Wraps a formatter that writes each event as one JSON object: the fields become its
    /// first members. An event's own field of the same name comes later in the object (most
    /// JSON readers keep the last).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextEventFormat, ContextFields};
    /// use context_local::Local;
    ///
    /// static USER: Local<String> = Local::named("USER");
    /// let fields = ContextFields::builder().display("user", USER.proxy()).build();
    /// let format = ContextEventFormat::json(tracing_subscriber::fmt::format().json(), &fields);
    /// # let _ = format;
    /// ```
    pub fn json(inner: E, fields: &ContextFields) -> Self {
        Self {
            inner,
            fields: fields.clone(),
            placement: Placement::Json,
        }
    }
}

impl<S, N, E> FormatEvent<S, N> for ContextEventFormat<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self.placement {
            Placement::Text => {
                let outer = PENDING.replace(true);
                let formatted = self.inner.format_event(ctx, writer.by_ref(), event);
                // Still set: `inner` never formatted the event's fields through a
                // `ContextFieldFormat`. Rather than lose them, put them on their own line.
                let missed = PENDING.replace(outer);
                formatted?;
                if missed {
                    let mut line = String::new();
                    let mut visitor = DefaultVisitor::new(Writer::new(&mut line), true);
                    if self.fields.record(&mut EscapeControls(&mut visitor)) > 0 {
                        visitor.finish()?;
                        writeln!(writer, "    {line}")?;
                    }
                }
                Ok(())
            }
            Placement::Json => {
                let mut members = String::new();
                let mut visitor = JsonVisitor::new(&mut members);
                if self.fields.record(&mut visitor) == 0 {
                    // Nothing bound: the event as `inner` writes it, untouched.
                    return self.inner.format_event(ctx, writer, event);
                }
                visitor.finish()?;
                // `{"a":1,"b":"x"}` -> `"a":1,"b":"x"`, spliced after the event's `{`.
                let members = &members[1..members.len() - 1];
                let mut splice = Splice {
                    out: writer.by_ref(),
                    members,
                    state: SpliceState::Start,
                };
                self.inner
                    .format_event(ctx, Writer::new(&mut splice), event)
            }
        }
    }
}

/// A [`FormatFields`] that formats like `inner` and, for the event a text
/// [`ContextEventFormat`] is formatting, appends the context fields after the event's own.
/// Made by [`with_context_fields`](super::ContextFieldsExt::with_context_fields).
///
/// Span fields are formatted by `inner` alone. A span's later `record` goes through the
/// default [`FormatFields::add_fields`] (append, space-separated), not an override of
/// `inner`'s; the JSON set-up does not wrap the `FormatFields`, so `JsonFields` keeps its
/// own.
///
/// # Examples
///
/// ```
/// use context_local::tracing::{ContextFieldFormat, ContextFields};
/// use context_local::Local;
/// use tracing_subscriber::fmt::format::DefaultFields;
///
/// static USER: Local<String> = Local::named("USER");
/// let fields = ContextFields::builder().display("user", USER.proxy()).build();
/// let format = ContextFieldFormat::new(DefaultFields::new(), &fields);
/// # let _ = format;
/// ```
#[derive(Clone, Debug)]
pub struct ContextFieldFormat<N> {
    inner: N,
    fields: ContextFields,
}

impl<N> ContextFieldFormat<N> {
    /// Wraps `inner`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextFieldFormat, ContextFields};
    /// use tracing_subscriber::fmt::format::DefaultFields;
    ///
    /// let format = ContextFieldFormat::new(DefaultFields::new(), &ContextFields::builder().build());
    /// # let _ = format;
    /// ```
    pub fn new(inner: N, fields: &ContextFields) -> Self {
        Self {
            inner,
            fields: fields.clone(),
        }
    }
}

impl<'writer, N: for<'w> FormatFields<'w>> FormatFields<'writer> for ContextFieldFormat<N> {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        self.inner.format_fields(writer.by_ref(), fields)?;
        if !PENDING.replace(false) {
            return Ok(());
        }
        // tracing-subscriber's own field visitor: same `name=value` style, same escaping, the
        // same italics when the writer has colours.
        let mut visitor = DefaultVisitor::new(writer, false);
        self.fields.record(&mut EscapeControls(&mut visitor));
        visitor.finish()
    }
}

/// A text line's visitor for the context fields: what a field renders is written with its
/// control characters escaped (`\r`, `\n`, `\u{1b}`, ..). Context values often come from the
/// network — a tenant restored from a `baggage` header is percent-decoded, so `%0D%0A` is a
/// real CR LF — and a value rendered with `Display` went into the line verbatim: it could end
/// the line and forge the next one (another request id, another level), or carry terminal
/// escapes. JSON needs none of this (its visitor escapes strings itself), so only the text
/// paths wrap their visitor.
struct EscapeControls<'a>(&'a mut dyn Visit);

impl Visit for EscapeControls<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, &Escaped(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        // tracing-subscriber quotes strings with `Debug` (already escaped), except a field
        // named `message`, which it writes verbatim: escape it all the same.
        self.0.record_debug(field, &Escaped(&value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .record_debug(field, &Escaped(&format_args!("{value}")));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value);
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.0.record_i128(field, value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.0.record_u128(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_f64(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value);
    }
}

/// `Debug` of the inner value with control characters (and Unicode's line and paragraph
/// separators, which some viewers break lines at) escaped as they are in Rust literals.
struct Escaped<'a>(&'a dyn fmt::Debug);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Out<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Out<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let mut rest = s;
                while let Some(i) =
                    rest.find(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
                {
                    self.0.write_str(&rest[..i])?;
                    let c = rest[i..].chars().next().expect("found at i");
                    write!(self.0, "{}", c.escape_default())?;
                    rest = &rest[i + c.len_utf8()..];
                }
                self.0.write_str(rest)
            }
        }
        if f.alternate() {
            write!(Out(f), "{:#?}", self.0)
        } else {
            write!(Out(f), "{:?}", self.0)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SpliceState {
    /// Waiting for the object's `{`.
    Start,
    /// Members written; a `,` goes before the next member unless the object ends.
    AfterMembers,
    /// Everything else passes through.
    Through,
}

/// Passes a JSON formatter's output through, inserting `members` right after the opening
/// `{` — so no buffering of the event and no re-parsing of its JSON.
struct Splice<'a, 'w> {
    out: Writer<'w>,
    members: &'a str,
    state: SpliceState,
}

impl fmt::Write for Splice<'_, '_> {
    fn write_str(&mut self, mut s: &str) -> fmt::Result {
        if self.state == SpliceState::Start {
            let Some(rest) = s.trim_start().strip_prefix('{') else {
                // Not an object after all: leave the output as `inner` wrote it.
                self.state = SpliceState::Through;
                return self.out.write_str(s);
            };
            self.out.write_char('{')?;
            self.out.write_str(self.members)?;
            self.state = SpliceState::AfterMembers;
            s = rest;
        }
        if self.state == SpliceState::AfterMembers && !s.is_empty() {
            if !s.starts_with('}') {
                self.out.write_char(',')?;
            }
            self.state = SpliceState::Through;
        }
        self.out.write_str(s)
    }
}
