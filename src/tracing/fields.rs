//! `ContextFields`: which locals go on every event, under which names, rendered how.

use std::fmt;
use std::sync::Arc;

use tracing::callsite::Callsite;
use tracing::field::{Field, FieldSet, Value, Visit};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};

use crate::LocalProxy;

/// The callsite that owns the fields of every [`ContextFields`]. A `tracing::field::Field`
/// belongs to a callsite's field set, and tracing-subscriber's visitors (the text and JSON
/// ones we render with) take `Field`s; this one is never registered or enabled, it only
/// gives the fields an identity distinct from every real callsite's.
struct FieldsCallsite;

static CALLSITE: FieldsCallsite = FieldsCallsite;

static METADATA: Metadata<'static> = Metadata::new(
    "context_local::tracing::ContextFields",
    "context_local::tracing",
    Level::INFO,
    None,
    None,
    None,
    FieldSet::new(&[], tracing_core::identify_callsite!(&CALLSITE)),
    tracing_core::metadata::Kind::EVENT,
);

impl Callsite for FieldsCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &METADATA
    }
}

/// Records one field's current value into a visitor; `false` when nothing is bound.
type Record = Box<dyn Fn(&Field, &mut dyn Visit) -> bool + Send + Sync>;

struct Entry {
    field: Field,
    record: Record,
}

/// The context locals that every `tracing` event carries as fields: which locals (or parts of
/// them, through a [`LocalProxy`]), under which field names, rendered how — declared once,
/// then handed to the subscriber with
/// [`with_context_fields`](super::ContextFieldsExt::with_context_fields).
///
/// A field whose local is unbound when the event is formatted is left out, so events outside
/// any request carry none of them (no stale values). Formatting an event reads each declared
/// local once, in the context current where the event is emitted: with `ContextLayer`
/// outermost and the spawn helpers of this crate, that is the request's own context in the
/// handler, its spawned tasks, blocking jobs, rayon jobs and threads.
///
/// Cheap to clone (one `Arc`). Build it once at start-up: each [`build`](ContextFieldsBuilder::build)
/// keeps its field names for the life of the program (tracing's `Field`s need
/// `&'static [&'static str]`, as every callsite's do).
///
/// # Examples
///
/// ```
/// use context_local::tracing::{ContextFields, ContextFieldsExt};
/// use context_local::{context_local, Local};
///
/// #[context_local(inherit)]
/// #[derive(Clone)]
/// pub struct Request { pub id: u64, pub tenant: String }
/// static USER: Local<String> = Local::named("USER").inheritable();
///
/// let fields = ContextFields::builder()
///     .value("request_id", Request::proxy().map(|r| &r.id)) // a number in JSON
///     .display("tenant", Request::proxy().map(|r| r.tenant.as_str()))
///     .debug("user", USER.proxy())
///     .build();
/// let subscriber = tracing_subscriber::fmt()
///     .json()
///     .with_context_fields(&fields)
///     .finish();
/// # let _ = subscriber;
/// ```
#[derive(Clone)]
pub struct ContextFields {
    entries: Arc<[Entry]>,
}

impl ContextFields {
    /// Starts a declaration.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
    /// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
    /// assert_eq!(fields.names().collect::<Vec<_>>(), ["request_id"]);
    /// ```
    pub fn builder() -> ContextFieldsBuilder {
        ContextFieldsBuilder {
            entries: Vec::new(),
        }
    }

    /// The declared field names, in declaration order.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static A: Local<u8> = Local::named("A");
    /// static B: Local<u8> = Local::named("B");
    /// let fields = ContextFields::builder().value("a", A.proxy()).display("b", B.proxy()).build();
    /// assert_eq!(fields.names().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.field.name())
    }

    /// Records the current value of every declared field that is bound into `visitor` (a
    /// `tracing` [`Visit`], e.g. one of tracing-subscriber's), in declaration order, and
    /// returns how many it recorded. One read per declared field; unbound ones are skipped.
    /// For custom formatters and other sinks; the fmt set-up
    /// ([`with_context_fields`](super::ContextFieldsExt::with_context_fields)) calls this.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    /// use tracing::field::{Field, Visit};
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
    ///
    /// struct Collect(Vec<String>);
    /// impl Visit for Collect {
    ///     fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
    ///         self.0.push(format!("{}={value:?}", field.name()));
    ///     }
    /// }
    ///
    /// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
    /// let mut seen = Collect(Vec::new());
    /// assert_eq!(fields.record(&mut seen), 0); // nothing bound: nothing recorded
    /// REQUEST_ID.set(7);
    /// assert_eq!(fields.record(&mut seen), 1);
    /// assert_eq!(seen.0, ["request_id=7"]);
    /// ```
    pub fn record(&self, visitor: &mut dyn Visit) -> usize {
        self.entries
            .iter()
            .filter(|e| (e.record)(&e.field, visitor))
            .count()
    }

    /// Whether any declared field is bound now (one read per field, stopping at the first).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT");
    /// let fields = ContextFields::builder().display("tenant", TENANT.proxy()).build();
    /// assert!(!fields.any_bound());
    /// TENANT.set("acme".into());
    /// assert!(fields.any_bound());
    /// ```
    pub fn any_bound(&self) -> bool {
        struct Ignore;
        impl Visit for Ignore {
            fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
        }
        self.entries
            .iter()
            .any(|e| (e.record)(&e.field, &mut Ignore))
    }
}

