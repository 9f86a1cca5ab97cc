//! Parsing of `context_stack!`'s declarations, with recovery: every mistake is pushed to
//! `errors`, and a declaration that is still understood is kept.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::parse::ParseStream;
use syn::{bracketed, AttrStyle, Attribute, Ident, Token, Type, Visibility};

use super::Decl;
use crate::errors::Errors;
use crate::options::{Options, STACK};

pub(super) fn parse_all(input: ParseStream<'_>, decls: &mut Vec<Decl>, errors: &mut Errors) {
    if input.is_empty() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "context_stack! needs a declaration: `static NAME: Type;`",
        ));
        return;
    }
    while !input.is_empty() {
        let name = match parse_decl(input, errors) {
            Ok(decl) => {
                let name = decl.ident.to_string();
                decls.push(decl);
                name
            }
            Err(e) => {
                errors.push(e);
                skip_past_semicolon(input);
                continue;
            }
        };
        if input.is_empty() || input.parse::<Option<Token![;]>>().ok().flatten().is_some() {
            continue;
        }
        // Leave the stray tokens in place: they are most likely the next declaration.
        errors.push(syn::Error::new(
            input.span(),
            format!("expected `;` after the declaration of `{name}`"),
        ));
    }
}

fn parse_decl(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Decl> {
    let (attrs, options) = parse_attrs(input, errors)?;
    let vis: Visibility = input.parse()?;
    let static_token = parse_static(input, errors)?;
    let ident: Ident = input.parse()?;
    let ty = parse_type(input, &ident)?;
    reject_initializer(input, errors);
    Ok(Decl {
        attrs,
        options,
        vis,
        static_token,
        ident,
        ty,
    })
}

/// The attributes before a declaration: its options (`#[inherit]`, `#[crate = path]`) are
/// parsed, with their mistakes pushed to `errors`; every other attribute is kept for the static.
fn parse_attrs(
    input: ParseStream<'_>,
    errors: &mut Errors,
) -> syn::Result<(Vec<Attribute>, Options)> {
    let mut attrs = Vec::new();
    let mut options = Options::default();
    while input.peek(Token![#]) {
        let pound_token = input.parse()?;
        let content;
        let bracket_token = bracketed!(content in input);
        if Options::is_option(STACK, &content) {
            if let Err(e) = options.parse_attribute(STACK, &content) {
                errors.push(e);
            }
            continue;
        }
        attrs.push(Attribute {
            pound_token,
            style: AttrStyle::Outer,
            bracket_token,
            meta: content.parse()?,
        });
    }
    Ok((attrs, options))
}

/// `static`, and a `mut` after it is reported (and ignored).
fn parse_static(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Token![static]> {
    if !input.peek(Token![static]) {
        return Err(syn::Error::new(
            input.span(),
            "expected `static`: declare a stack as `static NAME: Type;`",
        ));
    }
    let static_token = input.parse()?;
    if let Some(m) = input.parse::<Option<Token![mut]>>()? {
        errors.push(syn::Error::new(
            m.span,
            "a context stack cannot be `static mut`: it is changed with `push`/`pop` through a shared reference; remove `mut`",
        ));
    }
    Ok(static_token)
}

fn parse_type(input: ParseStream<'_>, ident: &Ident) -> syn::Result<Type> {
    let missing = |span| {
        syn::Error::new(
            span,
            format!("missing type: declare the stack as `static {ident}: Type;`"),
        )
    };
    let Some(colon) = input.parse::<Option<Token![:]>>()? else {
        return Err(missing(ident.span()));
    };
    if input.is_empty() || input.peek(Token![;]) || input.peek(Token![=]) {
        return Err(missing(colon.span));
    }
    input.parse()
}

/// `= ...` is reported (and skipped).
fn reject_initializer(input: ParseStream<'_>, errors: &mut Errors) {
    if input.peek(Token![=]) {
        let initializer = take_until_semicolon(input);
        errors.push(syn::Error::new_spanned(
            initializer,
            "a context stack takes no initializer: every context starts with an empty stack; remove `= ...`",
        ));
    }
}

fn take_until_semicolon(input: ParseStream<'_>) -> TokenStream {
    let mut taken = TokenStream::new();
    while !input.is_empty() && !input.peek(Token![;]) {
        match input.parse::<TokenTree>() {
            Ok(tt) => taken.extend([tt]),
            Err(_) => break,
        }
    }
    taken
}

fn skip_past_semicolon(input: ParseStream<'_>) {
    take_until_semicolon(input);
    let _ = input.parse::<Option<Token![;]>>();
}
