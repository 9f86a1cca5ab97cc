//! Raw identifiers as names: the macros do not panic, and names and errors use the plain name.
#![deny(warnings, missing_docs, clippy::all)]
#![allow(non_camel_case_types, non_upper_case_globals)]

use context_local::{context_local, context_stack};

/// Lazily `Default`: the initial value is spanned at `default`.
#[context_local(default)]
#[derive(Default)]
pub struct r#type(pub u8);

context_stack!(
    /// A stack with a raw name.
    pub static r#static: u8
);

fn main() {
    assert_eq!(r#type::with(|t| t.0), 0);
    assert_eq!(r#type::local().name(), "type");
    assert_eq!(r#static.name(), "static");
}
