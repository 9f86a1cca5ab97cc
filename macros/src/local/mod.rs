//! `#[context_local]`: the annotated item is validated (`validate`), then gets its hidden
//! static and accessors (`accessors`).

mod accessors;
mod validate;

use proc_macro2::TokenStream;

use crate::options::Options;

/// The user's struct plus its accessors; on a mistake, the user's item unchanged plus one
/// error per mistake (so nothing else about the item is reported).
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let (options, option_errors) = Options::parse(args);
    let mut out = item.clone();
    match validate::validate(item) {
        Ok(input) => out.extend(accessors::accessors(&input, &options)),
        Err(e) => out.extend(e.to_compile_error()),
    }
    if let Some(e) = option_errors {
        out.extend(e.to_compile_error());
    }
    out
}
