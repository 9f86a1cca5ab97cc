//! Several worker threads handle "requests". Each request runs in its own context, pushes the
//! app it is for onto a stack, binds the current user, and calls handlers that read both
//! without being passed anything. A `LocalManager` cleans up after every request, so the next
//! request on the same worker starts clean.
//!
//! Run with `cargo run --example quickstart`.

use context_local::{Context, ContextId, Local, LocalManager, LocalProxy, LocalStack};
use std::sync::mpsc;
use std::thread;

/// The user of the request being handled.
static USER: Local<String> = Local::named("USER");
/// The apps handling the current request, innermost on top (Flask's app context stack).
static APPS: LocalStack<&'static str> = LocalStack::named("APPS");
/// Always the current app: a proxy of the stack's top, usable like a global.
static CURRENT_APP: LocalProxy<&'static str> = APPS.proxy();

struct Request {
    id: u32,
    user: &'static str,
    app: &'static str,
}

/// Three calls deep, and nobody passed it the user or the app.
fn render_greeting() -> String {
    let greeting = USER.with(|u| format!("hello {u}"));
    format!("{greeting}, welcome to {CURRENT_APP}")
}

fn audit() -> String {
    // A nested app for one call: pushed and popped by `scope`.
    APPS.scope("audit-log", || {
        format!("{} (apps on the stack: {})", CURRENT_APP, APPS.len())
    })
}

fn handle(manager: &LocalManager, req: &Request) -> String {
    // A fresh context per request: nothing from an earlier request can be seen in it.
    let ctx = Context::new();
    ctx.run(|| {
        manager.scope(|| {
            USER.set(req.user.to_string());
            APPS.push(req.app);
            format!(
                "request {:>2} in context {}: {} | audit: {}",
                req.id,
                ContextId::current(),
                render_greeting(),
                audit()
            )
        })
    })
}

fn main() {
    let manager = LocalManager::new([&USER as _, &APPS as _]);
    let requests = [
        Request {
            id: 1,
            user: "ada",
            app: "shop",
        },
        Request {
            id: 2,
            user: "grace",
            app: "blog",
        },
        Request {
            id: 3,
            user: "linus",
            app: "shop",
        },
        Request {
            id: 4,
            user: "barbara",
            app: "admin",
        },
        Request {
            id: 5,
            user: "ken",
            app: "blog",
        },
        Request {
            id: 6,
            user: "margaret",
            app: "admin",
        },
    ];

    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        for (worker, chunk) in requests.chunks(2).enumerate() {
            let (tx, manager) = (tx.clone(), &manager);
            s.spawn(move || {
                for req in chunk {
                    let line = handle(manager, req);
                    tx.send(format!("worker {worker} | {line}")).unwrap();
                }
                // After cleanup nothing is left in this worker's own context either.
                assert!(!USER.is_set() && APPS.is_empty());
            });
        }
    });
    drop(tx);
    let mut lines: Vec<String> = rx.into_iter().collect();
    lines.sort_by_key(|l| l.split("request").nth(1).map(str::to_owned));
    println!("Each request runs in a fresh context; a context's id is reused once it is gone.");
    for line in &lines {
        println!("{line}");
    }

    // The main thread is a context of its own, untouched by the workers.
    println!(
        "main thread: USER bound = {}, CURRENT_APP = {CURRENT_APP}",
        USER.is_set()
    );
    println!(
        "values still held anywhere: USER in {} contexts, APPS in {}",
        USER.contexts(),
        APPS.contexts()
    );
}
