//! `context_stack!`: `static` declarations are parsed (`parse`), then each becomes a
//! `static LocalStack<T>` (`expand`).
//!
//! Grammar: `(#[attr]* vis static NAME: Type);*` with an optional final `;`, where the
//! attributes may include the declaration's options (`#[inherit]`, `#[crate = path]`), which
//! are consumed. A mistake in one declaration is reported once, spanned at the offending tokens;
//! where the declaration is still understood (`static mut`, an initializer, a bad option) its
//! static is generated anyway, so code that uses it reports nothing more.

mod expand;
mod parse;

use proc_macro2::TokenStream;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Ident, Token, Type, Visibility};

use crate::errors::Errors;
use crate::options::Options;

/// One declaration, as understood.
struct Decl {
    /// The attributes to keep (doc comments, `#[allow]`, `#[cfg]`, ...).
    attrs: Vec<Attribute>,
    /// The options given as attributes, which are not kept.
    options: Options,
    vis: Visibility,
    static_token: Token![static],
    ident: Ident,
    ty: Type,
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let mut decls = Vec::new();
    let mut errors = Errors::default();
    let parser = |stream: ParseStream<'_>| {
        parse::parse_all(stream, &mut decls, &mut errors);
        Ok(())
    };
    if let Err(e) = parser.parse2(input) {
        errors.push(e);
    }
    let mut out: TokenStream = decls.iter().map(expand::expand_decl).collect();
    if let Some(e) = errors.into_error() {
        out.extend(e.to_compile_error());
    }
    out
}
