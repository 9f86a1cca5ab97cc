//! `explicit_only` with every other option, in any order, under strict lints; each local still
//! works in a context of its own and refuses a binding in the thread's own.
#![deny(warnings, clippy::all)]

use context_local::{context_local, context_stack, Context};

/// A request id.
#[context_local(explicit_only)]
#[derive(Clone, Debug, PartialEq)]
pub struct RequestId(pub u64);

/// The tenant, inherited by the request's children and sent to other services.
#[context_local(baggage = "tenant", explicit_only, inherit, name = "TENANT")]
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant(pub String);

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Tenant {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Tenant(s.to_owned()))
    }
}

/// Hits of the current request, lazily zero.
#[context_local(default, explicit_only)]
#[derive(Default)]
struct Hits(u32);

context_stack! {
    /// Spans of the current request.
    #[explicit_only]
    pub static SPANS: &'static str;
    #[inherit]
    #[explicit_only]
    static APPS: &'static str;
}

fn main() {
    Context::new().run(|| {
        RequestId::set(RequestId(1));
        Tenant::set(Tenant("acme".into()));
        Hits::with_mut(|h| h.0 += 1);
        SPANS.push("handler");
        APPS.push("shop");
        assert_eq!(Context::child().run(Tenant::get), Some(Tenant("acme".into())));
        assert_eq!(Hits::with(|h| h.0), 1);
    });
    assert!(std::panic::catch_unwind(|| RequestId::set(RequestId(2))).is_err());
    assert!(std::panic::catch_unwind(|| APPS.push("leak")).is_err());
    assert!(!RequestId::is_set() && SPANS.is_empty());
    assert_eq!(Tenant::local().baggage_key(), Some("tenant"));
}
