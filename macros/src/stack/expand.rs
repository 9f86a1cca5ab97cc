//! One declaration of `context_stack!` becomes a named `static LocalStack<T>` and a check,
//! spanned at the user's type, that `T` is `Send + 'static` — with `#[inherit]`, that it is
//! `Clone + Send + Sync + 'static`, checked by the call that makes the stack inheritable.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::Type;

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
    let name = ident.unraw().to_string();
    let constructor = match options.explicit_only {
        Some(_) => quote!(#private::LocalStack::named(#name).explicit_only()),
        None => quote!(#private::LocalStack::named(#name)),
    };
    let (init, assert_send) = match options.inherit {
        Some(_) => (inheritable(&constructor, ty, &private), TokenStream::new()),
        None => (constructor, assert_send(ty)),
    };
    quote! {
        #(#attrs)*
        #vis #static_token #ident: #private::LocalStack<#ty> = #init;
        #assert_send
    }
}

/// Spanned at the user's type: a non-`Send` element type gets its one error there, and the
/// note names a function that says what is wrong.
fn assert_send(ty: &Type) -> TokenStream {
    let check = quote_spanned!(ty.span()=> stack_values_must_be_send::<#ty>);
    quote! {
        const _: () = {
            fn stack_values_must_be_send<T: ?::core::marker::Sized + ::core::marker::Send + 'static>() {}
            let _ = #check;
        };
    }
}

/// `constructor.inheritable()` through a local `const fn` whose bounds are all the element
/// type needs, called at the user's type: each missing trait (`Clone`, `Send`, `Sync`) gets
/// one error there, naming the function, and `.inheritable()` inside, on a generic `T` with
/// those bounds, cannot fail. It replaces [`assert_send`], so `Send` is not reported twice.
fn inheritable(constructor: &TokenStream, ty: &Type, private: &TokenStream) -> TokenStream {
    let check =
        quote_spanned!(ty.span()=> inheritable_stack_values_must_be_clone_send_and_sync::<#ty>);
    quote! {{
        const fn inheritable_stack_values_must_be_clone_send_and_sync<
            T: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
        >(
            stack: #private::LocalStack<T>,
        ) -> #private::LocalStack<T> {
            stack.inheritable()
        }
        #check(#constructor)
    }}
}
