//! The threaded HTTP server example under load: 200 concurrent requests from 8 client threads,
//! each with its own request id and user, answered by handlers that read them from context
//! locals several calls deep. No response may carry another request's data, and afterwards
//! nothing is left in any worker's context.

#[path = "../examples/http_server/server.rs"]
#[allow(dead_code)]
mod server;

use context_local::LocalStack;
use server::{get, Request, Server, APPS};

#[test]
fn two_hundred_concurrent_requests_see_only_their_own_context() {
    let server = Server::start("127.0.0.1:0", 4).expect("bind a loopback port");
    let addr = server.addr();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = format!("c{c}-r{i}");
                    let user = format!("user-{c}-{i}");
                    let path = if i % 5 == 0 { "/admin" } else { "/whoami" };
                    let (status, body) =
                        get(addr, path, &[("X-Request-Id", &id), ("X-User", &user)])
                            .expect("a response");
                    assert_eq!(status, 200, "{body}");
                    assert!(
                        body.contains(&format!("request-id: {id}\n")),
                        "cross-talk: {id} got\n{body}"
                    );
                    assert!(
                        body.contains(&format!("user: {user}\n")),
                        "cross-talk: {user} got\n{body}"
                    );
                    let app = if path == "/admin" { "admin" } else { "shop" };
                    assert!(body.contains(&format!("app: {app}\n")), "{body}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    // A handler that panics gets a 500, and its request is cleaned up like any other.
    assert_eq!(get(addr, "/panic", &[]).unwrap().0, 500);
    assert_eq!(
        get(addr, "/nope", &[]).unwrap(),
        (404, "no page for GET /nope\n".to_string())
    );

    let reports = server.shutdown();
    assert_eq!(reports.iter().map(|r| r.handled).sum::<u64>(), 202);
    assert!(
        reports.iter().all(|r| !r.leftovers),
        "a worker kept request state: {reports:?}"
    );
    // Every per-request context is gone, and the workers have exited.
    assert_eq!(Request::local().contexts(), 0);
    assert_eq!(LocalStack::contexts(&APPS), 0);
}
