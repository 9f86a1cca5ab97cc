//! Rough hot-path figures, ours next to std `thread_local!`, measured in one process.
//! `cargo bench --bench hot_path`. Each figure is the median of 31 samples of 2^20 operations.

use context_local::{Local, LocalStack};
use std::cell::RefCell;
use std::hint::black_box;
use std::time::Instant;

static L: Local<u64> = Local::named("L");
static S: LocalStack<u64> = LocalStack::named("S");

thread_local! {
    static STD_CELL: RefCell<u64> = const { RefCell::new(0) };
    static STD_VEC: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

const OPS: u64 = 1 << 20;

fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..31)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / OPS as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    L.set(1);
    STD_CELL.with_borrow_mut(|v| *v = 1);
    let ours_with = median_ns(|| {
        for i in 0..OPS {
            black_box(L.with(|v| *v + black_box(i)));
        }
    });
    let std_with = median_ns(|| {
        for i in 0..OPS {
            black_box(STD_CELL.with_borrow(|v| *v + black_box(i)));
        }
    });
    let ours_pp = median_ns(|| {
        for i in 0..OPS {
            S.push(black_box(i));
            black_box(S.pop());
        }
    });
    let std_pp = median_ns(|| {
        for i in 0..OPS {
            STD_VEC.with_borrow_mut(|v| v.push(black_box(i)));
            black_box(STD_VEC.with_borrow_mut(|v| v.pop()));
        }
    });
    println!(
        "asymmetric fence: {}",
        context_local::uses_asymmetric_fence()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>7}",
        "op", "ours ns", "std ns", "ratio"
    );
    for (op, ours, std) in [
        ("Local::with (bound)", ours_with, std_with),
        ("push + pop (release-on-pop)", ours_pp, std_pp),
    ] {
        println!("{op:<28} {ours:>10.2} {std:>10.2} {:>7.2}", ours / std);
    }
}
