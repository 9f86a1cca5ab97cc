//! The expansion of `#[context_local]`: a hidden `static Local<Self>`, the `ContextLocal` impl
//! and the documented inherent accessors. Every accessor that can panic is `#[track_caller]`,
//! like the runtime method it forwards to, so a panic points at the user's call.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{DeriveInput, Ident, LitStr, Visibility};

use super::fields::{self, Fields};
use crate::options::Options;

/// The hidden static, the `ContextLocal` impl and the inherent accessors; with `fields`, the
/// `BaggageFields` impl too.
pub(super) fn accessors(
    input: &DeriveInput,
    options: &Options,
    fields: Option<&Fields>,
) -> TokenStream {
    let private = options.private_path();
    let ident = &input.ident;
    let constructor = inheritable(
        explicit_only(constructor(ident, options, &private), options),
        ident,
        Check::new(options, fields.is_some(), &private),
        &private,
    );
    let methods = methods(input, options, fields, &private);
    let fields = fields.map(|f| fields::expand(f, ident, &private));
    // A non-`Send` struct gets its one error at the struct's name, from the impl of a trait of
    // the expansion whose name says what is wrong: every note then points at the user's code
    // (`ContextLocal`'s own `Send` supertrait would add a note inside the runtime's source).
    // That impl exists even when it is in error, so the clauses below still hold and add no
    // second error: `ContextLocal` is implemented where `Self` is `Send` through it, and the
    // accessors' impl is bounded by a higher-ranked (so not "trivially false") `ContextLocal`
    // clause.
    let send_trait = Ident::new("context_local_values_must_be_send", Span::call_site());
    let mut at_struct = ident.clone();
    at_struct.set_span(ident.span());
    let impl_send = quote_spanned!(ident.span()=> impl #send_trait for #at_struct {});
    quote! {
        const _: () = {
            static __CONTEXT_LOCAL: #private::Local<#ident> = #constructor;

            #[allow(non_camel_case_types)]
            trait #send_trait: ::core::marker::Send + 'static {}
            #impl_send

            #[allow(private_bounds)]
            impl #private::ContextLocal for #ident
            where
                for<'__context_local> #ident: #send_trait,
            {
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

            #fields
        };
    }
}

fn constructor(ident: &Ident, options: &Options, private: &TokenStream) -> TokenStream {
    let name = match &options.name {
        Some(name) => name.value(),
        None => ident.unraw().to_string(),
    };
    if let Some(init) = &options.init {
        quote!(#private::Local::with_init(#name, #init))
    } else if let Some(span) = options.default {
        // Spanned at `default`: a struct that is not `Default` is told so right there.
        let mut ty = ident.clone();
        ty.set_span(span);
        let init = quote_spanned!(span=> <#ty as ::core::default::Default>::default);
        quote!(#private::Local::with_init(#name, #init))
    } else {
        quote!(#private::Local::named(#name))
    }
}

/// `.explicit_only()` after `constructor`, with the option.
fn explicit_only(constructor: TokenStream, options: &Options) -> TokenStream {
    match options.explicit_only {
        Some(_) => quote!(#constructor.explicit_only()),
        None => constructor,
    }
}

/// With `inherit` or `baggage`, the constructor goes through a local `const fn` bounded by what
/// the runtime method needs ([`Check`]) and called at the struct's name: a struct that lacks a
/// trait gets one error per missing trait there, naming the function. Inside it, the method is
/// called on a `T` known to be `ContextLocal` plus those traits, so `Send + 'static` too (the
/// supertraits), and cannot fail; a non-`Send` struct is reported once, by the `Send` check
/// of `accessors`, whose impl still satisfies the bound here.
fn inheritable(
    constructor: TokenStream,
    ident: &Ident,
    check: Option<Check>,
    private: &TokenStream,
) -> TokenStream {
    let Some(Check { name, bounds, call }) = check else {
        return constructor;
    };
    let at_struct = Ident::new(name, ident.span());
    let call_at_struct = quote_spanned!(ident.span()=> #at_struct::<#ident>);
    let name = Ident::new(name, Span::call_site());
    quote! {{
        const fn #name<T: #private::ContextLocal + #bounds>(
            local: #private::Local<T>,
        ) -> #private::Local<T> {
            local.#call
        }
        #call_at_struct(#constructor)
    }}
}

/// The bound check of an inheritable local: the checking function's name, its bounds, the
/// runtime call it makes.
struct Check {
    name: &'static str,
    bounds: TokenStream,
    call: TokenStream,
}

impl Check {
    /// `.baggage("key")` (inheritable too, so `inherit` then adds nothing; the key was checked
    /// when parsed), or `.inheritable()` (also for a struct carried per field: the extracted
    /// value must reach the request's forks), or nothing to check.
    fn new(options: &Options, per_field: bool, private: &TokenStream) -> Option<Check> {
        let clone_sync = quote!(::core::clone::Clone + ::core::marker::Sync);
        if let Some(key) = &options.baggage {
            // `BaggageValue` itself: its blanket impl is `do_not_recommend`, so a struct that
            // is not `Display + FromStr` gets one error naming `BaggageValue` (the trait users
            // know from the docs), with its own message, not one per missing trait.
            return Some(Check {
                name: "baggage_values_must_be_baggage_value_clone_and_sync",
                bounds: quote!(#private::BaggageValue + #clone_sync),
                call: quote!(baggage(#key)),
            });
        }
        if options.inherit.is_none() && !per_field {
            return None;
        }
        Some(Check {
            name: "inheritable_values_must_be_clone_and_sync",
            bounds: clone_sync,
            call: quote!(inheritable()),
        })
    }
}

fn methods(
    input: &DeriveInput,
    options: &Options,
    fields: Option<&Fields>,
    private: &TokenStream,
) -> TokenStream {
    let words = Words::new(input, options, fields);
    let binding = binding(&words);
    let access = access(&words, private);
    let storage = storage(&words, private);
    let all = binding.into_iter().chain(access).chain(storage);
    all.map(|accessor| accessor.into_tokens(&input.vis))
        .collect()
}

/// One accessor: its documentation, when it panics (if it can), and its item.
struct Accessor {
    doc: String,
    /// The `# Panics` section. An accessor that has one is `#[track_caller]`.
    panics: Option<String>,
    item: TokenStream,
}

impl Accessor {
    fn panicking(doc: String, panics: String, item: TokenStream) -> Self {
        let panics = Some(panics);
        Accessor { doc, panics, item }
    }

    fn infallible(doc: String, item: TokenStream) -> Self {
        let panics = None;
        Accessor { doc, panics, item }
    }

    fn into_tokens(self, vis: &Visibility) -> TokenStream {
        let Accessor {
            mut doc,
            panics,
            item,
        } = self;
        let track_caller = panics.map(|panics| {
            doc.push_str("\n\n# Panics\n\n");
            doc.push_str(&panics);
            quote!(#[track_caller])
        });
        quote!(#[doc = #doc] #[inline] #track_caller #vis #item)
    }
}

/// What the accessors' docs say about the struct.
struct Words {
    /// The struct's name.
    ty: String,
    /// The name errors use (`name = "..."`, else the struct's).
    name: String,
    /// A sentence on lazy initialisation, or nothing.
    lazy: String,
    /// When a write panics because the value is borrowed.
    borrowed: String,
    /// A sentence on inheritance (`inherit`, `baggage`), or nothing.
    inherit: String,
    /// A sentence on the baggage key (`baggage`), or nothing.
    baggage: String,
    /// When a binding panics because the local is explicit-only, or nothing.
    explicit: String,
}

impl Words {
    fn new(input: &DeriveInput, options: &Options, fields: Option<&Fields>) -> Self {
        let ty = input.ident.unraw().to_string();
        let name = options
            .name
            .as_ref()
            .map_or_else(|| ty.clone(), LitStr::value);
        let lazy = if options.init.is_some() || options.default.is_some() {
            format!(" If the current context has no `{ty}` yet, its initial value is bound first.")
        } else {
            String::new()
        };
        let borrowed = format!("Inside `{ty}::with` or `{ty}::with_mut` (the value is borrowed).");
        let inherit = if options.inherit.is_some() || options.baggage.is_some() || fields.is_some()
        {
            format!(" `{ty}` is inheritable: a child of this context (`Context::child`, `in_child_context`, `context_local::thread::spawn`) starts with the value bound when the child is made; later writes on either side stay their own.")
        } else {
            String::new()
        };
        let baggage = match (&options.baggage, fields) {
            (Some(key), _) => format!(" It travels to other services as W3C Baggage under the key `{}` with a `baggage::Propagator` that lists it: `Propagator::new().with({ty}::local())`.", key.value()),
            (None, Some(fields)) => {
                let keys: Vec<String> = fields.keys().iter().map(|k| format!("`{k}`")).collect();
                format!(" Its fields marked `#[baggage = \"key\"]` travel to other services as W3C Baggage members of their own ({}) with a `baggage::Propagator` that lists it: `Propagator::new().with_fields({ty}::local())`; the receiving service's `{ty}` is rebuilt from them, its other fields set to `Default::default()`.", keys.join(", "))
            }
            (None, None) => String::new(),
        };
        let explicit = if options.explicit_only.is_some() {
            format!(" In a thread's own context: `{ty}` is explicit-only (`Local::explicit_only`), bound only in a context of its own (or by `{ty}::scope`), never in a context a thread's other work shares.")
        } else {
            String::new()
        };
        Words {
            ty,
            name,
            lazy,
            borrowed,
            inherit,
            baggage,
            explicit,
        }
    }

    /// When `with`/`with_mut` panic: unbound (unless bound lazily), or inside `borrows`.
    fn access_panics(&self, borrows: &str) -> String {
        let Words { ty, name, .. } = self;
        let when = if self.lazy.is_empty() {
            format!("If no `{ty}` is bound, or inside {borrows}")
        } else {
            format!("Inside {borrows}")
        };
        format!("{when}; the message names `{name}`.")
    }
}

/// `set`, `replace`, `take`, `is_set`, `release`.
fn binding(w: &Words) -> [Accessor; 5] {
    let Words {
        ty,
        borrowed,
        inherit,
        explicit,
        ..
    } = w;
    let destroyed = format!(
        "{borrowed} Also during thread exit, after this thread's context was destroyed.{explicit}"
    );
    [
        Accessor::panicking(
            format!("Binds `value` as the current context's `{ty}`; a previous value is dropped.{inherit}"),
            destroyed.clone(),
            quote!(
                fn set(value: Self) {
                    __CONTEXT_LOCAL.set(value)
                }
            ),
        ),
        Accessor::panicking(
            format!("Binds `value` as the current context's `{ty}` and returns the previous one."),
            destroyed,
            quote!(
                fn replace(value: Self) -> ::core::option::Option<Self> {
                    __CONTEXT_LOCAL.replace(value)
                }
            ),
        ),
        Accessor::panicking(
            format!("Unbinds the current context's `{ty}` and returns it."),
            borrowed.clone(),
            quote!(
                fn take() -> ::core::option::Option<Self> {
                    __CONTEXT_LOCAL.take()
                }
            ),
        ),
        Accessor::infallible(
            format!("Whether the current context has a `{ty}` bound."),
            quote!(
                fn is_set() -> bool {
                    __CONTEXT_LOCAL.is_set()
                }
            ),
        ),
        Accessor::panicking(
            format!("Drops the current context's `{ty}`, if any."),
            borrowed.clone(),
            quote!(
                fn release() {
                    __CONTEXT_LOCAL.release()
                }
            ),
        ),
    ]
}

/// `with`, `try_with`, `with_mut`, `try_with_mut`, `get`.
fn access(w: &Words, private: &TokenStream) -> [Accessor; 5] {
    let Words { ty, name, lazy, .. } = w;
    let error = quote!(::core::result::Result<R, #private::AccessError>);
    [
        Accessor::panicking(
            format!("Calls `f` with the current context's `{ty}`.{lazy}"),
            w.access_panics(&format!("`{ty}::with_mut`")),
            quote!(fn with<R>(f: impl ::core::ops::FnOnce(&Self) -> R) -> R { __CONTEXT_LOCAL.with(f) }),
        ),
        Accessor::infallible(
            format!("Calls `f` with the current context's `{ty}`, or says why it cannot.{lazy}\n\n# Errors\n\n`AccessError` naming `{name}`: unbound, mutably borrowed, or destroyed (thread exit)."),
            quote!(fn try_with<R>(f: impl ::core::ops::FnOnce(&Self) -> R) -> #error { __CONTEXT_LOCAL.try_with(f) }),
        ),
        Accessor::panicking(
            format!("Calls `f` with mutable access to the current context's `{ty}`.{lazy}"),
            w.access_panics(&format!("`{ty}::with` or `{ty}::with_mut`")),
            quote!(fn with_mut<R>(f: impl ::core::ops::FnOnce(&mut Self) -> R) -> R { __CONTEXT_LOCAL.with_mut(f) }),
        ),
        Accessor::infallible(
            format!("Calls `f` with mutable access to the current context's `{ty}`, or says why it cannot.{lazy}\n\n# Errors\n\n`AccessError` naming `{name}`: unbound, borrowed, or destroyed (thread exit)."),
            quote!(fn try_with_mut<R>(f: impl ::core::ops::FnOnce(&mut Self) -> R) -> #error { __CONTEXT_LOCAL.try_with_mut(f) }),
        ),
        Accessor::panicking(
            format!("A clone of the current context's `{ty}`, or `None` if unbound.{lazy}"),
            format!("Inside `{ty}::with_mut`."),
            quote!(fn get() -> ::core::option::Option<Self> where for<'__context_local> Self: ::core::clone::Clone { __CONTEXT_LOCAL.get() }),
        ),
    ]
}

/// `local`, `proxy`.
fn storage(w: &Words, private: &TokenStream) -> [Accessor; 2] {
    let Words { ty, baggage, .. } = w;
    [
        Accessor::infallible(
            format!("The per-context storage behind `{ty}`: for a `LocalManager`, `for_each` and `contexts`.{baggage}"),
            quote!(const fn local() -> &'static #private::Local<Self> { &__CONTEXT_LOCAL }),
        ),
        Accessor::infallible(
            format!("A `LocalProxy` of the current context's `{ty}`, usable in `static`s."),
            quote!(const fn proxy() -> #private::LocalProxy<Self> { __CONTEXT_LOCAL.proxy() }),
        ),
    ]
}
