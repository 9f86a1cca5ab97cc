//! Validation of the item under `#[context_local]`: a non-generic struct. Anything else gets one
//! error naming what it is instead.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::{Data, DeriveInput, GenericParam};

/// The item must be a non-generic struct.
pub(super) fn validate(item: TokenStream) -> syn::Result<DeriveInput> {
    let input: DeriveInput = syn::parse2(item.clone()).map_err(|e| not_an_adt(&item, e))?;
    match &input.data {
        Data::Struct(_) => {}
        Data::Enum(e) => return Err(not_a_struct(e.enum_token.span, "an enum")),
        Data::Union(u) => return Err(not_a_struct(u.union_token.span, "a union")),
    }
    if let Some(param) = input.generics.params.first() {
        let msg = match param {
            GenericParam::Lifetime(_) => format!(
                "#[context_local] struct `{}` cannot have lifetime parameters: a context's value lives as long as the context, so it must be `'static`",
                input.ident
            ),
            _ => format!(
                "#[context_local] struct `{}` cannot be generic: it gets one per-context storage, so its type must be fixed",
                input.ident
            ),
        };
        return Err(syn::Error::new_spanned(&input.generics, msg));
    }
    Ok(input)
}

fn not_a_struct(span: Span, what: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!("#[context_local] goes on a struct, not on {what}: put the value in a struct, e.g. `struct Current(Value);`"),
    )
}

/// Names what the attribute was put on when it is not even an enum or union.
fn not_an_adt(item: &TokenStream, fallback: syn::Error) -> syn::Error {
    const KINDS: &[(&str, &str)] = &[
        ("fn", "a function"),
        ("trait", "a trait"),
        ("impl", "an impl block"),
        ("mod", "a module"),
        ("static", "a static"),
        ("type", "a type alias"),
        ("use", "a use declaration"),
        ("extern", "an extern block"),
    ];
    const MODIFIERS: &[&str] = &["pub", "crate", "async", "unsafe", "default", "safe"];
    let mut saw_const = false;
    for tt in item.clone() {
        let TokenTree::Ident(ident) = tt else {
            continue; // `#`, attribute brackets, `(crate)` of a visibility, ABI strings
        };
        let word = ident.to_string();
        if MODIFIERS.contains(&word.as_str()) {
            continue;
        }
        if word == "const" {
            saw_const = true;
            continue;
        }
        let what = match KINDS.iter().find(|(k, _)| *k == word) {
            Some((_, what)) => *what,
            None if saw_const => "a constant",
            None => return fallback,
        };
        return not_a_struct(ident.span(), what);
    }
    fallback
}
