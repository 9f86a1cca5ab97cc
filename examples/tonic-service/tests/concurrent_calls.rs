//! 200 concurrent gRPC calls over loopback, each with its own `Caller`: the server's handler
//! sees exactly its call's tenant and request id everywhere (rebuilt from per-field baggage,
//! `user` at its default), 0 wrong — through `InjectLayer` and through `InjectInterceptor`.
//! The controls take one edge away and show the server seeing nothing.

use std::time::Duration;

use context_local_tonic_example::{check, check_seen, driver, fire, Call, Server, Wiring, PLACES};

const CALLS: usize = 200;
const CONTROL_CALLS: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a server (with or without `ExtractLayer`), fires `n` calls through a channel wired
/// as `wiring`, shuts the server down; the calls and what the server saw.
fn run(extract: bool, wiring: Wiring, n: usize) -> (Vec<Call>, Vec<String>) {
    let server = Server::start(extract).expect("bind a loopback port");
    // The client runtime is dropped on return, closing its connections, so that the graceful
    // shutdown below can finish.
    let calls = driver::on_client_runtime(fire(server.addr(), wiring, n, TIMEOUT))
        .expect("the calls complete");
    let seen_wrong = check_seen(&server.seen(), n);
    server.shutdown(Duration::from_secs(10)).unwrap();
    (calls, seen_wrong)
}

#[test]
fn concurrent_calls_through_the_inject_layer_see_only_their_own_values() {
    let (calls, seen_wrong) = run(true, Wiring::InjectLayer, CALLS);
    assert_eq!(calls.len(), CALLS);
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
    // The members travelled one per field, percent-encoded; `user` did not travel.
    let sent = &calls[0].reply.as_ref().unwrap().baggage;
    assert_eq!(sent, "tenant=acme%20corp%20#0,request-id=req%200/%C3%BC");
}

#[test]
fn concurrent_calls_through_the_interceptor_see_only_their_own_values() {
    let (calls, seen_wrong) = run(true, Wiring::Interceptor, CALLS);
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

/// The control for the server side: the baggage arrives, but without `ExtractLayer` every
/// call's handler runs in a worker's own context, where an explicit-only `Caller` is unbound.
#[test]
fn without_the_extract_layer_the_server_sees_nothing() {
    let (calls, seen_wrong) = run(false, Wiring::InjectLayer, CONTROL_CALLS);
    assert_eq!(driver::wrong_replies(&calls, check).len(), CONTROL_CALLS);
    assert_eq!(seen_wrong.len(), CONTROL_CALLS);
    for call in &calls {
        let reply = call.reply.as_ref().expect("the call itself succeeds");
        assert!(reply.baggage.starts_with("tenant="), "{reply:?}");
        let unbound: Vec<String> = PLACES.iter().map(|p| format!("{p}: unbound")).collect();
        assert_eq!(reply.places, unbound);
    }
}

/// The control for the client side: a bare channel sends no baggage, and the server's
/// `ExtractLayer` has nothing to restore.
#[test]
fn without_injection_the_server_sees_nothing() {
    let (calls, seen_wrong) = run(true, Wiring::Bare, CONTROL_CALLS);
    assert_eq!(driver::wrong_replies(&calls, check).len(), CONTROL_CALLS);
    assert_eq!(seen_wrong.len(), CONTROL_CALLS);
    for call in &calls {
        let reply = call.reply.as_ref().expect("the call itself succeeds");
        assert_eq!(reply.baggage, "");
        let unbound: Vec<String> = PLACES.iter().map(|p| format!("{p}: unbound")).collect();
        assert_eq!(reply.places, unbound);
    }
}
