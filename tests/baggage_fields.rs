//! Per-field baggage (issue 19): `#[baggage = "key"]` on fields of a `#[context_local]`
//! struct sends those fields as members of their own, readable by any service, and the
//! receiving side's same struct is rebuilt from them (the other fields `Default`); and a
//! propagator built in `const` (`Propagator::of`), a plain `static`.
//!
//! Part 1: round trips and what the receiving side gets. Part 2: interop with
//! `opentelemetry_sdk`'s `BaggagePropagator`, both ways. Part 3: hostile headers (property:
//! never a panic, the W3C limits, never a half-filled struct). Part 4: misuse.
//!
//! Every test binds its locals in an explicit `Context`.

use std::collections::HashMap;

use context_local::baggage::{Extracted, Propagator, MAX_BYTES, MAX_MEMBERS};
use context_local::{context_local, Context, Local};
use proptest::prelude::*;

/// A request: tenant and id travel, the user stays in this service.
#[context_local]
#[derive(Clone, Debug, Default, PartialEq)]
struct Request {
    #[baggage = "tenant"]
    tenant: String,
    #[baggage = "request-id"]
    id: u64,
    /// Never sent: rebuilt as `None`.
    user: Option<String>,
}

/// A tuple struct, one field carried; the other field's type is `Default`, the struct is not.
#[context_local(name = "ROUTE")]
#[derive(Clone, Debug, PartialEq)]
struct Route(#[baggage = "route"] String, Vec<u8>);

/// A one-member local next to them.
static SHARD: Local<u32> = Local::named("SHARD").baggage("shard");

/// Built in `const`: no `LazyLock`.
static PROPAGATOR: Propagator = Propagator::of(&[
    Request::local().carried_fields(),
    Route::local().carried_fields(),
    SHARD.carried(),
]);

fn carrier(header: &str) -> HashMap<String, String> {
    HashMap::from([("baggage".to_string(), header.to_string())])
}

fn request(tenant: &str, id: u64) -> Request {
    Request {
        tenant: tenant.into(),
        id,
        user: Some("ada".into()),
    }
}

/// What a fork of the extracted snapshot sees.
fn seen(extracted: &Extracted) -> (Option<Request>, Option<Route>, Option<u32>) {
    extracted
        .snapshot()
        .run(|| (Request::get(), Route::get(), SHARD.get()))
}

fn inject(f: impl FnOnce()) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    Context::new().run(|| {
        f();
        PROPAGATOR.inject(&mut headers).unwrap();
    });
    headers
}

// ---------------------------------------------------------------------------------------------
// Part 1: round trips.

#[test]
fn chosen_fields_travel_as_members_of_their_own_and_the_struct_is_rebuilt() {
    let headers = inject(|| {
        Request::set(request("acme corp", 3));
        Route::set(Route("/a,b".into(), vec![1, 2]));
        SHARD.set(7);
    });
    assert_eq!(
        headers["baggage"],
        "tenant=acme%20corp,request-id=3,route=/a%2Cb,shard=7"
    );
    let extracted = PROPAGATOR.extract(&headers);
    assert!(extracted.errors().is_empty(), "{:?}", extracted.errors());
    let (req, route, shard) = seen(&extracted);
    // The user stayed behind: `Default`; so did the route's bytes.
    assert_eq!(
        req,
        Some(Request {
            user: None,
            ..request("acme corp", 3)
        })
    );
    assert_eq!(route, Some(Route("/a,b".into(), Vec::new())));
    assert_eq!(shard, Some(7));
    assert_eq!(
        PROPAGATOR.keys().collect::<Vec<_>>(),
        ["tenant", "request-id", "route", "shard"]
    );
}

#[test]
fn a_struct_rebuilt_from_baggage_reaches_the_requests_children_and_stays_its_own() {
    let extracted = PROPAGATOR.extract(&carrier("request-id=9,tenant=t"));
    extracted.snapshot().run(|| {
        let child = context_local::thread::spawn(Request::get).join().unwrap();
        assert_eq!(child.map(|r| r.id), Some(9));
        Request::with_mut(|r| r.user = Some("local".into()));
        assert_eq!(Request::get().unwrap().user.as_deref(), Some("local"));
    });
    // The snapshot still holds what came.
    assert_eq!(seen(&extracted).0.unwrap().user, None);
}

#[test]
fn other_parties_members_are_kept_and_stale_members_of_ours_replaced() {
    let mut headers = carrier("vendor=1;p,tenant=stale,request-id=0");
    Context::new().run(|| {
        Request::set(request("new", 5));
        PROPAGATOR.inject(&mut headers).unwrap();
    });
    assert_eq!(headers["baggage"], "vendor=1;p,tenant=new,request-id=5");

    // Unbound: none of its members, the stale ones gone too.
    let mut headers = carrier("tenant=stale,request-id=0,vendor=1");
    Context::new().run(|| PROPAGATOR.inject(&mut headers).unwrap());
    assert_eq!(headers["baggage"], "vendor=1");
}

