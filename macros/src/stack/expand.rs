//! One declaration of `context_stack!` becomes a named `static LocalStack<T>` and a check,
//! spanned at the user's type, that `T` is `Send + 'static`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::Decl;

pub(super) fn expand_decl(decl: &Decl) -> TokenStream {
    let Decl {
        attrs,
        options,
        vis,
        static_token,
        ident,
        ty,
    } = decl;
    let private = options.private_path();
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
