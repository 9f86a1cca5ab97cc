//! `context_local::tonic` (issue 19): `MetadataMap` carriers and the client interceptor; the
//! server side over tower is `ExtractLayer` (tests/tower.rs, examples/tonic-service).
#![cfg(feature = "tonic")]

use std::sync::LazyLock;

use context_local::baggage::Propagator;
use context_local::propagate::Propagate;
use context_local::tonic::{InjectInterceptor, MetadataExtractor};
use context_local::{Context, Local};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").baggage("request-id");
static PROPAGATOR: LazyLock<Propagator> =
    LazyLock::new(|| Propagator::new().with(&TENANT).with(&REQUEST_ID));

#[test]
fn interceptor_out_metadata_in() {
    let mut interceptor = InjectInterceptor::new(&*PROPAGATOR);
    let request = Context::new().run(|| {
        TENANT.set("acme, inc".into());
        REQUEST_ID.set(7);
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("baggage", "vendor=v;p=1,tenant=stale".parse().unwrap());
        interceptor.call(request).unwrap()
    });
    let metadata = request.metadata();
    assert_eq!(
        metadata.get("baggage").unwrap(),
        "vendor=v;p=1,tenant=acme%2C%20inc,request-id=7"
    );
    let (context, extracted) = PROPAGATOR.start(&MetadataExtractor(metadata));
    assert!(extracted.errors().is_empty());
    assert_eq!(
        context.run(|| (TENANT.get(), REQUEST_ID.get())),
        (Some("acme, inc".to_string()), Some(7))
    );
    // Unbound: nothing of ours is sent, and the stale member goes.
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert("baggage", "tenant=stale".parse().unwrap());
    let request = interceptor.call(request).unwrap();
    assert!(request.metadata().get("baggage").is_none());
}

/// Hostile metadata: the valid members apply, the rest are errors, never a failed call.
#[test]
fn hostile_metadata_is_reported() {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.append(
        "baggage",
        MetadataValue::from_static("tenant=ok,request-id=x"),
    );
    metadata.append("baggage", MetadataValue::from_static(";;,=%zz"));
    let (context, extracted) = PROPAGATOR.start(&MetadataExtractor(&metadata));
    assert!(extracted.errors().len() >= 2);
    assert_eq!(
        context.run(|| (TENANT.get(), REQUEST_ID.get())),
        (Some("ok".to_string()), None)
    );
}

/// Fault (adversary pass): a value `MetadataMap` cannot hold (written by another propagator
/// in a composite) was left out by keeping the *old* value of that key, sent on as current.
#[cfg(feature = "opentelemetry")]
#[test]
fn a_value_metadata_cannot_hold_does_not_keep_the_old_one() {
    use context_local::propagate::Otel;
    use context_local::tonic::MetadataInjector;
    use opentelemetry::propagation::text_map_propagator::FieldIter;
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};

    #[derive(Debug)]
    struct WritesABrokenValue;
    impl TextMapPropagator for WritesABrokenValue {
        fn inject_context(&self, _: &opentelemetry::Context, injector: &mut dyn Injector) {
            injector.set("x-tenant", "a\r\nb".to_string());
        }
        fn extract_with_context(
            &self,
            cx: &opentelemetry::Context,
            _: &dyn Extractor,
        ) -> opentelemetry::Context {
            cx.clone()
        }
        fn fields(&self) -> FieldIter<'_> {
            FieldIter::new(&[])
        }
    }

    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("x-tenant", MetadataValue::from_static("stale"));
    Otel(WritesABrokenValue)
        .inject(&mut MetadataInjector(&mut metadata))
        .unwrap();
    assert_eq!(metadata.get("x-tenant"), None);
}
