//! The options of `#[context_local(...)]`.
//!
//! Each option is one row of [`OPTIONS`] plus one small parse function; the parser handles
//! commas, unknown and duplicate names, and recovery, so adding an option touches nothing else.
//! Parsing never stops at the first mistake: every mistake gets its own spanned error, and the
//! options that did parse are still used, so the struct's accessors are still generated.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitStr, Path, Token};

/// The parsed options, with the spans errors point at.
#[derive(Default)]
pub(crate) struct Options {
    /// `default`: lazily bind `Default::default()` in each context.
    pub(crate) default: Option<Span>,
    /// `init = path`: lazily bind `path()` in each context.
    pub(crate) init: Option<Path>,
    /// `name = "..."`: the name used in errors.
    pub(crate) name: Option<LitStr>,
    /// `crate = path`: where the facade is, for crates that re-export it.
    pub(crate) krate: Option<Path>,
    /// Every option given, in order, with its span: rules between options point at the later.
    given: Vec<(&'static str, Span)>,
}

struct OptionSpec {
    name: &'static str,
    parse: fn(&mut Options, &Ident, ParseStream<'_>) -> syn::Result<()>,
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "default",
        parse: parse_default,
    },
    OptionSpec {
        name: "init",
        parse: parse_init,
    },
    OptionSpec {
        name: "name",
        parse: parse_name,
    },
    OptionSpec {
        name: "crate",
        parse: parse_crate,
    },
];

fn parse_default(o: &mut Options, key: &Ident, _: ParseStream<'_>) -> syn::Result<()> {
    o.default = Some(key.span());
    Ok(())
}

fn parse_init(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    let msg = "the `init` option needs a function: `init = path::to::function`";
    o.init = Some(value(key, input, msg)?);
    Ok(())
}

fn parse_name(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    let msg = "`name` must be a string literal, e.g. `name = \"REQUEST\"`";
    o.name = Some(value::<LitStr>(key, input, msg)?);
    Ok(())
}

fn parse_crate(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    let msg = "`crate` must be the path of the context-local crate, e.g. `crate = ::my_crate::context_local`";
    o.krate = Some(value(key, input, msg)?);
    Ok(())
}

/// `= VALUE` after an option's name; any mistake is reported as `msg`, at the name when the
/// `=` is missing, at the value otherwise.
fn value<T: syn::parse::Parse>(key: &Ident, input: ParseStream<'_>, msg: &str) -> syn::Result<T> {
    if input.parse::<Option<Token![=]>>()?.is_none() {
        return Err(syn::Error::new(key.span(), msg));
    }
    input
        .parse::<T>()
        .map_err(|e| syn::Error::new(e.span(), msg))
}

impl Options {
    /// Parses the attribute's arguments. Returns the options that parsed and every error.
    pub(crate) fn parse(args: TokenStream) -> (Options, Option<syn::Error>) {
        let mut options = Options::default();
        let mut errors = Errors::default();
        let parser = |input: ParseStream<'_>| {
            parse_all(&mut options, &mut errors, input);
            Ok(())
        };
        if let Err(e) = parser.parse2(args) {
            errors.push(e);
        }
        options.validate(&mut errors);
        (options, errors.into_error())
    }

    /// Rules between options.
    fn validate(&mut self, errors: &mut Errors) {
        if self.default.is_some() && self.init.is_some() {
            let later = self
                .given
                .iter()
                .rev()
                .find(|(name, _)| matches!(*name, "default" | "init"))
                .map_or_else(Span::call_site, |(_, span)| *span);
            errors.push(syn::Error::new(
                later,
                "`default` and `init` cannot be combined: pick one way to initialise the value",
            ));
            self.default = None;
        }
    }

    /// The path generated code reaches the runtime through.
    pub(crate) fn private_path(&self) -> TokenStream {
        match &self.krate {
            Some(krate) => quote!(#krate::__private),
            None => quote!(::context_local::__private),
        }
    }
}

fn parse_all(options: &mut Options, errors: &mut Errors, input: ParseStream<'_>) {
    while !input.is_empty() {
        if let Err(e) = parse_one(options, input) {
            errors.push(e);
            skip_to_comma(input);
        }
        if input.is_empty() {
            break;
        }
        if let Err(e) = input.parse::<Token![,]>() {
            errors.push(syn::Error::new(e.span(), "expected `,` between options"));
            skip_to_comma(input);
            let _ = input.parse::<Option<Token![,]>>();
        }
    }
}

fn parse_one(options: &mut Options, input: ParseStream<'_>) -> syn::Result<()> {
    let key = Ident::parse_any(input).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected an option: one of {}", option_list()),
        )
    })?;
    let Some(spec) = OPTIONS.iter().find(|o| key == o.name) else {
        return Err(syn::Error::new(
            key.span(),
            format!("unknown option `{key}`: expected one of {}", option_list()),
        ));
    };
    if options.given.iter().any(|(name, _)| *name == spec.name) {
        return Err(syn::Error::new(
            key.span(),
            format!("duplicate option `{}`", spec.name),
        ));
    }
    options.given.push((spec.name, key.span()));
    (spec.parse)(options, &key, input)
}

fn option_list() -> String {
    let names: Vec<String> = OPTIONS.iter().map(|o| format!("`{}`", o.name)).collect();
    names.join(", ")
}

fn skip_to_comma(input: ParseStream<'_>) {
    while !input.is_empty() && !input.peek(Token![,]) {
        let _ = input.parse::<proc_macro2::TokenTree>();
    }
}

/// Several errors, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn into_error(self) -> Option<syn::Error> {
        self.0
    }
}
