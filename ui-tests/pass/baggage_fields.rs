//! `#[baggage = "key"]` on fields, with other options and attributes, stays clean under strict
//! lints; named and tuple structs, raw identifiers, a `const`-built propagator in a `static`.
#![deny(warnings, missing_docs, unused_qualifications, clippy::all)]

use std::collections::HashMap;

use context_local::baggage::Propagator;
use context_local::{context_local, Context};

/// A request: tenant and id travel, the rest stays.
#[context_local(name = "REQUEST", inherit)]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// The tenant.
    #[baggage = "tenant"]
    pub tenant: String,
    /// The request id.
    #[allow(clippy::struct_field_names)]
    #[baggage = "request-id"]
    pub r#type: u64,
    /// Stays in this service.
    pub user: Option<String>,
}

/// A tuple struct: the first field travels.
#[context_local]
#[derive(Clone, Debug, PartialEq)]
pub struct Route(#[baggage = "route"] pub String, pub Vec<u8>);

static PROPAGATOR: Propagator = Propagator::of(&[
    Request::local().carried_fields(),
    Route::local().carried_fields(),
]);

fn main() {
    let mut headers = HashMap::new();
    Context::new().run(|| {
        Request::set(Request {
            tenant: "acme".into(),
            r#type: 3,
            user: Some("ada".into()),
        });
        Route::set(Route("/x".into(), vec![1]));
        PROPAGATOR.inject(&mut headers).unwrap();
    });
    assert_eq!(headers["baggage"], "tenant=acme,request-id=3,route=/x");
    let extracted = PROPAGATOR.extract(&headers);
    let (request, route) = extracted.snapshot().run(|| (Request::get(), Route::get()));
    assert_eq!(request.map(|r| (r.tenant, r.r#type, r.user)), Some(("acme".into(), 3, None)));
    assert_eq!(route, Some(Route("/x".into(), Vec::new())));
}
