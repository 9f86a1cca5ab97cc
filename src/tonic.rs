//! tonic (feature `tonic`): gRPC metadata as a baggage carrier.
//!
//! A tonic server is a tower service of `http::Request`s: `tower::ExtractLayer` (features `tower` + `http`)
//! in `Server::builder().layer(..)` gives each call its own context started from its baggage,
//! and `tower::InjectLayer` around a `Channel` writes it into every
//! outgoing call. Where a tonic API hands out a [`MetadataMap`] instead — an interceptor, a
//! handler's `request.metadata()` — these carriers read and write it, and
//! [`InjectInterceptor`] is the client-side interceptor.

use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::baggage::{Extractor, Injector};
use crate::propagate::Propagate;

/// A [`MetadataMap`] to extract from ([`Propagator::extract`](crate::baggage::Propagator::extract),
/// [`Propagate::start`]). Only ASCII entries are read (`-bin` entries are binary, never baggage).
///
/// # Examples
///
/// ```
/// use context_local::{baggage::Propagator, tonic::MetadataExtractor, Local};
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
///
/// let mut metadata = tonic::metadata::MetadataMap::new();
/// metadata.insert("baggage", "tenant=acme".parse().unwrap());
/// let extracted = Propagator::new().with(&TENANT).extract(&MetadataExtractor(&metadata));
/// assert_eq!(extracted.snapshot().run(|| TENANT.get()).as_deref(), Some("acme"));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }
}

/// A [`MetadataMap`] to inject into ([`Propagator::inject`](crate::baggage::Propagator::inject),
/// [`Propagate::inject`]), keeping the baggage members of other parties.
///
/// # Examples
///
/// ```
/// use context_local::{baggage::Propagator, tonic::MetadataInjector, Local};
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
///
/// TENANT.set("acme corp".into());
/// let mut metadata = tonic::metadata::MetadataMap::new();
/// metadata.insert("baggage", "other=1".parse().unwrap());
/// Propagator::new().with(&TENANT).inject(&mut MetadataInjector(&mut metadata)).unwrap();
/// assert_eq!(metadata.get("baggage").unwrap(), "other=1,tenant=acme%20corp");
/// ```
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }

    fn set(&mut self, name: &str, value: String) {
        // Encoded baggage is visible ASCII, so this cannot fail; a value that could (written by
        // another propagator) is left out rather than sent broken, and so is the old value,
        // which is not current.
        match (
            MetadataKey::from_bytes(name.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            (Ok(key), Ok(value)) => {
                self.0.insert(key, value);
            }
            _ => {
                self.0.remove(name);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// A tonic client [`Interceptor`] writing the current context's values into every call's
/// metadata: `GreeterClient::with_interceptor(channel, InjectInterceptor::new(&*PROPAGATOR))`.
/// (Or wrap the `Channel` in `tower::InjectLayer`, which needs no
/// interceptor slot.) Over the W3C limits, the members that fit are sent and the
/// [`BaggageError`](crate::baggage::BaggageError) is put in the request's extensions; a
/// call is never failed for its baggage.
///
/// # Examples
///
/// ```
/// use std::sync::LazyLock;
/// use context_local::{baggage::Propagator, tonic::InjectInterceptor, Local};
/// use tonic::service::Interceptor;
///
/// static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
/// static PROPAGATOR: LazyLock<Propagator> = LazyLock::new(|| Propagator::new().with(&TENANT));
///
/// let mut interceptor = InjectInterceptor::new(&*PROPAGATOR);
/// TENANT.set("acme".into());
/// let request = interceptor.call(tonic::Request::new(())).unwrap();
/// assert_eq!(request.metadata().get("baggage").unwrap(), "tenant=acme");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectInterceptor<P> {
    propagator: P,
}

impl<P> InjectInterceptor<P> {
    /// The interceptor, injecting with `propagator`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{propagate::NoBaggage, tonic::InjectInterceptor};
    /// let interceptor = InjectInterceptor::new(NoBaggage);
    /// # let _ = interceptor;
    /// ```
    pub const fn new(propagator: P) -> Self {
        Self { propagator }
    }
}

impl<P: Propagate> Interceptor for InjectInterceptor<P> {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Err(error) = self
            .propagator
            .inject(&mut MetadataInjector(request.metadata_mut()))
        {
            request.extensions_mut().insert(error);
        }
        Ok(request)
    }
}