#[test]
fn a_struct_is_restored_only_from_all_of_its_members() {
    // None of them: not restored, nothing to report.
    let extracted = PROPAGATOR.extract(&carrier("shard=1,other=2"));
    assert!(extracted.errors().is_empty());
    assert_eq!(seen(&extracted), (None, None, Some(1)));

    // Some of them: each missing one reported, naming the local; not restored half-filled.
    let extracted = PROPAGATOR.extract(&carrier("tenant=acme,shard=1"));
    let errors = extracted.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key(), Some("request-id"));
    assert_eq!(errors[0].local(), Some("Request"));
    assert!(errors[0].to_string().contains("missing"), "{}", errors[0]);
    assert_eq!(seen(&extracted), (None, None, Some(1)));

    // A field that does not parse: reported by key; the struct not restored.
    let extracted = PROPAGATOR.extract(&carrier("tenant=acme,request-id=many,shard=1"));
    let errors = extracted.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key(), Some("request-id"));
    assert_eq!(errors[0].member(), "request-id=many");
    assert_eq!(seen(&extracted), (None, None, Some(1)));

    // Duplicates: the last member of each key.
    let extracted = PROPAGATOR.extract(&carrier("tenant=a,request-id=1,tenant=b"));
    assert!(extracted.errors().is_empty());
    assert_eq!(
        seen(&extracted).0,
        Some(Request {
            user: None,
            ..request("b", 1)
        })
    );
}

/// Control: a propagator that does not list the struct leaves it unbound on the receiving
/// side, however its members came.
#[test]
fn control_without_with_fields_nothing_is_restored() {
    let headers = inject(|| Request::set(request("acme", 3)));
    let bare = Propagator::new().with(&SHARD);
    assert_eq!(seen(&bare.extract(&headers)).0, None);
    assert_eq!(
        seen(
            &Propagator::new()
                .with_fields(Request::local())
                .extract(&headers)
        )
        .0,
        Some(Request {
            user: None,
            ..request("acme", 3)
        })
    );
}

/// `inject` inside `with_mut` of a struct carried per field: an error naming it (fault 5's
/// rule for every carried local).
#[test]
fn inject_inside_with_mut_of_a_struct_carried_per_field_is_an_error() {
    Context::new().run(|| {
        Request::set(request("acme", 3));
        SHARD.set(1);
        let mut headers = carrier("tenant=upstream");
        let err = Request::with_mut(|_| PROPAGATOR.inject(&mut headers)).unwrap_err();
        assert_eq!(err.local(), Some("Request"));
        assert_eq!(err.key(), Some("tenant,request-id"));
        assert_eq!(headers["baggage"], "shard=1");
    });
}

// ---------------------------------------------------------------------------------------------
// Part 2: OpenTelemetry.

#[cfg(feature = "opentelemetry")]
mod otel {
    use super::*;
    use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::Context as Cx;
    use opentelemetry_sdk::propagation::BaggagePropagator;

