//! 200 concurrent requests over loopback, each sent from its own context by hyper-util's
//! client behind `InjectLayer`: the actix-web handler, behind `RequestContext::extracting`,
//! sees exactly its request's tenant and id at every place, 0 wrong. The controls take one
//! edge away and show the handler seeing nothing.

use std::time::Duration;

use context_local_actix_example::{check, check_seen, driver, fire, Call, Server, PLACES};

const REQUESTS: usize = 200;
const CONTROL_REQUESTS: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a server (with or without the middleware), fires `n` requests (with or without
/// `InjectLayer`), shuts it down; the replies and what the server saw that was wrong.
fn run(middleware: bool, inject: bool, n: usize) -> (Vec<Call>, Vec<String>) {
    let server = Server::start(middleware).expect("bind a loopback port");
    // The client runtime is dropped on return, closing its connections, so that the graceful
    // shutdown below can finish.
    let calls = driver::on_client_runtime(fire(server.addr(), inject, n, TIMEOUT))
        .expect("the requests complete");
    let seen_wrong = check_seen(&server.seen(), n);
    server.shutdown(Duration::from_secs(10)).unwrap();
    (calls, seen_wrong)
}

fn unbound_places(body: &str) -> bool {
    let places: Vec<&str> = body.lines().take(PLACES.len()).collect();
    let unbound: Vec<String> = PLACES
        .iter()
        .map(|p| format!("{p}: tenant=unbound request-id=unbound"))
        .collect();
    places == unbound
}

#[test]
fn concurrent_requests_see_only_their_own_values() {
    let (calls, seen_wrong) = run(true, true, REQUESTS);
    assert_eq!(calls.len(), REQUESTS);
    let wrong = driver::wrong_replies(&calls, check);
    assert!(
        wrong.is_empty(),
        "{} wrong replies: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert!(
        seen_wrong.is_empty(),
        "{} wrong on the server: {seen_wrong:#?}",
        seen_wrong.len()
    );
}

/// The control: without `RequestContext`, the handler runs in the worker's own context, where
/// the explicit-only locals are unbound, although the baggage arrived.
#[test]
fn without_the_middleware_the_handler_sees_nothing() {
    let (calls, seen_wrong) = run(false, true, CONTROL_REQUESTS);
    assert_eq!(driver::wrong_replies(&calls, check).len(), CONTROL_REQUESTS);
    assert_eq!(seen_wrong.len(), CONTROL_REQUESTS);
    for call in &calls {
        let (status, body) = call.reply.as_ref().expect("the request itself succeeds");
        assert_eq!(*status, 200);
        assert!(unbound_places(body), "{body}");
        // No middleware, so nothing was extracted either.
        assert!(body.ends_with("baggage-errors: no Extracted\n"), "{body}");
    }
}

/// The control for the client side: without `InjectLayer` no baggage is sent, and the
/// middleware has nothing to restore.
#[test]
fn without_the_inject_layer_the_handler_sees_nothing() {
    let (calls, seen_wrong) = run(true, false, CONTROL_REQUESTS);
    assert_eq!(driver::wrong_replies(&calls, check).len(), CONTROL_REQUESTS);
    assert_eq!(seen_wrong.len(), CONTROL_REQUESTS);
    for call in &calls {
        let (status, body) = call.reply.as_ref().expect("the request itself succeeds");
        assert_eq!(*status, 200);
        assert!(unbound_places(body), "{body}");
        assert!(body.ends_with("baggage-errors: 0\n"), "{body}");
    }
}