impl fmt::Debug for ContextFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Declares the fields of a [`ContextFields`]: each method adds one field, read through a
/// [`LocalProxy`] (`LOCAL.proxy()`, `STACK.proxy()` for a stack's top, `Type::proxy()` for a
/// `#[context_local]` struct, `.map(|v| &v.part)` for a part of the value).
///
/// # Examples
///
/// ```
/// use context_local::{tracing::ContextFields, LocalStack};
///
/// static ROUTES: LocalStack<&'static str> = LocalStack::named("ROUTES");
/// let fields = ContextFields::builder().display("route", ROUTES.proxy()).build();
/// # let _ = fields;
/// ```
#[must_use = "call .build() to get the ContextFields"]
pub struct ContextFieldsBuilder {
    entries: Vec<(&'static str, Record)>,
}

impl ContextFieldsBuilder {
    /// A field recorded as the value's own [`tracing::Value`]: numbers and booleans stay
    /// numbers and booleans in JSON, strings are quoted in text (`tenant="acme"`), as if
    /// written `info!(name = value)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
    /// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
    /// # let _ = fields;
    /// ```
    pub fn value<T, U>(self, name: &'static str, proxy: LocalProxy<T, U>) -> Self
    where
        T: 'static,
        U: Value + ?Sized + 'static,
    {
        self.push(name, move |field, visitor| {
            proxy.try_with(|v| v.record(field, visitor)).is_ok()
        })
    }

    /// A field rendered with [`Display`](fmt::Display), as if written `info!(name = %value)`:
    /// unquoted in text, a string in JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static PEER: Local<std::net::SocketAddr> = Local::named("PEER");
    /// let fields = ContextFields::builder().display("peer", PEER.proxy()).build();
    /// # let _ = fields;
    /// ```
    pub fn display<T, U>(self, name: &'static str, proxy: LocalProxy<T, U>) -> Self
    where
        T: 'static,
        U: fmt::Display + ?Sized + 'static,
    {
        self.push(name, move |field, visitor| {
            proxy
                .try_with(|v| visitor.record_debug(field, &format_args!("{v}")))
                .is_ok()
        })
    }

    /// A field rendered with [`Debug`](fmt::Debug), as if written `info!(name = ?value)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static ROLES: Local<Vec<&'static str>> = Local::named("ROLES");
    /// let fields = ContextFields::builder().debug("roles", ROLES.proxy()).build();
    /// # let _ = fields;
    /// ```
    pub fn debug<T, U>(self, name: &'static str, proxy: LocalProxy<T, U>) -> Self
    where
        T: 'static,
        U: fmt::Debug + ?Sized + 'static,
    {
        self.push(name, move |field, visitor| {
            proxy.try_with(|v| visitor.record_debug(field, &v)).is_ok()
        })
    }

    fn push(
        mut self,
        name: &'static str,
        record: impl Fn(&Field, &mut dyn Visit) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.entries.push((name, Box::new(record)));
        self
    }

    /// The declaration, ready for
    /// [`with_context_fields`](super::ContextFieldsExt::with_context_fields).
    ///
    /// # Panics
    ///
    /// If two fields have the same name: a log line would carry one of them twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{tracing::ContextFields, Local};
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
    /// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
    /// assert_eq!(format!("{fields:?}"), r#"["request_id"]"#);
    /// ```
    #[track_caller]
    pub fn build(self) -> ContextFields {
        let names: Vec<&'static str> = self.entries.iter().map(|(name, _)| *name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(
                !names[..i].contains(name),
                "ContextFields: the field name `{name}` is declared twice"
            );
        }
        // Leaked once per build: a `FieldSet` borrows its names for 'static.
        let names: &'static [&'static str] = Box::leak(names.into_boxed_slice());
        let set = FieldSet::new(names, tracing_core::identify_callsite!(&CALLSITE));
        let entries = self
            .entries
            .into_iter()
            .map(|(name, record)| Entry {
                field: set.field(name).expect("the name was put in the set above"),
                record,
            })
            .collect();
        ContextFields { entries }
    }
}
