//! `#[context_local]`: the annotated item is validated (`validate`), then gets its hidden
//! static and accessors (`accessors`), and with `#[baggage = "key"]` on fields, the impl that
//! sends those fields as baggage members (`fields`).

mod accessors;
mod fields;
mod validate;

use proc_macro2::TokenStream;
use quote::ToTokens;

use crate::errors::Errors;
use crate::options::Options;

/// The user's struct plus its accessors; on a mistake, the user's item unchanged plus one
/// error per mistake (so nothing else about the item is reported).
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let (mut options, option_errors) = Options::parse(args);
    let mut errors = Errors::default();
    if let Some(e) = option_errors {
        errors.push(e);
    }
    let mut out = item.clone();
    match validate::validate(item) {
        Ok(mut input) => {
            let fields = fields::take(&mut input, &mut errors);
            if fields.is_some() {
                // The field attributes are the macro's: the struct is emitted without them.
                out = input.to_token_stream();
                if let Some(key) = options.baggage.take() {
                    errors.push(syn::Error::new(
                        key.span(),
                        "`baggage = \"key\"` sends the whole struct as one member, `#[baggage = \"key\"]` on fields sends those fields: use one of them",
                    ));
                }
            }
            out.extend(accessors::accessors(&input, &options, fields.as_ref()));
        }
        Err(e) => out.extend(e.to_compile_error()),
    }
    if let Some(e) = errors.into_error() {
        out.extend(e.to_compile_error());
    }
    out
}
