//! 10,000 threads each bind a value (and push one) and exit: afterwards no value is alive and
//! the process's resident memory has not grown. Run with
//! `cargo run --release --example thread_churn [THREADS] [AT_ONCE]`.

use context_local::{Local, LocalStack};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A value that knows how many of its kind are alive.
struct Payload([u8; 256]);

impl Payload {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Payload([7; 256])
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

static VALUE: Local<Payload> = Local::named("VALUE");
static STACK: LocalStack<Payload> = LocalStack::named("STACK");

/// Resident set size in KiB, from /proc (Linux).
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

fn churn(threads: usize, at_once: usize) {
    for _ in 0..threads.div_ceil(at_once) {
        let handles: Vec<_> = (0..at_once)
            .map(|_| {
                thread::spawn(|| {
                    VALUE.set(Payload::new());
                    STACK.push(Payload::new());
                    assert_eq!(VALUE.with(|p| p.0[0]), 7);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let threads = args.next().unwrap_or(10_000);
    let at_once = args.next().unwrap_or(64);
    // Warm up: the allocator's per-thread arenas and the runtime's tables exist before we measure.
    churn(at_once * 4, at_once);
    let before = rss_kib();
    churn(threads, at_once);
    let after = rss_kib();
    println!(
        "{threads} threads ({at_once} at a time) each bound a value and pushed one, then exited"
    );
    println!("live values after join: {}", LIVE.load(Ordering::SeqCst));
    println!(
        "contexts holding VALUE / STACK: {} / {}",
        VALUE.contexts(),
        STACK.contexts()
    );
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "RSS: {b} KiB before, {a} KiB after: growth {} KiB",
            a as i64 - b as i64
        ),
        _ => println!("RSS: not available on this platform"),
    }
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
}
