//! Jobs on a fixed thread pool must not see the previous job's context. This runs the same six
//! jobs twice on a pool of two workers: first with no cleanup (and watch a job read a tenant
//! that belongs to an earlier job), then with a `LocalManager` around every job and stack
//! guards inside them, which keep every job to itself, even one that panics halfway.
//!
//! Run with `cargo run --example thread_pool`.

use context_local::{context_local, context_stack, LocalManager};
use std::sync::mpsc;
use std::thread;

/// The tenant a job works for, if it set one.
#[context_local]
#[derive(Clone)]
struct Tenant(String);

context_stack! {
    /// What the current job is doing, innermost on top.
    static SPANS: &'static str;
}

/// A job: some set a tenant, some do not (and must then see none), one panics.
#[derive(Clone, Copy)]
struct Job {
    id: u32,
    tenant: Option<&'static str>,
    panics: bool,
}

fn run_job(job: Job) -> String {
    if let Some(t) = job.tenant {
        Tenant::set(Tenant(t.to_string()));
    }
    // The guard pops "billing" when the job ends, also by panicking.
    let _span = SPANS.enter("billing");
    if job.panics {
        panic!("job {} failed halfway", job.id);
    }
    let tenant = Tenant::get().map_or_else(|| "none".to_string(), |t| t.0);
    let wrong = job.tenant.is_none() && tenant != "none";
    format!(
        "job {} billed tenant {tenant:<7} (spans open: {}){}",
        job.id,
        SPANS.len(),
        if wrong {
            "   <-- WRONG: an earlier job's tenant"
        } else {
            ""
        }
    )
}

/// A pool of `workers` threads; job `i` goes to worker `i % workers`, one job at a time, so
/// every run is the same.
fn run_pool(jobs: &[Job], workers: usize, manager: Option<&LocalManager>) -> Vec<String> {
    thread::scope(|s| {
        let (report_tx, report_rx) = mpsc::channel();
        let queues: Vec<mpsc::Sender<Job>> = (0..workers)
            .map(|w| {
                let (tx, rx) = mpsc::channel::<Job>();
                let report_tx = report_tx.clone();
                s.spawn(move || {
                    for job in rx {
                        let outcome = std::panic::catch_unwind(|| match manager {
                            Some(m) => m.scope(|| run_job(job)),
                            None => run_job(job),
                        });
                        let line =
                            outcome.unwrap_or_else(|_| format!("job {} panicked halfway", job.id));
                        report_tx.send(format!("worker {w}: {line}")).unwrap();
                    }
                });
                tx
            })
            .collect();
        jobs.iter()
            .enumerate()
            .map(|(i, job)| {
                queues[i % workers].send(*job).unwrap();
                report_rx.recv().unwrap()
            })
            .collect()
    })
}

fn main() {
    std::panic::set_hook(Box::new(|_| {})); // job 3's panic is expected; its line says so
    let jobs = [
        Job {
            id: 1,
            tenant: Some("acme"),
            panics: false,
        },
        Job {
            id: 2,
            tenant: Some("globex"),
            panics: false,
        },
        Job {
            id: 3,
            tenant: None,
            panics: false,
        },
        Job {
            id: 4,
            tenant: None,
            panics: false,
        },
        Job {
            id: 5,
            tenant: Some("initech"),
            panics: true,
        },
        Job {
            id: 6,
            tenant: None,
            panics: false,
        },
    ];

    println!("Without cleanup, a worker's thread keeps the previous job's tenant:");
    for line in run_pool(&jobs, 2, None) {
        println!("  {line}");
    }

    let manager = LocalManager::new([Tenant::local() as _, &SPANS as _]);
    println!("\nWith a LocalManager around every job (and a guard for the span):");
    for line in run_pool(&jobs, 2, Some(&manager)) {
        println!("  {line}");
    }
}
