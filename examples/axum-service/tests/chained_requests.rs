//! Two services over loopback: A (axum + `ContextLayer`) sets `Tenant` and `RequestId` from its
//! request's headers and calls B, injecting them as `baggage`; B extracts them into the same
//! `#[context_local]` structs for the request it handles. 200 concurrent chained requests, each
//! with its own tricky tenant and request id, must each see exactly their own values on both
//! sides; a hostile `baggage` header sent straight to B gets its valid members applied and its
//! problems reported.
//!
//! One test in this binary on purpose: it checks process-wide counts (`Tenant::local()
//! .contexts()`) that another test running at the same time would disturb.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use context_local_axum_example::chain::{
    check_chain, hostile_baggage, observe, propagator, tricky_request_id, tricky_tenant, Chain,
    RequestId, Tenant, BAGGAGE_ERROR, BAGGAGE_ERRORS, B_PLACES, HOSTILE_ERRORS, X_REQUEST_ID,
    X_TENANT,
};
use context_local_axum_example::client;

const REQUESTS: usize = 200;
const WORKERS: usize = 4;

#[test]
fn two_hundred_concurrent_chained_requests_each_see_only_their_own_baggage() {
    let chain = Chain::start("127.0.0.1:0", "127.0.0.1:0", WORKERS).expect("bind loopback ports");
    let (a, b) = (chain.a.addr(), chain.b.addr());
    assert!(a.ip().is_loopback() && b.ip().is_loopback());

    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // 200 chained requests at once, every one on its own connection to A (and A's to B).
    let replies = clients.block_on(async {
        let fire = async {
            let tasks: Vec<_> = (0..REQUESTS)
                .map(|i| {
                    let (tenant, id) = (tricky_tenant(i), tricky_request_id(i));
                    tokio::spawn(async move {
                        let headers = [(X_TENANT, &*tenant), (X_REQUEST_ID, &*id)];
                        let reply = client::get(a, "/chain", &headers).await;
                        (tenant, id, reply)
                    })
                })
                .collect();
            let mut replies = Vec::new();
            for task in tasks {
                replies.push(task.await.expect("a client task panicked"));
            }
            replies
        };
        tokio::time::timeout(Duration::from_secs(60), fire)
            .await
            .expect("200 chained requests took more than 60 s")
    });

    let mut tenants = HashSet::new();
    let mut ids = HashSet::new();
    let mut b_threads = BTreeSet::new();
    let mut hopped = 0;
    for (tenant, id, reply) in &replies {
        let reply = reply.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        let checked = check_chain(reply, tenant, id).unwrap_or_else(|e| panic!("{id}: {e}"));
        // A: handler, after awaits, end; B: every place it reports.
        assert_eq!(checked.places, 3 + B_PLACES.len());

        // Spelled out once more, independently of `check_chain`: every observation line in A
        // and in B is this request's tenant and id, exactly (no other request's, none missing).
        let own = format!("tenant={tenant:?} request-id={id:?}");
        let mut observations = 0;
        for line in reply.body.lines() {
            let (place, seen) = line.split_once(": ").expect("place: value");
            // (`a.sent` and `b.received` are the encoded header, which never has a `"`.)
            if seen.starts_with("tenant=\"") || seen.starts_with("tenant=unbound") {
                assert_eq!(seen, own, "{place} of {id}");
                observations += 1;
            }
        }
        assert_eq!(observations, 3 + B_PLACES.len());
        // No baggage errors in B.
        assert!(
            reply.body.contains("\nb.baggage-errors: 0\n"),
            "{}",
            reply.body
        );
        assert!(!reply.body.contains("b.baggage-error:"), "{}", reply.body);
        // What travelled is W3C Baggage, percent-encoded, and decodes back to the values.
        let sent = &checked.sent;
        assert!(sent.starts_with("tenant=") && sent.contains(",request-id="));
        assert!(sent.bytes().all(|c| c.is_ascii_graphic()), "{sent}");
        let seen = propagator()
            .extract_headers([sent.as_bytes()])
            .snapshot()
            .run(|| (Tenant::get(), RequestId::get()));
        assert_eq!(
            seen,
            (Some(Tenant(tenant.clone())), Some(RequestId(id.clone())))
        );

        assert!(checked.b_threads.iter().all(|t| t.starts_with("b-")));
        let threads: BTreeSet<_> = checked.b_threads.into_iter().collect();
        hopped += usize::from(threads.len() > 1);
        b_threads.extend(threads);
        assert!(tenants.insert(tenant.clone()) && ids.insert(id.clone()));
    }
    assert_eq!((tenants.len(), ids.len()), (REQUESTS, REQUESTS));
    // The tricky ones really were tricky, and made it.
    for needle in [",", "%", " ", "ü", "🚀", "\"", ";", "="] {
        assert!(tenants.iter().any(|t| t.contains(needle)), "{needle}");
    }

    let (a_stats, b_stats) = (chain.a.stats().clone(), chain.b.stats().clone());
    assert_eq!(a_stats.handled(), REQUESTS as u64);
    assert_eq!(b_stats.handled(), REQUESTS as u64);
    assert!(b_stats.max_in_flight() > 1, "B's handlers never overlapped");
    eprintln!(
        "{REQUESTS} chained replies checked; A's handlers up to {} in flight, B's up to {}; B \
         ran on {b_threads:?}, {hopped} of its handlers changed threads mid-request",
        a_stats.max_in_flight(),
        b_stats.max_in_flight()
    );

    // A hostile `baggage` header straight to B: the valid members apply, each problem is
    // reported, B answers normally.
    let hostile = hostile_baggage();
    let headers: Vec<(&str, &str)> = hostile.iter().map(|h| ("baggage", h.as_str())).collect();
    let reply = clients
        .block_on(client::get(b, "/whoami", &headers))
        .expect("B answers a hostile baggage header");
    assert_eq!(reply.status, 200, "{reply:?}");
    let valid = r#"tenant="hostile but valid" request-id="survivor""#;
    for place in B_PLACES {
        let line = format!("{place}: {valid}");
        assert!(
            reply.body.lines().any(|l| l == line),
            "{line}\n{}",
            reply.body
        );
    }
    let count = HOSTILE_ERRORS.to_string();
    assert_eq!(reply.header(BAGGAGE_ERRORS), Some(count.as_str()));
    let errors: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(name, _)| name == BAGGAGE_ERROR)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(errors.len(), HOSTILE_ERRORS, "{errors:#?}");
    for needle in [
        "`=no-key`",
        "`no-equals`",
        "`request-id=bad%zzpercent`",
        "`bad key=1`",
        "0x22",
        "not UTF-8",
        "4 members dropped",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no error mentions {needle}: {errors:#?}"
        );
    }
    assert!(errors.iter().all(|e| e.len() < 300), "{errors:#?}");

    // Too many members (W3C: at most 64): the first 64 are read, the rest dropped and counted.
    let mut many = vec!["request-id=first".to_string()];
    many.extend((1..100).map(|i| format!("m{i}={i}")));
    many.push("tenant=past-the-limit".into()); // member 101
    let many = many.join(",");
    let reply = clients
        .block_on(client::get(b, "/whoami", &[("baggage", &many)]))
        .expect("B answers 101 members");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .body
            .contains("\ndeep: tenant=unbound request-id=\"first\"\n"),
        "{}",
        reply.body
    );
    assert_eq!(reply.header(BAGGAGE_ERRORS), Some("1"));
    let error = reply.header(BAGGAGE_ERROR).unwrap_or_default();
    assert!(error.contains("37 members dropped"), "{error}");

    // No `baggage` at all: B's handler sees nothing bound (no other request's leftovers).
    let bare = clients
        .block_on(client::get(b, "/whoami", &[]))
        .expect("B answers without baggage");
    assert_eq!(bare.header(BAGGAGE_ERRORS), Some("0"));
    let unbound = "tenant=unbound request-id=unbound";
    for place in B_PLACES {
        let line = format!("{place}: {unbound}");
        assert!(bare.body.lines().any(|l| l == line), "{}", bare.body);
    }

    // And the chain still works after all that.
    let after = clients
        .block_on(client::get(
            a,
            "/chain",
            &[(X_TENANT, "après, 100%"), (X_REQUEST_ID, "last")],
        ))
        .unwrap();
    check_chain(&after, "après, 100%", "last").unwrap();

    // Every request's contexts are gone while both still run: no context anywhere holds a
    // chain value (a blocking job's context is dropped just after it returned: allow a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    let counts = || (Tenant::local().contexts(), RequestId::local().contexts());
    while counts() != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "chain values still bound in {:?} contexts",
            counts()
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // Graceful shutdown of both, within a bound.
    let (took_a, took_b) = chain
        .shutdown(Duration::from_secs(10))
        .expect("both shut down cleanly within 10 s");
    assert!(took_a < Duration::from_secs(10) && took_b < Duration::from_secs(10));
    assert_eq!(
        a_stats.dirty_parks(),
        0,
        "an A worker went idle holding a value"
    );
    assert_eq!(
        b_stats.dirty_parks(),
        0,
        "a B worker went idle holding a value"
    );
    assert_eq!(counts(), (0, 0));
    assert_eq!(observe(), "tenant=unbound request-id=unbound");
}
