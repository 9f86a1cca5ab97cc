//! Feature `log`: the `ContextFields` declared for `tracing` as key-values of every `log`
//! record, through `ContextLogger` wrapping a capturing logger and env_logger.
//!
//! 200 concurrent requests (each its own context, logging from the request and a child
//! thread) each get exactly their own values; records outside requests none; a record's own
//! key wins; a record the inner logger filters out reads no local; the record's metadata
//! reaches the inner logger unchanged; env_logger prints the fields (and does not without
//! the wrapper: the control); installed globally, the plain macros carry them.
#![cfg(feature = "log")]

use std::cell::Cell;
use std::io;
use std::sync::{Arc, Mutex};

use context_local::tracing::{ContextFields, ContextLogger};
use context_local::{context_local, Context, Local};
use log::kv::{Error, Key, Value, VisitSource};
use log::{Level, Log, Metadata, Record};

/// The request's values, inherited by its children.
#[context_local(inherit)]
#[derive(Clone)]
pub struct Request {
    /// Logged as `request_id`, a number.
    pub id: u64,
    /// Logged as `tenant`, with `Display`.
    pub tenant: String,
}

/// Not inheritable: a child thread never sees it.
static ATTEMPT: Local<u32> = Local::named("ATTEMPT");

thread_local! {
    /// How often the `request_id` field read its local on this thread (tests run in
    /// parallel: a global count would see the others' reads).
    static ID_READS: Cell<usize> = const { Cell::new(0) };
}

fn fields() -> ContextFields {
    ContextFields::builder()
        .value(
            "request_id",
            Request::proxy().map(|r| {
                ID_READS.set(ID_READS.get() + 1);
                &r.id
            }),
        )
        .display("tenant", Request::proxy().map(|r| r.tenant.as_str()))
        .value("attempt", ATTEMPT.proxy())
        .build()
}

/// One captured record: its message, metadata and key-values (`u64`s kept as numbers).
#[derive(Clone, Debug, PartialEq)]
struct Line {
    message: String,
    level: Level,
    target: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    kvs: Vec<(String, Kv)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Kv {
    U64(u64),
    Str(String),
}

/// A logger that keeps every record it is given, at `Info` and above.
#[derive(Default)]
struct Capture(Mutex<Vec<Line>>);

impl Capture {
    fn take(&self) -> Vec<Line> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        struct Kvs(Vec<(String, Kv)>);
        impl<'kvs> VisitSource<'kvs> for Kvs {
            fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
                let value = match value.to_u64() {
                    Some(n) if value.to_borrowed_str().is_none() => Kv::U64(n),
                    _ => Kv::Str(value.to_string()),
                };
                self.0.push((key.to_string(), value));
                Ok(())
            }
        }
        let mut kvs = Kvs(Vec::new());
        record.key_values().visit(&mut kvs).unwrap();
        self.0.lock().unwrap().push(Line {
            message: record.args().to_string(),
            level: record.level(),
            target: record.target().to_owned(),
            module_path: record.module_path().map(str::to_owned),
            file: record.file().map(str::to_owned),
            line: record.line(),
            kvs: kvs.0,
        });
    }

    fn flush(&self) {}
}

/// The `log` macros, `logger:` ones too, drop everything above the global max level, which
/// starts at `Off`; the loggers under test do their own filtering.
fn logger<L: Log>(inner: L) -> ContextLogger<L> {
    log::set_max_level(log::LevelFilter::Trace);
    ContextLogger::new(inner, &fields())
}

fn kv(key: &str, value: Kv) -> (String, Kv) {
    (key.to_owned(), value)
}

