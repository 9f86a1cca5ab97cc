//! Per-field baggage: `#[baggage = "key"]` on fields of a `#[context_local]` struct sends
//! those fields as members of their own (`tenant=acme,request-id=r-3`) and rebuilds the struct
//! from them on the receiving side, the other fields from `Default::default()`.
//!
//! [`take`] finds and strips the field attributes (they are not attributes rustc knows) and
//! reports each mistake once, at its tokens; [`expand`] generates the `BaggageFields` impl and
//! one bound check per field, spanned at the field's type, so that a type that cannot travel
//! or cannot be defaulted gets exactly one error, there.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, ExprLit, Ident, Lit, LitStr, Member, Meta};

use crate::errors::Errors;
use crate::options::baggage_key;

/// A struct's fields, split into those that travel and those that do not.
pub(super) struct Fields {
    /// (field, its type, its key), in declaration order.
    carried: Vec<(Member, TokenStream, LitStr)>,
    /// (field, its type): filled with `Default::default()` on the receiving side.
    rest: Vec<(Member, TokenStream)>,
    /// A field attribute was wrong (reported): no `BaggageFields` impl is generated, since it
    /// would have to guess about that field, and its errors would follow from the first.
    broken: bool,
}

/// Removes every `#[baggage ...]` attribute from the struct's fields. `Some` if there was one
/// (even a malformed one: the struct is then still carried with the fields that parsed, so no
/// follow-on error says it is not).
pub(super) fn take(input: &mut DeriveInput, errors: &mut Errors) -> Option<Fields> {
    let Data::Struct(data) = &mut input.data else {
        return None;
    };
    let mut fields = Fields {
        carried: Vec::new(),
        rest: Vec::new(),
        broken: false,
    };
    let mut any = false;
    for (index, field) in data.fields.iter_mut().enumerate() {
        let member = match &field.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(index.into()),
        };
        let mut key: Option<LitStr> = None;
        let mut broken = false;
        let mut kept = Vec::with_capacity(field.attrs.len());
        for attr in std::mem::take(&mut field.attrs) {
            if !attr.path().is_ident("baggage") {
                kept.push(attr);
                continue;
            }
            any = true;
            if key.is_some() || broken {
                fields.broken = true;
                errors.push(syn::Error::new_spanned(
                    &attr,
                    "a field takes one `#[baggage = \"key\"]`: remove this one",
                ));
                continue;
            }
            match attribute_key(&attr.meta) {
                Ok(lit) => key = Some(lit),
                Err(e) => {
                    broken = true;
                    fields.broken = true;
                    errors.push(e);
                }
            }
        }
        field.attrs = kept;
        match key {
            Some(lit) => {
                if let Some((other, _, _)) = fields
                    .carried
                    .iter()
                    .find(|(_, _, k)| k.value() == lit.value())
                {
                    fields.broken = true;
                    errors.push(syn::Error::new(
                        lit.span(),
                        format!(
                            "the baggage key {:?} is already used by field `{}`: each field needs a key of its own",
                            lit.value(),
                            shown(other)
                        ),
                    ));
                } else {
                    fields
                        .carried
                        .push((member, field.ty.to_token_stream(), lit));
                }
            }
            None => fields.rest.push((member, field.ty.to_token_stream())),
        }
    }
    any.then_some(fields)
}

/// The key of `#[baggage = "key"]`, checked like the struct-level option's.
fn attribute_key(meta: &Meta) -> syn::Result<LitStr> {
    const MSG: &str = "expected `#[baggage = \"key\"]` on a field, e.g. `#[baggage = \"tenant\"]`";
    let Meta::NameValue(nv) = meta else {
        return Err(syn::Error::new_spanned(meta, MSG));
    };
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = &nv.value
    else {
        return Err(syn::Error::new_spanned(&nv.value, MSG));
    };
    baggage_key(lit)?;
    Ok(LitStr::new(&lit.value(), lit.span()))
}

fn shown(member: &Member) -> String {
    match member {
        Member::Named(ident) => ident.unraw().to_string(),
        Member::Unnamed(index) => index.index.to_string(),
    }
}

impl Fields {
    /// The keys, for the accessors' docs.
    pub(super) fn keys(&self) -> Vec<String> {
        self.carried.iter().map(|(_, _, k)| k.value()).collect()
    }
}

