//! Proc macros of [`context-local`](https://docs.rs/context-local): `#[context_local]` and
//! `context_stack!`. Use them through the `context-local` crate, which documents them.
//!
//! This file holds only the entry points; parsing and expansion live in `options`, `local`
//! and `stack`.

#![forbid(unsafe_code)]

mod local;
mod options;
mod stack;

use proc_macro::TokenStream;

/// Makes a struct a per-context value with static accessors. Documented in `context-local`.
#[proc_macro_attribute]
pub fn context_local(args: TokenStream, item: TokenStream) -> TokenStream {
    local::expand(args.into(), item.into()).into()
}

/// Declares one or more per-context stacks. Documented in `context-local`.
#[proc_macro]
pub fn context_stack(input: TokenStream) -> TokenStream {
    stack::expand(input.into()).into()
}
