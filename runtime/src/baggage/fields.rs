//! Structs whose fields travel as members of their own.

/// A struct whose chosen fields travel as baggage members of their own (`tenant=acme`,
/// `request-id=r-3`) rather than the whole value as one member: readable by services in any
/// language, and rebuilt from those members on the receiving side.
///
/// `#[context_local]` implements it for a struct with `#[baggage = "key"]` on fields; a
/// [`Propagator`](super::Propagator) carries such a local with
/// [`with_fields`](super::Propagator::with_fields). Implement it by hand for a struct of the
/// runtime alone.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use context_local::baggage::{BaggageFields, BaggageValue, Propagator};
/// use context_local::Local;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Request {
///     tenant: String,
///     id: u64,
///     user: Option<String>, // stays in this service
/// }
///
/// impl BaggageFields for Request {
///     const KEYS: &'static [&'static str] = &["tenant", "request-id"];
///
///     fn encode_field(&self, index: usize, out: &mut String) {
///         match index {
///             0 => self.tenant.encode(out),
///             _ => self.id.encode(out),
///         }
///     }
///
///     fn decode_fields(texts: &[&str]) -> Result<Self, Vec<(usize, String)>> {
///         let tenant = String::decode(texts[0]).map_err(|e| vec![(0, e)])?;
///         let id = u64::decode(texts[1]).map_err(|e| vec![(1, e)])?;
///         Ok(Request { tenant, id, user: None })
///     }
/// }
///
/// static REQUEST: Local<Request> = Local::named("REQUEST").inheritable();
/// let propagator = Propagator::new().with_fields(&REQUEST);
///
/// REQUEST.set(Request { tenant: "acme".into(), id: 3, user: Some("ada".into()) });
/// let mut headers = HashMap::new();
/// propagator.inject(&mut headers).unwrap();
/// assert_eq!(headers["baggage"], "tenant=acme,request-id=3");
///
/// let restored = propagator.extract(&headers).snapshot().run(|| REQUEST.get());
/// assert_eq!(restored, Some(Request { tenant: "acme".into(), id: 3, user: None }));
/// ```
pub trait BaggageFields: Sized {
    /// The key of each carried field, in order: HTTP tokens, all different.
    const KEYS: &'static [&'static str];

    /// Appends the text of carried field `index` (an index into [`KEYS`](Self::KEYS)), not
    /// yet percent-encoded, to `out`.
    fn encode_field(&self, index: usize, out: &mut String);

    /// The value rebuilt from the text of every carried field (already percent-decoded), in
    /// the order of [`KEYS`](Self::KEYS).
    ///
    /// # Errors
    ///
    /// For each field whose text does not parse, its index and a message saying why; the
    /// propagator reports each with its key and the local's name.
    fn decode_fields(texts: &[&str]) -> Result<Self, Vec<(usize, String)>>;
}