#[test]
fn each_request_gets_its_own_values_and_outside_none() {
    let logger = Arc::new(logger(Capture::default()));
    log::info!(logger: logger, "start");
    std::thread::scope(|s| {
        for id in 0..200u64 {
            let logger = Arc::clone(&logger);
            s.spawn(move || {
                Context::new().run(|| {
                    Request::set(Request {
                        id,
                        tenant: format!("t{id}"),
                    });
                    ATTEMPT.set(1);
                    log::info!(logger: logger, "req {id} handler");
                    let child = Arc::clone(&logger);
                    context_local::thread::spawn(move || {
                        log::warn!(logger: child, "req {id} child");
                    })
                    .join()
                    .unwrap();
                });
                log::info!(logger: logger, "after {id}");
            });
        }
    });
    log::info!(logger: logger, "end");

    let lines = logger.inner().take();
    assert_eq!(lines.len(), 2 + 3 * 200);
    let mut right = 0;
    for line in &lines {
        let words: Vec<&str> = line.message.split(' ').collect();
        match words[..] {
            ["start"] | ["end"] | ["after", _] => assert_eq!(line.kvs, [], "{line:?}"),
            ["req", id, place] => {
                let id: u64 = id.parse().unwrap();
                let mut want = vec![
                    kv("request_id", Kv::U64(id)),
                    kv("tenant", Kv::Str(format!("t{id}"))),
                ];
                if place == "handler" {
                    want.push(kv("attempt", Kv::U64(1)));
                }
                assert_eq!(line.kvs, want, "{line:?}");
                right += 1;
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(right, 400);
}

#[test]
fn a_records_own_key_wins_and_comes_first() {
    let logger = logger(Capture::default());
    Context::new().run(|| {
        Request::set(Request {
            id: 3,
            tenant: "acme".into(),
        });
        log::info!(logger: &logger, tenant = "override", user = "ada"; "own keys");
    });
    let lines = logger.inner().take();
    assert_eq!(
        lines[0].kvs,
        [
            kv("tenant", Kv::Str("override".into())),
            kv("user", Kv::Str("ada".into())),
            kv("request_id", Kv::U64(3)),
        ]
    );
}

#[test]
fn metadata_reaches_the_inner_logger_unchanged() {
    let logger = logger(Capture::default());
    let (with, without) = Context::new().run(|| {
        Request::set(Request {
            id: 9,
            tenant: "acme".into(),
        });
        log::error!(logger: &logger, target: "audit", "denied {}", 42);
        let with = logger.inner().take().remove(0);
        Request::take();
        log::error!(logger: &logger, target: "audit", "denied {}", 42);
        (with, logger.inner().take().remove(0))
    });
    assert_eq!(with.message, "denied 42");
    assert_eq!(with.level, Level::Error);
    assert_eq!(with.target, "audit");
    assert_eq!(with.module_path.as_deref(), Some(module_path!()));
    assert_eq!(with.file.as_deref(), Some(file!()));
    assert_eq!(
        with.kvs,
        [
            kv("request_id", Kv::U64(9)),
            kv("tenant", Kv::Str("acme".into()))
        ]
    );
    // The same record with nothing bound is passed through as is: all but the kvs agree.
    assert_eq!(without.kvs, []);
    assert_eq!(with.line.map(|l| l + 3), without.line);
    assert_eq!(
        Line {
            kvs: vec![],
            line: None,
            ..with
        },
        Line {
            line: None,
            ..without
        }
    );
}

#[test]
fn a_record_the_inner_logger_filters_out_reads_no_local() {
    let logger = logger(Capture::default());
    Context::new().run(|| {
        Request::set(Request {
            id: 1,
            tenant: "acme".into(),
        });
        let before = ID_READS.get();
        // The `log` macros check only the global max level (here everything): `debug!`
        // reaches `ContextLogger::log`, whose inner logger takes `Info` and above.
        log::debug!(logger: &logger, "filtered");
        let filtered = ID_READS.get() - before;
        log::info!(logger: &logger, "kept");
        let kept = ID_READS.get() - before - filtered;
        assert_eq!(filtered, 0, "a filtered-out record read the local");
        assert_eq!(kept, 1);
    });
    let lines = logger.inner().take();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].message, "kept");
}

/// A `Write` into a shared buffer, for env_logger's `Target::Pipe`.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn env_logger(out: &Buffer) -> env_logger::Logger {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .format_timestamp(None)
        .target(env_logger::Target::Pipe(Box::new(out.clone())))
        .build()
}

#[test]
fn env_logger_prints_the_fields_and_not_without_the_wrapper() {
    let out = Buffer::default();
    let logger = logger(env_logger(&out));
    let bare = env_logger(&out);
    Context::new().run(|| {
        Request::set(Request {
            id: 7,
            tenant: "acme".into(),
        });
        log::info!(logger: &logger, "handled");
        // The control: the same logger, not wrapped.
        log::info!(logger: &bare, "handled");
    });
    log::info!(logger: &logger, "idle");
    let target = module_path!();
    assert_eq!(
        out.lines(),
        [
            format!("[INFO  {target}] handled request_id=7 tenant=acme"),
            format!("[INFO  {target}] handled"),
            format!("[INFO  {target}] idle"),
        ]
    );
}

#[test]
fn installed_globally_the_plain_macros_carry_the_fields() {
    let out = Buffer::default();
    let inner = env_logger(&out);
    log::set_boxed_logger(Box::new(logger(inner))).unwrap();
    Context::new().run(|| {
        Request::set(Request {
            id: 11,
            tenant: "globex".into(),
        });
        log::info!("handled");
    });
    let target = module_path!();
    assert_eq!(
        out.lines(),
        [format!(
            "[INFO  {target}] handled request_id=11 tenant=globex"
        )]
    );
}
