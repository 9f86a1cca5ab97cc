//! `baggage` combines with every other option, and the generated code stays clean under strict
//! lints; the values really travel through a propagator and are inherited.
#![deny(warnings, missing_docs, unused_qualifications, clippy::all)]

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use context_local::baggage::Propagator;
use context_local::{context_local, Context};

mod facade {
    pub use context_local as cl;
}

/// The current tenant: lazily "public", carried as `tenant`, inheritable twice over.
#[context_local(baggage = "tenant", init = public, inherit, name = "TENANT", crate = crate::facade::cl)]
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant(pub String);

fn public() -> Tenant {
    Tenant("public".into())
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tenant {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Tenant(s.to_owned()))
    }
}

/// Lazily zero, carried as `hops` (`u32` errors are `Display`).
#[context_local(default, baggage = "hops")]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Hops(pub u32);

impl fmt::Display for Hops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Hops {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Hops)
    }
}

/// Private and unused, with an unusual but valid key: no warning.
#[context_local(baggage = "x-Unused_key.v1~")]
#[derive(Clone)]
struct Unused(u8);

impl fmt::Display for Unused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Unused {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Unused)
    }
}

fn main() {
    assert_eq!(Tenant::local().name(), "TENANT");
    assert_eq!(Tenant::local().baggage_key(), Some("tenant"));
    let propagator = Propagator::new().with(Tenant::local()).with(Hops::local());
    Tenant::set(Tenant("acme".into()));
    Hops::with_mut(|h| h.0 += 1);
    let mut headers = HashMap::new();
    propagator.inject(&mut headers).unwrap();
    assert_eq!(headers["baggage"], "tenant=acme,hops=1");
    let extracted = Context::new().run(|| propagator.extract(&headers));
    assert!(extracted.errors().is_empty());
    let seen = extracted.snapshot().run(|| (Tenant::get(), Hops::get()));
    assert_eq!(seen, (Some(Tenant("acme".into())), Some(Hops(1))));
    let child = Context::child().run(|| Tenant::with(|t| t.0.clone()));
    assert_eq!(child, "acme");
    assert_eq!(Context::new().run(Tenant::get), Some(public()));
}
