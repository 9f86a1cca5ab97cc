//! `ContextLogger`: the same [`ContextFields`] as key-values of every `log` record, for
//! `env_logger` and other `log::Log` users (feature `log`).

use std::fmt;

use log::kv::{self, Key, Source, Value, VisitSource};
use log::{Log, Metadata, Record};
use tracing::field::{Field, Visit};

use super::ContextFields;

/// A [`log::Log`] that wraps another (env_logger's, your own) and hands it every record with
/// the bound [`ContextFields`] added as the record's key-values, after the record's own.
///
/// The `log` crate has no hook that adds key-values to every record; wrapping the logger you
/// install is its way to do it. The fields are the ones declared for `tracing`
/// ([`ContextFields`], declared once for both), read where the record is logged, in the
/// context current there: with `ContextLayer` outermost and this crate's spawn helpers, the
/// request's own context in the handler and its children.
///
/// - A field whose local is unbound is left out; a record logged where none is bound reaches
///   the inner logger untouched.
/// - A record's own key-value wins over a context field of the same name (`info!(tenant =
///   "x"; ..)`): the field is not added a second time.
/// - Numbers, booleans and strings declared with [`value`](super::ContextFieldsBuilder::value)
///   keep their type (`log::kv::Value::to_u64` works on them); `display` and `debug` fields
///   arrive as strings.
/// - [`enabled`](Log::enabled) and [`flush`](Log::flush) are the inner logger's: a record the
///   inner logger filters out costs no read of any local.
///
/// The inner logger sees the key-values only if it prints them: for env_logger, enable its
/// `kv` feature.
///
/// # Examples
///
/// ```
/// use context_local::tracing::{ContextFields, ContextLogger};
/// use context_local::{Context, Local};
/// # use std::sync::Mutex;
/// # struct Inner(Mutex<Vec<String>>);
/// # impl log::Log for Inner {
/// #     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
/// #     fn log(&self, record: &log::Record<'_>) {
/// #         struct Kvs(String);
/// #         impl<'kvs> log::kv::VisitSource<'kvs> for Kvs {
/// #             fn visit_pair(&mut self, k: log::kv::Key<'kvs>, v: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
/// #                 self.0 += &format!(" {k}={v}"); Ok(())
/// #             }
/// #         }
/// #         let mut kvs = Kvs(String::new());
/// #         record.key_values().visit(&mut kvs).unwrap();
/// #         self.0.lock().unwrap().push(format!("{}{}", record.args(), kvs.0));
/// #     }
/// #     fn flush(&self) {}
/// # }
/// # let env_logger = Inner(Mutex::new(Vec::new()));
///
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
///
/// // The same declaration that `with_context_fields` takes for `tracing`.
/// let fields = ContextFields::builder().value("request_id", REQUEST_ID.proxy()).build();
/// // In `main`: `log::set_boxed_logger(Box::new(logger))` and `log::set_max_level(..)`,
/// // with e.g. `env_logger::Builder::from_default_env().build()` as the inner logger.
/// let logger = ContextLogger::new(env_logger, &fields);
/// # log::set_max_level(log::LevelFilter::Info);
///
/// Context::new().run(|| {
///     REQUEST_ID.set(7);
///     log::info!(logger: &logger, "handled");
/// });
/// log::info!(logger: &logger, "idle");
/// # let lines = logger.inner().0.lock().unwrap();
/// assert_eq!(*lines, ["handled request_id=7", "idle"]);
/// ```
#[derive(Debug)]
pub struct ContextLogger<L> {
    inner: L,
    fields: ContextFields,
}

impl<L: Log> ContextLogger<L> {
    /// Wraps `inner`; install the result with `log::set_boxed_logger` (and set
    /// `log::set_max_level` from the inner logger's filter, as env_logger's `init` would).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextFields, ContextLogger};
    /// use context_local::Local;
    ///
    /// static TENANT: Local<String> = Local::named("TENANT");
    /// let fields = ContextFields::builder().display("tenant", TENANT.proxy()).build();
    /// let logger = ContextLogger::new(log::logger(), &fields); // wraps any `Log`, here the global one
    /// # let _ = logger;
    /// ```
    pub fn new(inner: L, fields: &ContextFields) -> Self {
        Self {
            inner,
            fields: fields.clone(),
        }
    }

    /// The wrapped logger.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::tracing::{ContextFields, ContextLogger};
    ///
    /// let logger = ContextLogger::new(log::logger(), &ContextFields::builder().build());
    /// assert!(!logger.inner().enabled(&log::Metadata::builder().build()));
    /// ```
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L: Log> Log for ContextLogger<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        // The `log` macros check only the global max level: ask the inner logger first, so
        // a filtered-out record reads no local and allocates nothing.
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let mut collect = Collect {
            own: record.key_values(),
            pairs: Vec::new(),
        };
        self.fields.record(&mut collect);
        if collect.pairs.is_empty() {
            return self.inner.log(record);
        }
        let kvs = Chain {
            own: record.key_values(),
            pairs: &collect.pairs,
        };
        let mut builder = Record::builder();
        builder
            .metadata(record.metadata().clone())
            .args(*record.args())
            .line(record.line())
            .key_values(&kvs);
        // Keep `'static` paths static (a logger may hold on to them), the rest borrowed.
        match record.module_path_static() {
            Some(path) => builder.module_path_static(Some(path)),
            None => builder.module_path(record.module_path()),
        };
        match record.file_static() {
            Some(file) => builder.file_static(Some(file)),
            None => builder.file(record.file()),
        };
        self.inner.log(&builder.build());
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// A context field's value, owned: the local is only borrowed inside its read.
enum Owned {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
}

impl Owned {
    fn value(&self) -> Value<'_> {
        match self {
            Owned::U64(v) => Value::from(*v),
            Owned::I64(v) => Value::from(*v),
            Owned::F64(v) => Value::from(*v),
            Owned::Bool(v) => Value::from(*v),
            Owned::Str(v) => Value::from(v.as_str()),
        }
    }
}

/// Takes the context fields from [`ContextFields::record`], skipping those the record
/// carries itself.
struct Collect<'a> {
    own: &'a dyn Source,
    pairs: Vec<(&'static str, Owned)>,
}

impl Collect<'_> {
    fn push(&mut self, field: &Field, value: Owned) {
        let name = field.name();
        if self.own.get(Key::from_str(name)).is_none() {
            self.pairs.push((name, value));
        }
    }
}

impl Visit for Collect<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Owned::U64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Owned::I64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Owned::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Owned::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Owned::Str(value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `display` fields arrive here as `format_args!("{v}")`, whose Debug is its Display.
        self.push(field, Owned::Str(format!("{value:?}")));
    }
}

/// The record's own key-values, then the context fields.
struct Chain<'a> {
    own: &'a dyn Source,
    pairs: &'a [(&'static str, Owned)],
}

impl Source for Chain<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        self.own.visit(visitor)?;
        for (name, value) in self.pairs {
            visitor.visit_pair(Key::from_str_static(name), value.value())?;
        }
        Ok(())
    }
}
