//! A writer's wait while other threads iterate its local without pause (issue 10): the wait
//! must be bounded by the reader callback in flight on the writer's own value, not grow with
//! reader traffic. Reported as p99 over many writes, each timed on its own.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use context_local::Local;

use super::{row, Gate, Row};

static L: Local<u64> = Local::named("ITERATED");

/// Busy work of about `ns` nanoseconds.
fn spin(ns: u64) {
    let end = Instant::now() + Duration::from_nanos(ns);
    while Instant::now() < end {
        black_box(());
    }
}

/// p50 and p99 (µs) of `writes` writes done by `write` in this thread's own context while
/// `readers` threads loop `L.for_each` without pause, each callback holding the value for
/// `callback` (a sleep, so that the readers do not compete with the writer for the two cores).
/// The writer's value is the only one: some reader is on it nearly all the time, and with two
/// readers their callbacks overlap, so there is never a moment without a reader.
fn writer_wait(readers: usize, callback: Duration, writes: usize, write: fn(u64)) -> (f64, f64) {
    L.set(0);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    L.for_each(|_, v| {
                        black_box(v);
                        thread::sleep(callback);
                    });
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    let mut times: Vec<f64> = Vec::with_capacity(writes);
    for i in 0..writes as u64 {
        let t = Instant::now();
        write(i);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        spin(20_000);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    L.release();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    if std::env::var_os("ITER_DEBUG").is_some() {
        eprintln!(
            "readers {readers}: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} us; >1us: {}",
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            at(1.0),
            times.iter().filter(|&&t| t > 1.0).count()
        );
    }
    (at(0.5), at(0.99))
}

fn with_mut(i: u64) {
    L.with_mut(|v| *v = black_box(i));
}

fn set(i: u64) {
    L.set(black_box(i));
}

pub(crate) fn iteration(rows: &mut Vec<Row>) {
    const CALLBACK: Duration = Duration::from_micros(50);
    const WRITES: usize = 2_000;
    let (_, one) = writer_wait(1, CALLBACK, WRITES, with_mut);
    let (p50, two) = writer_wait(2, CALLBACK, WRITES, with_mut);
    let (_, set_two) = writer_wait(2, CALLBACK, WRITES, set);
    rows.push(Row {
        op: "with_mut wait, 2 readers looping (p50)".into(),
        ours: p50,
        peer: None,
        gate: Gate::None,
        unit: "us",
    });
    rows.push(Row {
        unit: "us",
        ..row(
            "with_mut wait, 2 readers looping (p99)",
            two,
            "the same, 1 reader (p99)",
            one,
            Gate::AtMost(2.0),
        )
    });
    rows.push(Row {
        op: "set wait, 2 readers looping (p99)".into(),
        ours: set_two,
        peer: None,
        gate: Gate::None,
        unit: "us",
    });
}
