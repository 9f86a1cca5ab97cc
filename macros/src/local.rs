//! `#[context_local]`: validation of the annotated item and expansion of its accessors.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, GenericParam, Ident};

use crate::options::Options;

/// The user's struct plus its accessors; on a mistake, the user's item unchanged plus one
/// error per mistake (so nothing else about the item is reported).
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let (options, option_errors) = Options::parse(args);
    let mut out = match validate(item.clone()) {
        Ok(input) => {
            let mut out = item;
            out.extend(accessors(&input, &options));
            out
        }
        Err(e) => {
            let mut out = item;
            out.extend(e.to_compile_error());
            out
        }
    };
    if let Some(e) = option_errors {
        out.extend(e.to_compile_error());
    }
    out
}

/// The item must be a non-generic struct.
fn validate(item: TokenStream) -> syn::Result<DeriveInput> {
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

/// The hidden static, the `ContextLocal` impl and the inherent accessors.
fn accessors(input: &DeriveInput, options: &Options) -> TokenStream {
    let private = options.private_path();
    let ident = &input.ident;
    let constructor = constructor(ident, options, &private);
    let methods = methods(input, options, &private);
    // The `ContextLocal` impl names the user's type with the user's span: a non-`Send` struct
    // gets its one error there. The accessors' impl is bounded by a higher-ranked (so not
    // "trivially false") `ContextLocal` clause, so they add no second error.
    quote! {
        const _: () = {
            static __CONTEXT_LOCAL: #private::Local<#ident> = #constructor;

            impl #private::ContextLocal for #ident {
                #[inline]
                fn local() -> &'static #private::Local<Self> {
                    &__CONTEXT_LOCAL
                }
            }

            #[allow(dead_code)]
            impl #ident
            where
                for<'__context_local> #ident: #private::ContextLocal,
            {
                #methods
            }
        };
    }
}

fn constructor(ident: &Ident, options: &Options, private: &TokenStream) -> TokenStream {
    let name = match &options.name {
        Some(name) => name.value(),
        None => ident.to_string(),
    };
    if let Some(init) = &options.init {
        quote!(#private::Local::with_init(#name, #init))
    } else if let Some(span) = options.default {
        // Spanned at `default`: a struct that is not `Default` is told so right there.
        let ty = Ident::new(&ident.to_string(), span);
        let init = quote_spanned!(span=> <#ty as ::core::default::Default>::default);
        quote!(#private::Local::with_init(#name, #init))
    } else {
        quote!(#private::Local::named(#name))
    }
}

/// One accessor: its documentation and its item.
struct Accessor {
    doc: String,
    item: TokenStream,
}

fn methods(input: &DeriveInput, options: &Options, private: &TokenStream) -> TokenStream {
    let vis = &input.vis;
    let ty = input.ident.to_string();
    let name = options
        .name
        .as_ref()
        .map_or_else(|| ty.clone(), syn::LitStr::value);
    let lazy = if options.init.is_some() || options.default.is_some() {
        format!(" If the current context has no `{ty}` yet, its initial value is bound first.")
    } else {
        String::new()
    };
    let borrowed = format!("Inside `{ty}::with` or `{ty}::with_mut` (the value is borrowed), or during thread exit after this thread's context was destroyed.");
    let list = [
        Accessor {
            doc: format!("Binds `value` as the current context's `{ty}`; a previous value is dropped.\n\n# Panics\n\n{borrowed}"),
            item: quote!(fn set(value: Self) { __CONTEXT_LOCAL.set(value) }),
        },
        Accessor {
            doc: format!("Binds `value` as the current context's `{ty}` and returns the previous one.\n\n# Panics\n\n{borrowed}"),
            item: quote!(fn replace(value: Self) -> ::core::option::Option<Self> { __CONTEXT_LOCAL.replace(value) }),
        },
        Accessor {
            doc: format!("Unbinds the current context's `{ty}` and returns it.\n\n# Panics\n\n{borrowed}"),
            item: quote!(fn take() -> ::core::option::Option<Self> { __CONTEXT_LOCAL.take() }),
        },
        Accessor {
            doc: format!("Whether the current context has a `{ty}` bound."),
            item: quote!(fn is_set() -> bool { __CONTEXT_LOCAL.is_set() }),
        },
        Accessor {
            doc: format!("Calls `f` with the current context's `{ty}`.{lazy}\n\n# Panics\n\nIf no `{ty}` is bound (the message names `{name}`), or inside `{ty}::with_mut`."),
            item: quote!(fn with<R>(f: impl ::core::ops::FnOnce(&Self) -> R) -> R { __CONTEXT_LOCAL.with(f) }),
        },
        Accessor {
            doc: format!("Calls `f` with the current context's `{ty}`, or says why it cannot.{lazy}\n\n# Errors\n\n`AccessError` naming `{name}`: unbound, mutably borrowed, or destroyed (thread exit)."),
            item: quote!(fn try_with<R>(f: impl ::core::ops::FnOnce(&Self) -> R) -> ::core::result::Result<R, #private::AccessError> { __CONTEXT_LOCAL.try_with(f) }),
        },
        Accessor {
            doc: format!("Calls `f` with mutable access to the current context's `{ty}`.{lazy}\n\n# Panics\n\nIf no `{ty}` is bound, or inside `{ty}::with`/`{ty}::with_mut`."),
            item: quote!(fn with_mut<R>(f: impl ::core::ops::FnOnce(&mut Self) -> R) -> R { __CONTEXT_LOCAL.with_mut(f) }),
        },
        Accessor {
            doc: format!("Calls `f` with mutable access to the current context's `{ty}`, or says why it cannot.{lazy}\n\n# Errors\n\n`AccessError` naming `{name}`: unbound, borrowed, or destroyed (thread exit)."),
            item: quote!(fn try_with_mut<R>(f: impl ::core::ops::FnOnce(&mut Self) -> R) -> ::core::result::Result<R, #private::AccessError> { __CONTEXT_LOCAL.try_with_mut(f) }),
        },
        Accessor {
            doc: format!("A clone of the current context's `{ty}`, or `None` if unbound.{lazy}\n\n# Panics\n\nInside `{ty}::with_mut`."),
            item: quote!(fn get() -> ::core::option::Option<Self> where for<'__context_local> Self: ::core::clone::Clone { __CONTEXT_LOCAL.get() }),
        },
        Accessor {
            doc: format!("Drops the current context's `{ty}`, if any.\n\n# Panics\n\n{borrowed}"),
            item: quote!(fn release() { __CONTEXT_LOCAL.release() }),
        },
        Accessor {
            doc: format!("The per-context storage behind `{ty}`: for a `LocalManager`, `for_each` and `contexts`."),
            item: quote!(fn local() -> &'static #private::Local<Self> { &__CONTEXT_LOCAL }),
        },
        Accessor {
            doc: format!("A `LocalProxy` of the current context's `{ty}`, usable in `static`s."),
            item: quote!(const fn proxy() -> #private::LocalProxy<Self> { __CONTEXT_LOCAL.proxy() }),
        },
    ];
    list.into_iter()
        .map(|Accessor { doc, item }| quote!(#[doc = #doc] #[inline] #vis #item))
        .collect()
}
