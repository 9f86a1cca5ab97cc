//! Three worker threads handle six "requests". Each request runs in its own context: it binds
//! the current user, pushes the app it is for, and calls handlers that read both without being
//! passed anything. A `LocalManager` cleans up after every request.
//!
//! Run with `cargo run --example quickstart`.

use context_local::{context_local, context_stack, Context, LocalManager, LocalProxy};
use std::thread;

/// The user of the request being handled (Flask's `g.user`). Explicit-only, as request values
/// should be: binding it outside a request's context (in a worker thread's own, which the
/// thread's next request would see) panics instead of leaking.
#[context_local(explicit_only)]
#[derive(Clone)]
struct User {
    name: String,
}

context_stack! {
    /// The apps handling the current request, innermost on top (Flask's app context stack).
    #[explicit_only]
    static APPS: &'static str;
}

/// Always the current app: a proxy of the stack's top, usable like a global.
static CURRENT_APP: LocalProxy<&'static str> = APPS.proxy();

/// Three calls deep, and nobody passed it the user or the app.
fn render_greeting() -> String {
    let name = User::with(|u| u.name.clone());
    format!("hello {name}, welcome to {CURRENT_APP}")
}

fn audit() -> String {
    // A nested app for one call: pushed, and popped again by `scope`.
    APPS.scope("audit-log", || {
        format!("{CURRENT_APP} sees {} apps on the stack", APPS.len())
    })
}

fn handle(manager: &LocalManager, id: u32, user: &str, app: &'static str) -> String {
    // A fresh context per request: nothing of an earlier request can be seen in it.
    Context::new().run(|| {
        manager.scope(|| {
            User::set(User {
                name: user.to_string(),
            });
            APPS.push(app);
            let worker = thread::current();
            format!(
                "request {id} on {}: {} | {}",
                worker.name().unwrap_or("a worker"),
                render_greeting(),
                audit()
            )
        })
    })
}

fn main() {
    let manager = LocalManager::new([User::local() as _, &APPS as _]);
    let requests = [
        (1, "ada", "shop"),
        (2, "grace", "blog"),
        (3, "linus", "shop"),
        (4, "barbara", "admin"),
        (5, "ken", "blog"),
        (6, "margaret", "admin"),
    ];

    let mut lines: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = requests
            .chunks(2)
            .enumerate()
            .map(|(n, chunk)| {
                let manager = &manager;
                thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn_scoped(s, move || {
                        chunk
                            .iter()
                            .map(|&(id, user, app)| handle(manager, id, user, app))
                            .collect::<Vec<_>>()
                    })
                    .expect("a worker thread starts")
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    lines.sort();

    println!("Each request runs in a fresh context of its own:");
    for line in &lines {
        println!("  {line}");
    }
    // The main thread is a context of its own, untouched by the workers.
    println!(
        "main thread: user bound = {}, current app = {CURRENT_APP}",
        User::is_set()
    );
    println!(
        "contexts still holding a value: User {}, APPS {}",
        User::local().contexts(),
        APPS.contexts()
    );

    // A context id names a *live* context: two at once never share one, and a dropped
    // context's id goes to the next new one. Values belong to the context, not to its id, so
    // the new context starts empty.
    let first = Context::new();
    let second = Context::new();
    let (a, b) = (first.id(), second.id());
    first.run(|| User::set(User { name: "ada".into() }));
    drop(first);
    let third = Context::new();
    println!(
        "context ids: two live contexts are {a} and {b}; once {a} is dropped, a new context gets {} \
         (and none of its values: user bound = {})",
        third.id(),
        third.run(User::is_set)
    );
}
