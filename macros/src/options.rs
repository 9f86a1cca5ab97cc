//! The options of both macros: the list in `#[context_local(default, init = f, name = "..",
//! inherit, baggage = "key", explicit_only, crate = path)]`, and the attributes a
//! `context_stack!` declaration takes (`#[inherit]`, `#[explicit_only]`, `#[crate = path]`).
//!
//! Each option is one [`OptionSpec`] plus one small parse function, and each macro lists the
//! options it takes ([`LOCAL`], [`STACK`]); the parser handles commas, unknown and duplicate
//! names, and recovery, so adding an option touches nothing else. Parsing never stops at the
//! first mistake: every mistake gets its own spanned error, and the options that did parse are
//! still used, so the accessors or the static are still generated.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitStr, Path, Token};

use crate::errors::Errors;

/// The parsed options, with the spans errors point at.
#[derive(Default)]
pub(crate) struct Options {
    /// `default`: lazily bind `Default::default()` in each context.
    pub(crate) default: Option<Span>,
    /// `init = path`: lazily bind `path()` in each context.
    pub(crate) init: Option<Path>,
    /// `name = "..."`: the name used in errors.
    pub(crate) name: Option<LitStr>,
    /// `inherit`: children of a context start with its value (`.inheritable()`).
    pub(crate) inherit: Option<Span>,
    /// `baggage = "key"`: travels as W3C Baggage under `key` (`.baggage(key)`, inheritable too).
    /// Set only when the key is valid, so the runtime's own check cannot fail a second time.
    pub(crate) baggage: Option<LitStr>,
    /// `explicit_only`: never bound in a thread's own context (`.explicit_only()`).
    pub(crate) explicit_only: Option<Span>,
    /// `crate = path`: where the facade is, for crates that re-export it.
    pub(crate) krate: Option<Path>,
    /// Every option given, in order, with its span: rules between options point at the later.
    given: Vec<(&'static str, Span)>,
}

/// One option: its name and how its value (if any) is parsed after the name.
pub(crate) struct OptionSpec {
    name: &'static str,
    parse: fn(&mut Options, &Ident, ParseStream<'_>) -> syn::Result<()>,
}

const DEFAULT: OptionSpec = OptionSpec {
    name: "default",
    parse: parse_default,
};
const INIT: OptionSpec = OptionSpec {
    name: "init",
    parse: parse_init,
};
const NAME: OptionSpec = OptionSpec {
    name: "name",
    parse: parse_name,
};
const INHERIT: OptionSpec = OptionSpec {
    name: "inherit",
    parse: parse_inherit,
};
const BAGGAGE: OptionSpec = OptionSpec {
    name: "baggage",
    parse: parse_baggage,
};
const EXPLICIT_ONLY: OptionSpec = OptionSpec {
    name: "explicit_only",
    parse: parse_explicit_only,
};
const CRATE: OptionSpec = OptionSpec {
    name: "crate",
    parse: parse_crate,
};

/// The options of `#[context_local(...)]`, comma-separated in the attribute's arguments.
pub(crate) const LOCAL: &[OptionSpec] =
    &[DEFAULT, INIT, NAME, INHERIT, BAGGAGE, EXPLICIT_ONLY, CRATE];
/// The options of a `context_stack!` declaration, one per attribute: `#[inherit]`,
/// `#[explicit_only]`, `#[crate = path]`.
pub(crate) const STACK: &[OptionSpec] = &[INHERIT, EXPLICIT_ONLY, CRATE];

fn parse_default(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    o.default = Some(flag(key, input)?);
    Ok(())
}

fn parse_inherit(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    o.inherit = Some(flag(key, input)?);
    Ok(())
}

fn parse_explicit_only(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    o.explicit_only = Some(flag(key, input)?);
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

fn parse_baggage(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    let msg = "`baggage` must be the key as a string literal, e.g. `baggage = \"tenant\"`";
    let lit = value::<LitStr>(key, input, msg)?;
    baggage_key(&lit)?;
    o.baggage = Some(lit);
    Ok(())
}

/// A baggage key is an HTTP token (RFC 9110): one or more letters, digits and
/// ``!#$%&'*+-.^_`|~``. The runtime checks the same at compile time, but its error would point
/// into the expansion; this one points at the literal.
pub(crate) fn baggage_key(lit: &LitStr) -> syn::Result<()> {
    const TOKEN: &str = "a key is an HTTP token: letters, digits and !#$%&'*+-.^_`|~";
    let key = lit.value();
    let problem = if !lit.suffix().is_empty() {
        format!("a baggage key takes no suffix: remove `{}`", lit.suffix())
    } else if key.is_empty() {
        format!("the baggage key cannot be empty ({TOKEN}), e.g. `baggage = \"tenant\"`")
    } else if let Some(c) = key.chars().find(|&c| !is_token_char(c)) {
        format!("invalid baggage key {key:?}: {c:?} is not allowed ({TOKEN})")
    } else {
        return Ok(());
    };
    Err(syn::Error::new(lit.span(), problem))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn parse_crate(o: &mut Options, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    let msg = "`crate` must be the path of the context-local crate, e.g. `crate = ::my_crate::context_local`";
    if input.peek(Token![=]) && input.peek2(LitStr) {
        // `crate = "path"`, the serde/tokio habit: an error, but the path inside is still used,
        // so that a crate reaching context-local only through a re-export gets no second error.
        input.parse::<Token![=]>()?;
        let lit: LitStr = input.parse()?;
        o.krate = lit.parse().ok();
        return Err(syn::Error::new(lit.span(), msg));
    }
    o.krate = Some(value(key, input, msg)?);
    Ok(())
}

/// An option that is only a name: anything after it (`= true`, `(x)`), up to the next comma, is
/// reported and skipped, and the option is not set, so a value that meant "off" adds nothing.
fn flag(key: &Ident, input: ParseStream<'_>) -> syn::Result<Span> {
    let mut value = TokenStream::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        value.extend([input.parse::<TokenTree>()?]);
    }
    if value.is_empty() {
        return Ok(key.span());
    }
    Err(syn::Error::new_spanned(
        &value,
        format!("the `{key}` option takes no value: remove `{value}`"),
    ))
}

/// `= VALUE` after an option's name; any mistake is reported as `msg`: at the name when the
/// `=` is missing, at `name =` when the value is, at the value otherwise.
fn value<T: syn::parse::Parse>(key: &Ident, input: ParseStream<'_>, msg: &str) -> syn::Result<T> {
    let Some(eq) = input.parse::<Option<Token![=]>>()? else {
        return Err(syn::Error::new(key.span(), msg));
    };
    if input.is_empty() || input.peek(Token![,]) {
        return Err(syn::Error::new_spanned(quote!(#key #eq), msg));
    }
    input
        .parse::<T>()
        .map_err(|e| syn::Error::new(e.span(), msg))
}

impl Options {
    /// Parses the arguments of `#[context_local(...)]`. Returns the options that parsed and
    /// every error.
    pub(crate) fn parse(args: TokenStream) -> (Options, Option<syn::Error>) {
        let mut options = Options::default();
        let mut errors = Errors::default();
        let parser = |input: ParseStream<'_>| {
            parse_list(&mut options, &mut errors, input);
            Ok(())
        };
        if let Err(e) = parser.parse2(args) {
            errors.push(e);
        }
        options.validate(&mut errors);
        (options, errors.into_error())
    }

    /// Whether an attribute's content (`input`, inside `#[...]`) is one of `specs` rather than
    /// an attribute to keep: it starts with an option's name, not followed by `::` (so
    /// `#[crate::my_attribute]` is kept).
    pub(crate) fn is_option(specs: &[OptionSpec], input: ParseStream<'_>) -> bool {
        let fork = input.fork();
        match Ident::parse_any(&fork) {
            Ok(key) => !fork.peek(Token![::]) && specs.iter().any(|o| key == o.name),
            Err(_) => false,
        }
    }

    /// Parses an attribute's content that [`is_option`](Self::is_option): exactly one option.
    /// Consumes the whole content, also on a mistake.
    pub(crate) fn parse_attribute(
        &mut self,
        specs: &[OptionSpec],
        input: ParseStream<'_>,
    ) -> syn::Result<()> {
        let parsed = self.parse_one(specs, input);
        let rest: TokenStream = input.parse()?;
        parsed?;
        if rest.is_empty() {
            return Ok(());
        }
        Err(syn::Error::new_spanned(
            rest,
            "unexpected tokens after the option: an attribute holds one option, e.g. `#[crate = path]`",
        ))
    }

    /// One option out of `specs`: its name, then whatever its parse function takes.
    fn parse_one(&mut self, specs: &[OptionSpec], input: ParseStream<'_>) -> syn::Result<()> {
        let key = Ident::parse_any(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected an option: one of {}", option_list(specs)),
            )
        })?;
        let Some(spec) = specs.iter().find(|o| key == o.name) else {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown option `{key}`: expected one of {}",
                    option_list(specs)
                ),
            ));
        };
        if self.given.iter().any(|(name, _)| *name == spec.name) {
            return Err(syn::Error::new(
                key.span(),
                format!("duplicate option `{}`", spec.name),
            ));
        }
        self.given.push((spec.name, key.span()));
        (spec.parse)(self, &key, input)
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

/// The comma-separated options of `#[context_local(...)]`.
fn parse_list(options: &mut Options, errors: &mut Errors, input: ParseStream<'_>) {
    while !input.is_empty() {
        if let Err(e) = options.parse_one(LOCAL, input) {
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

fn option_list(specs: &[OptionSpec]) -> String {
    let names: Vec<String> = specs.iter().map(|o| format!("`{}`", o.name)).collect();
    names.join(", ")
}

fn skip_to_comma(input: ParseStream<'_>) {
    while !input.is_empty() && !input.peek(Token![,]) {
        let _ = input.parse::<proc_macro2::TokenTree>();
    }
}

#[cfg(test)]
mod tests {
    use syn::LitStr;

    use super::baggage_key;

    fn ok(key: &str) -> bool {
        let lit: LitStr = syn::parse_str(key).unwrap();
        baggage_key(&lit).is_ok()
    }

    #[test]
    fn baggage_keys_are_http_tokens() {
        for key in [
            r#""tenant""#,
            r#""x-Tenant_id.v1~""#,
            r##""!#$%&'*+-.^_`|~09""##,
            r#"r"raw""#,
        ] {
            assert!(ok(key), "{key} is a token");
        }
        for key in [
            r#""""#,
            r#""ten ant""#,
            r#""a=b""#,
            r#""a,b""#,
            r#""é""#,
            r#""t"x"#,
            r#""a\tb""#,
        ] {
            assert!(!ok(key), "{key} is not a token");
        }
    }
}