    proptest! {
        /// What we inject, `opentelemetry_sdk` reads as separate entries; what it injects, we
        /// rebuild the struct from. (It writes `%` and `\` unencoded, which is not W3C: not
        /// in these values; tests/baggage.rs covers them.)
        #[test]
        fn interop_with_opentelemetry_sdk_both_ways(tenant in "[ -$&-\\[\\]-~é€😀]{0,16}", id in any::<u64>()) {
            let headers = inject(|| Request::set(request(&tenant, id)));
            let cx = BaggagePropagator::new().extract(&headers);
            let baggage = cx.baggage();
            // (`opentelemetry_sdk` trims values; our side does not.)
            prop_assert_eq!(baggage.get("tenant").map(|v| v.to_string()), Some(tenant.trim().to_string()));
            let id_text = id.to_string();
            prop_assert_eq!(baggage.get("request-id").map(|v| v.as_str().to_string()), Some(id_text.clone()));
            prop_assert_eq!(baggage.len(), 2);

            let cx = Cx::new().with_baggage(vec![
                KeyValueMetadata::new("request-id", id_text, "ttl=5"),
                KeyValueMetadata::new("vendor", "1", ""),
                KeyValueMetadata::new("tenant", tenant.trim().to_string(), ""),
            ]);
            let mut headers = HashMap::new();
            BaggagePropagator::new().inject_context(&cx, &mut headers);
            let extracted = PROPAGATOR.extract(&headers);
            prop_assert!(extracted.errors().is_empty(), "{:?} from {:?}", extracted.errors(), headers);
            let expected = Request { user: None, ..request(tenant.trim(), id) };
            prop_assert_eq!(seen(&extracted).0, Some(expected.clone()));
            // And through our `TextMapPropagator`: the struct restored, `vendor` in OTel baggage.
            let cx = TextMapPropagator::extract(&PROPAGATOR, &headers);
            prop_assert_eq!(seen(cx.get::<Extracted>().unwrap()).0, Some(expected));
            prop_assert_eq!(cx.baggage().get("vendor").map(|v| v.as_str().to_string()), Some("1".to_string()));
            prop_assert_eq!(cx.baggage().len(), 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: hostile headers.

/// Members around our keys, well-formed or not.
fn member() -> impl Strategy<Value = String> {
    let key = prop::sample::select(&["tenant", "request-id", "route", "shard", "x", "t", ""][..]);
    let value = prop_oneof![
        "[0-9]{1,3}".boxed(),
        "[ -~]{0,12}".boxed(),
        Just("%FF".to_string()).boxed(),
        Just("%C3%A9".to_string()).boxed(),
        Just("99999999999999999999999".to_string()).boxed(),
    ];
    let property = prop::sample::select(&["", ";p", ";p=%2C", ";=", ";\u{e9}"][..]);
    (key, value, property, any::<bool>())
        .prop_map(|(k, v, p, eq)| format!("{k}{}{v}{p}", if eq { "=" } else { "" }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Never a panic; a struct is restored only with a value for each of its keys that came
    /// within the limits; errors are bounded by the members read.
    #[test]
    fn hostile_headers_never_panic_nor_half_fill_a_struct(
        members in prop::collection::vec(member(), 0..80),
        filler in 0usize..70,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut all: Vec<String> = (0..filler).map(|i| format!("f{i}=1")).collect();
        all.extend(members);
        let header = all.join(",");
        let cut = cut.index(header.len() + 1);
        let (a, b) = header.as_bytes().split_at(cut);
        let extracted = PROPAGATOR.extract_headers([a, b]);
        let (req, route, _) = seen(&extracted);
        // Only members within the first 64 count (the header stays far below 8192 bytes); the
        // cut makes two header values, so a member may be cut in two.
        let joined = [a, b].join(&b',');
        let read: Vec<&[u8]> = joined
            .split(|&c| c == b',')
            .map(|m| m.trim_ascii())
            .filter(|m| !m.is_empty())
            .take(MAX_MEMBERS)
            .collect();
        prop_assert!(joined.len() < MAX_BYTES);
        let has = |key: &str| {
            read.iter().any(|m| {
                let pair = m.split(|&c| c == b';').next().unwrap_or_default();
                pair.split(|&c| c == b'=').next().map(<[u8]>::trim_ascii) == Some(key.as_bytes())
                    && pair.contains(&b'=')
            })
        };
        if req.is_some() {
            prop_assert!(has("tenant") && has("request-id"), "{:?}", header);
        }
        if route.is_some() {
            prop_assert!(has("route"));
        }
        prop_assert!(extracted.errors().len() <= MAX_MEMBERS + 2);
        for e in extracted.errors() {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn a_member_past_the_w3c_limits_is_missing_and_the_struct_is_not_restored() {
    // 63 fillers, `tenant` the 64th, `request-id` the 65th: dropped.
    let mut members: Vec<String> = (0..63).map(|i| format!("f{i}=1")).collect();
    members.push("tenant=acme".into());
    members.push("request-id=3".into());
    let extracted = PROPAGATOR.extract(&carrier(&members.join(",")));
    assert_eq!(seen(&extracted).0, None);
    let keys: Vec<_> = extracted.errors().iter().map(|e| e.key()).collect();
    assert_eq!(keys, [None, Some("request-id")], "{:?}", extracted.errors());

    // Past 8192 bytes likewise.
    let big = format!("pad={}", "x".repeat(MAX_BYTES - 20));
    let extracted = PROPAGATOR.extract_headers([big.as_bytes(), b"tenant=acme,request-id=3"]);
    assert_eq!(seen(&extracted).0, None);
}

// ---------------------------------------------------------------------------------------------
// Part 4: misuse at run time (the macro's mistakes are in ui-tests/fail/baggage_field_*).

#[test]
fn a_key_carried_twice_panics_naming_both_locals() {
    static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    let message = std::panic::catch_unwind(|| {
        Propagator::new()
            .with_fields(Request::local())
            .with(&TENANT)
    })
    .expect_err("a panic");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("`Request`") && message.contains("`TENANT`"),
        "{message}"
    );
    assert!(message.contains("`tenant`"), "{message}");
}

#[test]
fn a_struct_carried_per_field_must_be_inheritable() {
    static PLAIN: Local<Request> = Local::named("PLAIN");
    let message =
        std::panic::catch_unwind(|| Propagator::new().with_fields(&PLAIN)).expect_err("a panic");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("`PLAIN`") && message.contains("inheritable"),
        "{message}"
    );
}
