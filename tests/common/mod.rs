//! Shared helpers: values that count their drops, so every test can prove "exactly once".
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

pub mod poll;

/// Counts live and dropped values of one test.
#[derive(Clone, Default)]
pub struct Tally(Arc<(AtomicUsize, AtomicUsize)>);

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }
    /// A new counted value carrying `n`.
    pub fn make(&self, n: u64) -> Counted {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        Counted {
            n,
            tally: self.clone(),
            dropped: false,
        }
    }
    pub fn created(&self) -> usize {
        self.0 .0.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.0 .1.load(Ordering::SeqCst)
    }
    pub fn live(&self) -> usize {
        self.created() - self.dropped()
    }
    /// Asserts that every value made was dropped (each exactly once: a second drop panics in
    /// `Counted::drop`), reporting both counts at the caller's line otherwise.
    #[track_caller]
    pub fn assert_all_dropped(&self) {
        assert_eq!(
            self.live(),
            0,
            "created {} dropped {}",
            self.created(),
            self.dropped()
        );
    }
}

/// A value whose drop is counted; dropping it twice panics.
pub struct Counted {
    pub n: u64,
    tally: Tally,
    dropped: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        assert!(!self.dropped, "value {} dropped twice", self.n);
        self.dropped = true;
        self.tally.0 .1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.tally.make(self.n)
    }
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counted({})", self.n)
    }
}

/// The message of a caught panic.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        String::from("<non-string panic>")
    }
}

/// Runs `f`, expecting a panic, and returns its message.
pub fn expect_panic<R>(f: impl FnOnce() -> R) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => panic_message(p),
    }
}

/// Runs `f` on a thread of its own and waits at most `secs` seconds for it: a hang fails the
/// test with a message starting with "hang" instead of blocking CI. A panic of `f` is resumed
/// here with its own payload.
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("hang: the test body did not finish within {secs} s"),
    }
}

/// Runs `f`, failing the test with "`what` panicked: MESSAGE" if it panics.
pub fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => panic!("{what} panicked: {}", panic_message(p)),
    }
}

/// Runs the `#[ignore]`d test `name` in a child process (see [`run_child`]) and fails with
/// the end of its output unless it exits successfully within `secs` seconds.
pub fn child_must_succeed(name: &str, env: &str, secs: u64) {
    let out = run_child(name, env, secs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child `{name}` failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        tail(&stdout, 15),
        tail(&stderr, 30)
    );
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Re-runs this test binary for the one `#[ignore]`d test `name`, with the environment
/// variable `env` set, and returns its output (for faults that abort the process). A child
/// still running after `secs` seconds is killed and the test fails with "hang".
pub fn run_child(name: &str, env: &str, secs: u64) -> std::process::Output {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hang: child test `{name}` did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A counted value that runs a closure when dropped, so a test can watch what a `Drop` sees.
pub struct Probe {
    pub n: u64,
    on_drop: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    _counted: Counted,
}

impl Probe {
    /// A probe carrying `n` that calls `on_drop` when dropped.
    pub fn new(t: &Tally, n: u64, on_drop: impl FnOnce() + Send + 'static) -> Self {
        Self {
            n,
            on_drop: std::sync::Mutex::new(Some(Box::new(on_drop))),
            _counted: t.make(n),
        }
    }

    /// A probe that does nothing special when dropped.
    pub fn plain(t: &Tally, n: u64) -> Self {
        Self {
            n,
            on_drop: std::sync::Mutex::new(None),
            _counted: t.make(n),
        }
    }

    /// A probe whose `Drop` panics with "bomb" (unless the thread is already panicking).
    pub fn bomb(t: &Tally, n: u64) -> Self {
        Self::new(t, n, || {
            if !std::thread::panicking() {
                panic!("bomb");
            }
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let f = self
            .on_drop
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(f) = f {
            f();
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Probe({})", self.n)
    }
}

/// What `Drop`s saw, in the order they ran.
#[derive(Clone, Default)]
pub struct Log(Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&self, entry: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.into());
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Keeps `value` for the rest of the process, reachable from a static, so that LeakSanitizer
/// (scripts/sanitize) does not report what a test deliberately keeps forever.
pub fn keep<T: Send + Sync + 'static>(value: T) -> &'static T {
    static KEPT: std::sync::Mutex<Vec<&'static (dyn std::any::Any + Send + Sync)>> =
        std::sync::Mutex::new(Vec::new());
    let kept: &'static T = Box::leak(Box::new(value));
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(kept);
    kept
}

// Where a panic points (for "panics point at the caller's line" checks).

thread_local! {
    /// While [`panic_location`] runs on this thread: where the last panic happened.
    static CAUGHT: RefCell<Option<Option<(String, u32)>>> = const { RefCell::new(None) };
}

/// Runs `f`, which must panic, and returns the file and line the panic reports: a panic hook
/// records it (for other threads' panics, and outside this function, the hook before it runs).
pub fn panic_location<R>(f: impl FnOnce() -> R) -> (String, u32) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| (l.file().to_owned(), l.line()));
            let recorded = CAUGHT.with_borrow_mut(|caught| caught.as_mut().map(|c| *c = location));
            if recorded.is_none() {
                previous(info);
            }
        }));
    });
    CAUGHT.set(Some(None));
    expect_panic(f);
    CAUGHT
        .take()
        .flatten()
        .expect("the panic reports a location")
}

/// Records the current context when dropped (`None` where no context can be current).
pub struct Sees(pub Arc<std::sync::Mutex<Option<context_local::ContextId>>>);

impl Drop for Sees {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = context_local::ContextId::try_current();
    }
}

/// A reader thread parked inside a `for_each` callback (on one context's value) until told to
/// go on. The callback is given by the test; it calls `park()` where it wants to wait.
pub struct Parked {
    go: std::sync::mpsc::Sender<()>,
    join: std::thread::JoinHandle<()>,
}

impl Parked {
    /// Spawns `body(park)`, and returns once `park` has been called (the reader is inside its
    /// callback). `park` waits at most 5 s for `finish`.
    pub fn start(body: impl FnOnce(&mut dyn FnMut()) + Send + 'static) -> Self {
        let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let join = std::thread::spawn(move || {
            let _ = context_local::ContextId::current(); // own context first
            let mut parked = false;
            let mut park = || {
                if parked {
                    return;
                }
                parked = true;
                in_tx.send(()).unwrap();
                let _ = go_rx.recv_timeout(std::time::Duration::from_secs(5));
            };
            body(&mut park);
        });
        in_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the reader never reached its callback");
        Parked { go: go_tx, join }
    }

    /// Lets the reader go on, and joins it.
    pub fn finish(self) {
        let _ = self.go.send(());
        self.join.join().expect("the reader panicked");
    }
}
