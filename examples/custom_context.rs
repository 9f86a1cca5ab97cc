//! Explicit contexts switched by a tiny cooperative scheduler: the Rust form of Werkzeug's
//! greenlet `__ident_func__`. Three tasks interleave on one thread; each step runs inside its
//! task's `Context`, so every task sees only its own locals and stack, although they all share
//! the thread. When a task finishes, dropping its context drops its values.
//!
//! Run with `cargo run --example custom_context`.

use context_local::{context_local, context_stack, Context, ContextId};

/// What a task has done so far: lazily empty in each context.
#[context_local(default)]
#[derive(Default, Clone)]
struct Progress {
    steps: Vec<String>,
}

context_stack! {
    /// The calls a task is inside of, innermost on top; kept across its steps.
    static CALLS: &'static str;
}

/// A green thread: a name, its own context, and a step function called until it says "done".
struct Task {
    name: &'static str,
    ctx: Context,
    step: fn(u32) -> bool,
    n: u32,
}

fn download(n: u32) -> bool {
    match n {
        0 => CALLS.push("download"),
        1 => CALLS.push("retry"),
        2 => drop(CALLS.pop()),
        _ => {}
    }
    record(n);
    n < 3
}

fn parse(n: u32) -> bool {
    if n == 0 {
        CALLS.push("parse");
    }
    record(n);
    n < 1
}

fn upload(n: u32) -> bool {
    if n == 0 {
        CALLS.push("upload");
    }
    record(n);
    n < 2
}

/// Deep inside any task: which task it is comes from the current context.
fn record(n: u32) {
    let at = format!(
        "step {n} in {:?} at {:?}",
        CALLS.top().unwrap_or("-"),
        ContextId::current()
    );
    Progress::with_mut(|p| p.steps.push(at));
}

fn main() {
    let mut tasks = vec![
        Task {
            name: "download",
            ctx: Context::new(),
            step: download,
            n: 0,
        },
        Task {
            name: "parse",
            ctx: Context::new(),
            step: parse,
            n: 0,
        },
        Task {
            name: "upload",
            ctx: Context::new(),
            step: upload,
            n: 0,
        },
    ];
    println!(
        "scheduler runs in {:?}; round-robin over 3 tasks",
        ContextId::current()
    );
    let mut round = 0;
    while !tasks.is_empty() {
        round += 1;
        let mut i = 0;
        while i < tasks.len() {
            let task = &mut tasks[i];
            // The scheduler's whole job: enter the task's context for the duration of a step.
            let more = task.ctx.run(|| (task.step)(task.n));
            task.n += 1;
            if more {
                i += 1;
                continue;
            }
            let done = tasks.remove(i);
            let log = done.ctx.run(Progress::get).unwrap_or_default();
            println!(
                "round {round}: {} finished after {} steps:",
                done.name,
                log.steps.len()
            );
            for s in &log.steps {
                println!("    {s}");
            }
            // Dropping the task drops its context, and with it its Progress and CALLS.
        }
    }
    println!(
        "scheduler's own context never saw a task's values: Progress bound = {}, CALLS depth = {}",
        Progress::is_set(),
        CALLS.len()
    );
    println!(
        "contexts still holding values: {} / {}",
        Progress::local().contexts(),
        CALLS.contexts()
    );
}