/// `impl BaggageFields for Struct`, and one bound check per field type.
pub(super) fn expand(fields: &Fields, ident: &Ident, private: &TokenStream) -> TokenStream {
    if fields.broken {
        return TokenStream::new();
    }
    let travels = format_ident!(
        "{}FieldTravelsAsBaggage",
        ident.unraw(),
        span = Span::call_site()
    );
    let stays = format_ident!(
        "{}FieldStaysAndIsDefault",
        ident.unraw(),
        span = Span::call_site()
    );
    let keys = fields.carried.iter().map(|(_, _, k)| k);
    let indices = 0..fields.carried.len();
    let members: Vec<&Member> = fields.carried.iter().map(|(m, _, _)| m).collect();
    let types: Vec<&TokenStream> = fields.carried.iter().map(|(_, t, _)| t).collect();
    let vars: Vec<Ident> = (0..fields.carried.len())
        .map(|i| format_ident!("__field{}", i))
        .collect();
    let rest_members = fields.rest.iter().map(|(m, _)| m);
    let rest_types: Vec<&TokenStream> = fields.rest.iter().map(|(_, t)| t).collect();
    // Checks at each field's type: one error per field that cannot travel or cannot be
    // defaulted, pointing at it. The impl itself assumes the bounds (higher-ranked, so not
    // "trivially false"), so it adds no second error.
    let travel_checks = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> carried_fields_must_travel_as_baggage::<#ty>();));
    let stay_checks = rest_types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> fields_that_stay_must_be_default::<#ty>();));
    let decode = indices
        .clone()
        .zip(&vars)
        .zip(&types)
        .map(|((i, var), ty)| {
            quote! {
                let #var = match <#ty as #private::BaggageValue>::decode(texts[#i]) {
                    ::core::result::Result::Ok(v) => ::core::option::Option::Some(v),
                    ::core::result::Result::Err(e) => {
                        errors.push((#i, e));
                        ::core::option::Option::None
                    }
                };
            }
        });
    quote! {
        #[diagnostic::on_unimplemented(
            message = "`{Self}` cannot travel as baggage: it is not a `BaggageValue`",
            label = "not a `BaggageValue`",
            note = "a field with `#[baggage = \"key\"]` is written and read as text: implement `Display` and `FromStr` (with an `Err` that is `Display`) for its type, or `context_local::baggage::BaggageValue` by hand"
        )]
        #[allow(non_camel_case_types)]
        trait #travels: #private::BaggageValue {}
        #[diagnostic::do_not_recommend]
        impl<T: #private::BaggageValue> #travels for T {}

        #[diagnostic::on_unimplemented(
            message = "`{Self}` is not `Default`, so this field cannot be rebuilt from baggage",
            label = "not `Default`",
            note = "a field without `#[baggage = \"key\"]` does not travel: the receiving service fills it with `Default::default()`; implement `Default` for its type, or send it too with `#[baggage = \"key\"]`"
        )]
        #[allow(non_camel_case_types)]
        trait #stays: ::core::default::Default {}
        #[diagnostic::do_not_recommend]
        impl<T: ::core::default::Default> #stays for T {}

        #[allow(dead_code)]
        fn carried_fields_must_travel_as_baggage<T: #travels>() {}
        #[allow(dead_code)]
        fn fields_that_stay_must_be_default<T: #stays>() {}
        #[allow(dead_code)]
        fn __checks() {
            #(#travel_checks)*
            #(#stay_checks)*
        }

        impl #private::BaggageFields for #ident
        where
            #(for<'__context_local> #types: #private::BaggageValue,)*
            #(for<'__context_local> #rest_types: ::core::default::Default,)*
        {
            const KEYS: &'static [&'static str] = &[#(#keys),*];

            fn encode_field(&self, index: usize, out: &mut ::std::string::String) {
                match index {
                    #(#indices => #private::BaggageValue::encode(&self.#members, out),)*
                    _ => {}
                }
            }

            fn decode_fields(
                texts: &[&str],
            ) -> ::core::result::Result<Self, ::std::vec::Vec<(usize, ::std::string::String)>> {
                #[allow(unused_mut)]
                let mut errors = ::std::vec::Vec::new();
                let _ = texts;
                #(#decode)*
                match (#(#vars,)*) {
                    (#(::core::option::Option::Some(#vars),)*) => ::core::result::Result::Ok(Self {
                        #(#members: #vars,)*
                        #(#rest_members: ::core::default::Default::default(),)*
                    }),
                    #[allow(unreachable_patterns)]
                    _ => ::core::result::Result::Err(errors),
                }
            }
        }
    }
}
