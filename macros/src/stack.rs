//! `context_stack!`: parsing of `static` declarations and their expansion.
//!
//! Grammar: `(#[attr]* vis static NAME: Type);*` with an optional final `;`. A mistake in one
//! declaration is reported once, spanned at the offending tokens; where the declaration is
//! still understood (`static mut`, an initializer) its static is generated anyway, so code that
//! uses it reports nothing more.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Token, Type, Visibility};

use crate::options::Errors;

struct Decl {
    attrs: Vec<Attribute>,
    vis: Visibility,
    static_token: Token![static],
    ident: Ident,
    ty: Type,
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let mut decls = Vec::new();
    let mut errors = Errors::default();
    let parser = |stream: ParseStream<'_>| {
        parse_all(stream, &mut decls, &mut errors);
        Ok(())
    };
    if let Err(e) = parser.parse2(input) {
        errors.push(e);
    }
    let mut out: TokenStream = decls.iter().map(expand_decl).collect();
    if let Some(e) = errors.into_error() {
        out.extend(e.to_compile_error());
    }
    out
}

fn parse_all(input: ParseStream<'_>, decls: &mut Vec<Decl>, errors: &mut Errors) {
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
    let attrs = input.call(Attribute::parse_outer)?;
    let vis: Visibility = input.parse()?;
    if !input.peek(Token![static]) {
        return Err(syn::Error::new(
            input.span(),
            "expected `static`: declare a stack as `static NAME: Type;`",
        ));
    }
    let static_token: Token![static] = input.parse()?;
    if let Some(m) = input.parse::<Option<Token![mut]>>()? {
        errors.push(syn::Error::new(
            m.span,
            "a context stack cannot be `static mut`: it is changed with `push`/`pop` through a shared reference; remove `mut`",
        ));
    }
    let ident: Ident = input.parse()?;
    let ty = parse_type(input, &ident)?;
    if input.peek(Token![=]) {
        let initializer = take_until_semicolon(input);
        errors.push(syn::Error::new_spanned(
            initializer,
            "a context stack takes no initializer: every context starts with an empty stack; remove `= ...`",
        ));
    }
    Ok(Decl {
        attrs,
        vis,
        static_token,
        ident,
        ty,
    })
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

fn expand_decl(decl: &Decl) -> TokenStream {
    let Decl {
        attrs,
        vis,
        static_token,
        ident,
        ty,
    } = decl;
    let private = quote!(::context_local::__private);
    let name = ident.to_string();
    // Spanned at the user's type: a non-`Send` element type gets its one error there, and
    // the note names a function that says what is wrong.
    let check = quote_spanned!(ty.span()=> stack_values_must_be_send::<#ty>);
    let assert_send = quote! {
        const _: () = {
            fn stack_values_must_be_send<T: ?::core::marker::Sized + ::core::marker::Send + 'static>() {}
            let _ = #check;
        };
    };
    quote! {
        #(#attrs)*
        #vis #static_token #ident: #private::LocalStack<#ty> = #private::LocalStack::named(#name);
        #assert_send
    }
}
