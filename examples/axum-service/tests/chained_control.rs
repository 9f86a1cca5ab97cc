//! The control for `chained_requests.rs`: the same two services, but A's client for B without
//! `InjectLayer`. B then sees none of A's values: every chained reply fails its check.

use std::time::Duration;

use context_local_axum_example::chain::{
    check_chain, tricky_request_id, tricky_tenant, Chain, X_REQUEST_ID, X_TENANT,
};
use context_local_axum_example::client;

const REQUESTS: usize = 20;

#[test]
fn without_the_inject_layer_b_sees_nothing() {
    let chain = Chain::start_without_inject_layer("127.0.0.1:0", "127.0.0.1:0", 2)
        .expect("bind loopback ports");
    let a = chain.a.addr();
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed = clients.block_on(async {
        let mut failed = 0;
        for i in 0..REQUESTS {
            let (tenant, id) = (tricky_tenant(i), tricky_request_id(i));
            let headers = [(X_TENANT, &*tenant), (X_REQUEST_ID, &*id)];
            let reply =
                tokio::time::timeout(Duration::from_secs(30), client::get(a, "/chain", &headers))
                    .await
                    .expect("a chained request took more than 30 s")
                    .expect("A answers");
            let checked = check_chain(&reply, &tenant, &id);
            let error = checked.expect_err("B must not see A's values without the layer");
            assert!(error.contains("unbound"), "{error}");
            failed += 1;
        }
        failed
    });
    assert_eq!(failed, REQUESTS);
    chain.shutdown(Duration::from_secs(10)).unwrap();
}
