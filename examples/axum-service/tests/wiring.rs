//! Wrong wiring, with and without explicit-only locals, over loopback against real axum servers
//! (4 workers, 200 concurrent requests each):
//!
//! - no `ContextLayer`: the middleware's `set` runs in a worker thread's own context;
//! - `ContextLayer` in the wrong place (axum's `.layer` order is reversed: the *last* call is
//!   the outermost layer), so the middleware runs outside it.
//!
//! With an explicit-only local both fail loudly at the first request: its `set` panics, naming
//! the local and `ContextLayer`, no reply is a wrong one, and no worker keeps a request value.
//! With a plain local (the control) they keep their documented behaviour: replies carry other
//! requests' values and the workers keep the last request's value in their own contexts. The
//! right wiring (`ContextLayer` last) serves every request right with the explicit-only local.
//!
//! One test in this binary on purpose: it installs a panic hook and counts process-wide.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request as HttpRequest;
use axum::middleware::{self, Next};
use axum::routing::get;
use axum::Router;
use context_local::tower::ContextLayer;
use context_local::{thread, Local};
use context_local_axum_example::client;

const REQUESTS: usize = 200;
const WORKERS: usize = 4;

static EXPLICIT: Local<String> = Local::named("EXPLICIT").explicit_only();
static PLAIN: Local<String> = Local::named("PLAIN");

/// Panic messages of the servers' worker threads.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wiring {
    /// No `ContextLayer` at all.
    Without,
    /// `ContextLayer` added before the middleware: inside it.
    Misplaced,
    /// `ContextLayer` added last: outermost.
    Right,
}

fn router(local: &'static Local<String>, wiring: Wiring) -> Router {
    // The handler reads the request's id after yielding, as real handlers do around I/O.
    let handler = move || async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        local.get().unwrap_or_else(|| "<unbound>".into())
    };
    let set = move |request: HttpRequest, next: Next| async move {
        let id = request.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        local.set(id);
        next.run(request).await
    };
    let routes = Router::new().route("/", get(handler));
    match wiring {
        Wiring::Without => routes.layer(middleware::from_fn(set)),
        Wiring::Misplaced => routes
            .layer(ContextLayer::new())
            .layer(middleware::from_fn(set)),
        Wiring::Right => routes
            .layer(middleware::from_fn(set))
            .layer(ContextLayer::new()),
    }
}

/// What a run of 200 concurrent requests came to.
#[derive(Debug)]
struct Outcome {
    /// Replies with the request's own id.
    right: usize,
    /// Replies with another request's id (or none).
    wrong: usize,
    /// Requests that got no reply: the connection failed (the server's task panicked).
    failed: usize,
    /// How often a worker parked with a request value in its own context.
    dirty_parks: u64,
}

fn serve_and_fire(local: &'static Local<String>, wiring: Wiring) -> Outcome {
    let dirty = Arc::new(AtomicU64::new(0));
    let parks = Arc::clone(&dirty);
    let name = local.name();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("tokio-rt-worker")
        .on_thread_park(move || {
            if thread::bound_in_own_context().contains(&name) {
                parks.fetch_add(1, Ordering::SeqCst);
            }
        })
        .enable_all()
        .build()
        .unwrap();
    let listener = server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    server.spawn(async move { axum::serve(listener, router(local, wiring)).await });

    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let replies = clients.block_on(async {
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|i| {
                tokio::spawn(async move {
                    let id = format!("req-{i}");
                    let reply = client::get(addr, "/", &[("x-request-id", &id)]).await;
                    (id, reply)
                })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    });
    server.shutdown_timeout(Duration::from_secs(5));

    let (mut right, mut wrong, mut failed) = (0, 0, 0);
    for (id, reply) in replies {
        match reply {
            Ok(reply) if reply.status == 200 && reply.body == id => right += 1,
            Ok(reply) if reply.status == 200 => wrong += 1,
            _ => failed += 1,
        }
    }
    Outcome {
        right,
        wrong,
        failed,
        dirty_parks: dirty.load(Ordering::SeqCst),
    }
}

fn panics_about(name: &str) -> Vec<String> {
    let needle = format!("`{name}`");
    let panics = PANICS.lock().unwrap();
    panics
        .iter()
        .filter(|m| m.contains(&needle))
        .cloned()
        .collect()
}

#[test]
fn wrong_wiring_fails_loudly_with_explicit_only_locals_and_silently_without() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        if msg.contains("context local") {
            PANICS.lock().unwrap().push(msg);
        } else {
            previous(info);
        }
    }));

    for wiring in [Wiring::Without, Wiring::Misplaced] {
        // Explicit-only: every request fails at the middleware's `set`, none is served a wrong
        // value, no worker keeps one.
        PANICS.lock().unwrap().clear();
        let loud = serve_and_fire(&EXPLICIT, wiring);
        eprintln!("{wiring:?}, explicit-only: {loud:?}");
        assert_eq!(
            (loud.right, loud.wrong, loud.failed),
            (0, 0, REQUESTS),
            "{wiring:?}: {loud:?}"
        );
        assert_eq!(loud.dirty_parks, 0, "{wiring:?}");
        let panics = panics_about("EXPLICIT");
        assert_eq!(panics.len(), REQUESTS, "one panic per request ({wiring:?})");
        let msg = &panics[0];
        assert!(msg.contains("`EXPLICIT` is explicit-only"), "{msg}");
        assert!(msg.contains("this thread's own"), "{msg}");
        assert!(msg.contains("ContextLayer"), "{msg}");
        assert!(msg.contains("last in axum's `.layer` chain"), "{msg}");
        assert!(msg.contains("runtime worker"), "{msg}");

        // Control, a plain local: served, silently wrong, and the workers keep the values.
        let silent = serve_and_fire(&PLAIN, wiring);
        eprintln!("{wiring:?}, plain local: {silent:?}");
        assert_eq!(silent.failed, 0, "{wiring:?}: {silent:?}");
        assert!(panics_about("PLAIN").is_empty());
        assert!(silent.dirty_parks > 0, "{wiring:?}: {silent:?}");
        if wiring == Wiring::Without {
            assert!(
                silent.wrong > 0,
                "200 concurrent requests, each yielding between set and read on 4 workers \
                 sharing their own contexts: {silent:?}"
            );
        }
    }

    // The right wiring: every request right, nothing left on the workers, no panic.
    PANICS.lock().unwrap().clear();
    let right = serve_and_fire(&EXPLICIT, Wiring::Right);
    eprintln!("Right, explicit-only: {right:?}");
    assert_eq!((right.right, right.dirty_parks), (REQUESTS, 0), "{right:?}");
    assert!(panics_about("EXPLICIT").is_empty());
    assert_eq!(EXPLICIT.contexts(), 0);
}
