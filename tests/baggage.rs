//! W3C Baggage across processes (DESIGN.md, "Across processes"): `baggage::Propagator` with
//! `inject`, `extract` and `extract_headers`; the carriers `HashMap<String, String>` and
//! (feature `http`) `http::HeaderMap`; (feature `opentelemetry`) the `TextMapPropagator` bridge
//! and its interop with `opentelemetry_sdk`'s `BaggagePropagator` and `TraceContextPropagator`.
//!
//! Part 1: inject → extract round trips (property). Part 2: hostile headers — random bytes and
//! mutated valid headers — against an independent reference parser (property). Part 3: the
//! W3C limits, at and one over. Part 4: `http::HeaderMap`. Part 5: OpenTelemetry, both ways.
//! Part 6: end to end: extract, fork, run a handler (also 200 concurrent tokio tasks). Part 7:
//! `inject` inside `with_mut` of a carried local, and members of other parties that are not
//! safe to send.
//!
//! `PROPTEST_CASES` sets the number of cases of each property (default 256).
//!
//! Every test that binds a local does so in an explicit `Context` (the harness may run several
//! tests on one thread), so the asserts about "the thread's own context" mean something.

mod common;

use std::collections::HashMap;
use std::sync::LazyLock;

use common::poll::{block_on, yield_now};
use context_local::baggage::{BaggageError, Extracted, Propagator, MAX_BYTES, MAX_MEMBERS};
use context_local::{Context, FutureExt, Local};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------------
// Locals, propagators, helpers.

/// A key made of every token character that is not a letter or a digit.
const KEY_T: &str = "t.x-1~!#$&'*+^_`|%";

static S: Local<String> = Local::named("S").baggage("s");
static T: Local<String> = Local::named("T").baggage(KEY_T);
static N: Local<u64> = Local::named("N").baggage("n");
static I: Local<i32> = Local::named("I").baggage("i");

/// Locals for the members another party put into a header before us (Part 1).
static O1: Local<String> = Local::named("O1").baggage("other-1");
static O2: Local<String> = Local::named("O2").baggage("other_2");
static O3: Local<String> = Local::named("O3").baggage("OTHER3");
const OTHER_KEYS: [&str; 3] = ["other-1", "other_2", "OTHER3"];

/// The keys of S, T, N, I, in the order of `PROPAGATOR`.
const KNOWN: [&str; 4] = ["s", KEY_T, "n", "i"];

static PROPAGATOR: LazyLock<Propagator> =
    LazyLock::new(|| Propagator::new().with(&S).with(&T).with(&N).with(&I));

/// `PROPAGATOR` and the locals of the other keys.
static FULL: LazyLock<Propagator> = LazyLock::new(|| {
    Propagator::new()
        .with(&S)
        .with(&T)
        .with(&N)
        .with(&I)
        .with(&O1)
        .with(&O2)
        .with(&O3)
});

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// The values of S, T, N and I in one context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Values {
    s: Option<String>,
    t: Option<String>,
    n: Option<u64>,
    i: Option<i32>,
}

impl Values {
    /// Binds the values that are `Some` in the current context.
    fn bind(&self) {
        if let Some(v) = &self.s {
            S.set(v.clone());
        }
        if let Some(v) = &self.t {
            T.set(v.clone());
        }
        if let Some(v) = self.n {
            N.set(v);
        }
        if let Some(v) = self.i {
            I.set(v);
        }
    }

    /// The values in the current context.
    fn read() -> Values {
        Values {
            s: S.get(),
            t: T.get(),
            n: N.get(),
            i: I.get(),
        }
    }

    /// As text, in the order of `KNOWN` (numbers as they print).
    fn texts(&self) -> [Option<String>; 4] {
        [
            self.s.clone(),
            self.t.clone(),
            self.n.map(|n| n.to_string()),
            self.i.map(|i| i.to_string()),
        ]
    }

    /// The members a correct injection writes, in propagator order.
    fn keys_set(&self) -> Vec<&'static str> {
        let set = [
            self.s.is_some(),
            self.t.is_some(),
            self.n.is_some(),
            self.i.is_some(),
        ];
        KNOWN
            .iter()
            .zip(set)
            .filter_map(|(k, set)| set.then_some(*k))
            .collect()
    }
}

/// What the locals read in a fork of the extracted snapshot.
fn seen(extracted: &Extracted) -> Values {
    extracted.snapshot().run(Values::read)
}

/// The values of O1, O2, O3 in a fork of the extracted snapshot.
fn seen_others(extracted: &Extracted) -> [Option<String>; 3] {
    extracted.snapshot().run(|| [O1.get(), O2.get(), O3.get()])
}

/// Injects `values` (bound in a fresh context) with `PROPAGATOR` into `carrier`.
fn inject_values<C: context_local::baggage::Injector>(
    values: &Values,
    carrier: &mut C,
) -> Result<(), BaggageError> {
    Context::new().run(|| {
        values.bind();
        PROPAGATOR.inject(carrier)
    })
}

/// A carrier with one `baggage` header.
fn carrier(header: &str) -> HashMap<String, String> {
    HashMap::from([("baggage".to_string(), header.to_string())])
}

/// The over-limit error (the one error about the header as a whole).
fn is_over_limit(e: &BaggageError) -> bool {
    e.member().is_empty() && e.key().is_none()
}

/// Reference encoder, stricter than needed: every byte but ASCII letters, digits and `-._~`.
fn enc(text: &str) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reference encoder, as lax as allowed: only what is not a baggage-octet, and `%`.
fn enc_min(text: &str) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        if is_value_octet(b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Characters that break naive encoders, most of them.
const SPECIAL: &[char] = &[
    ',', ';', '=', '%', ' ', '\t', '"', '\\', '\0', '\n', '\r', '\u{1}', '\u{7f}', '\u{80}',
    '\u{a0}', 'é', '€', '😀', '\u{feff}', '\u{3000}', '+', '2', 'F', 'z', '&', '\'',
];

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(SPECIAL),
        2 => any::<char>(),
        3 => prop::char::range(' ', '~'),
    ]
}

fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..24).prop_map(String::from_iter)
}

fn values() -> impl Strategy<Value = Values> {
    (
        prop::option::weighted(0.8, tricky_string()),
        prop::option::weighted(0.8, tricky_string()),
        prop::option::weighted(0.8, any::<u64>()),
        prop::option::weighted(0.8, any::<i32>()),
    )
        .prop_map(|(s, t, n, i)| Values { s, t, n, i })
}

/// A member someone else put into the header before our `inject`: slot 0..3 one of
/// `OTHER_KEYS`, 3..7 a stale member under one of our keys, 7 an empty member.
#[derive(Clone, Debug)]
struct Before {
    slot: usize,
    value: String,
    property: bool,
    ows: bool,
}

fn before() -> impl Strategy<Value = Before> {
    (0usize..8, tricky_string(), any::<bool>(), any::<bool>()).prop_map(
        |(slot, value, property, ows)| Before {
            slot,
            value,
            property,
            ows,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Part 1: inject → extract round trips.

/// The header of the members in `before` (first of each slot only), and the members that must
/// survive an injection (trimmed), with their values by other key.
fn render_before(before: &[Before]) -> (String, Vec<String>, [Option<String>; 3]) {
    let mut seen_slots = [false; 8];
    let mut members = Vec::new();
    let mut kept = Vec::new();
    let mut others: [Option<String>; 3] = Default::default();
    for b in before {
        if b.slot < 7 && std::mem::replace(&mut seen_slots[b.slot], true) {
            continue;
        }
        let ws = if b.ows { " \t" } else { "" };
        let property = if b.property { ";ttl=5;flag" } else { "" };
        let member = match b.slot {
            0..=2 => {
                let key = OTHER_KEYS[b.slot];
                others[b.slot] = Some(b.value.clone());
                let m = format!("{key}={}{property}", enc(&b.value));
                kept.push(m.clone());
                format!("{ws}{m}{ws}")
            }
            3..=6 => format!("{ws}{}=stale{property}{ws}", KNOWN[b.slot - 3]),
            _ => ws.to_string(),
        };
        members.push(member);
    }
    (members.join(","), kept, others)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any values of several locals at once, with members of others already in the header
    /// (kept, in order, before ours) and stale members under our keys (replaced or removed).
    #[test]
    fn inject_then_extract_round_trips(values in values(), before in prop::collection::vec(before(), 0..6)) {
        let (header, kept, others) = render_before(&before);
        let mut headers = HashMap::new();
        if !header.is_empty() {
            headers.insert("baggage".to_string(), header.clone());
        }
        prop_assert_eq!(inject_values(&values, &mut headers), Ok(()));

        // Layout: the other members as they were (trimmed), then ours in propagator order.
        let written = headers.get("baggage").cloned().unwrap_or_default();
        let members: Vec<&str> = if written.is_empty() { Vec::new() } else { written.split(',').collect() };
        prop_assert_eq!(members.len(), kept.len() + values.keys_set().len(), "header {:?}", written);
        prop_assert_eq!(&members[..kept.len()], &kept[..]);
        let ours: Vec<&str> = members[kept.len()..].iter().map(|m| m.split('=').next().unwrap()).collect();
        prop_assert_eq!(ours, values.keys_set());
        prop_assert!(written.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
            "not a valid header value: {:?}", written);

        // Extraction: our values exactly, the others' too, no errors.
        let extracted = FULL.extract(&headers);
        prop_assert!(extracted.errors().is_empty(), "{:?} from {:?}", extracted.errors(), written);
        prop_assert_eq!(seen(&extracted), values.clone());
        prop_assert_eq!(seen_others(&extracted), others);

        // The same through `extract_headers` and our own propagator alone.
        let direct = PROPAGATOR.extract_headers([written.as_bytes()]);
        prop_assert!(direct.errors().is_empty());
        prop_assert_eq!(seen(&direct), values.clone());

        // And through `http::HeaderMap`, both ways.
        #[cfg(feature = "http")]
        {
            let mut map = http::HeaderMap::new();
            if !header.is_empty() {
                map.insert("baggage", http::HeaderValue::from_str(&header).unwrap());
            }
            prop_assert_eq!(inject_values(&values, &mut map), Ok(()));
            let all: Vec<_> = map.get_all("baggage").iter().collect();
            prop_assert!(all.len() <= 1);
            prop_assert_eq!(all.first().map(|v| v.as_bytes()).unwrap_or_default(), written.as_bytes());
            let extracted = FULL.extract(&map);
            prop_assert!(extracted.errors().is_empty());
            prop_assert_eq!(seen(&extracted), values.clone());
            prop_assert_eq!(seen_others(&extracted), seen_others(&FULL.extract_headers([written.as_bytes()])));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: hostile headers against a reference parser.

/// A baggage-octet (W3C): printable ASCII but space, `"`, `,`, `;` and `\`.
fn is_value_octet(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"\",;\\".contains(&b)
}

/// An RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows_ref(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// What the W3C grammar makes of one list member (`;` properties tolerated, whatever they are).
#[derive(Debug, PartialEq)]
enum Verdict<'a> {
    Empty,
    Malformed,
    Member { key: &'a [u8], value: String },
}

fn reference_member(raw: &[u8]) -> Verdict<'_> {
    let member = trim_ows_ref(raw);
    if member.is_empty() {
        return Verdict::Empty;
    }
    let pair = member.split(|&b| b == b';').next().unwrap_or_default();
    let Some(eq) = pair.iter().position(|&b| b == b'=') else {
        return Verdict::Malformed;
    };
    let key = trim_ows_ref(&pair[..eq]);
    let encoded = trim_ows_ref(&pair[eq + 1..]);
    if key.is_empty() || !key.iter().all(|&b| is_tchar(b)) {
        return Verdict::Malformed;
    }
    if !encoded.iter().all(|&b| is_value_octet(b)) {
        return Verdict::Malformed;
    }
    let mut bytes = Vec::new();
    let mut rest = encoded;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            match tail {
                [h, l, more @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let hex = [*h, *l];
                    let hex = std::str::from_utf8(&hex).unwrap();
                    bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    rest = more;
                }
                _ => return Verdict::Malformed,
            }
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    match String::from_utf8(bytes) {
        Ok(value) => Verdict::Member { key, value },
        Err(_) => Verdict::Malformed,
    }
}

/// What a known local makes of a decoded value (numbers as they print), or `None` if its
/// `FromStr` fails.
fn typed(key: usize, text: &str) -> Option<String> {
    match key {
        0 | 1 => Some(text.to_string()),
        2 => text.parse::<u64>().ok().map(|n| n.to_string()),
        _ => text.parse::<i32>().ok().map(|n| n.to_string()),
    }
}

/// Where a member lies with respect to the limits, from the header alone.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Zone {
    /// Among the first 64 members and within the first 8192 bytes: must be read.
    In,
    /// Among the first 64 members, ending past byte 8192: may be dropped (how bytes are
    /// counted around empty members and whitespace is the implementation's).
    Grey,
    /// The 65th member or later: must not be read.
    Out,
}

/// The start of a header, for messages.
fn short(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect()
}

/// Extracts `headers` every way there is and checks the result against the reference parser.
fn check_hostile(headers: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let slices: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
    let extracted = PROPAGATOR.extract_headers(slices.iter().copied());
    let got = seen(&extracted).texts();
    let errors = extracted.errors();

    // The reference: header values are lists joined by `,`.
    let joined = headers.join(&b','); // what the header values say together
    let mut end = 0usize;
    let mut nonempty = 0usize;
    // Per known key: values read for sure, values maybe read (in order).
    let mut sure: [Vec<String>; 4] = Default::default();
    let mut grey: [Vec<String>; 4] = Default::default();
    let (mut malformed, mut malformed_grey, mut any_out, mut any_grey) = (0, 0, false, false);
    let mut parse_fail = [0usize; 4];
    let mut parse_fail_grey = [0usize; 4];
    for (n, raw) in joined.split(|&b| b == b',').enumerate() {
        end += raw.len() + usize::from(n > 0);
        let verdict = reference_member(raw);
        if verdict == Verdict::Empty {
            continue;
        }
        let zone = if nonempty >= MAX_MEMBERS {
            Zone::Out
        } else if end <= MAX_BYTES {
            Zone::In
        } else {
            Zone::Grey
        };
        nonempty += 1;
        any_out |= zone == Zone::Out;
        any_grey |= zone == Zone::Grey;
        if zone == Zone::Out {
            continue;
        }
        match verdict {
            Verdict::Empty => unreachable!(),
            Verdict::Malformed if zone == Zone::In => malformed += 1,
            Verdict::Malformed => malformed_grey += 1,
            Verdict::Member { key, value } => {
                let Some(k) = KNOWN.iter().position(|known| known.as_bytes() == key) else {
                    continue; // unknown keys are ignored
                };
                match (typed(k, &value), zone) {
                    (Some(v), Zone::In) => sure[k].push(v),
                    (Some(v), _) => grey[k].push(v),
                    (None, Zone::In) => parse_fail[k] += 1,
                    (None, _) => parse_fail_grey[k] += 1,
                }
            }
        }
    }

    // Values: what is read is a prefix of the members, containing every `In` one; of
    // duplicates the last one read wins.
    for k in 0..4 {
        let last_sure = sure[k].last().cloned();
        if grey[k].is_empty() {
            prop_assert_eq!(
                &got[k],
                &last_sure,
                "key {} of {:?}",
                KNOWN[k],
                short(&joined)
            );
        } else {
            prop_assert!(
                got[k] == last_sure || got[k].as_ref().is_some_and(|g| grey[k].contains(g)),
                "key {}: {:?} is none of the values maybe read, in {:?}",
                KNOWN[k],
                got[k].as_deref().map(|g| short(g.as_bytes())),
                short(&joined)
            );
        }
    }

    // Errors: one per malformed member read, one per value that does not parse (by key), and
    // one for the whole header when members were dropped.
    let over = errors.iter().filter(|e| is_over_limit(e)).count();
    let by_key = |k: usize| errors.iter().filter(|e| e.key() == Some(KNOWN[k])).count();
    let others = errors
        .iter()
        .filter(|e| !is_over_limit(e) && e.key().is_none())
        .count();
    prop_assert!(over <= 1);
    if any_out {
        prop_assert_eq!(over, 1, "members past the 64th dropped silently");
    }
    if !any_out && !any_grey {
        prop_assert_eq!(over, 0);
    }
    prop_assert!(
        (malformed..=malformed + malformed_grey).contains(&others),
        "{} malformed errors, expected {}..={}: {:?}",
        others,
        malformed,
        malformed + malformed_grey,
        errors
    );
    for k in 0..4 {
        let n = by_key(k);
        prop_assert!(
            (parse_fail[k]..=parse_fail[k] + parse_fail_grey[k]).contains(&n),
            "{} parse errors for {}, expected {}..={}",
            n,
            KNOWN[k],
            parse_fail[k],
            parse_fail[k] + parse_fail_grey[k]
        );
    }
    prop_assert_eq!(
        errors.len(),
        over + others + (0..4).map(by_key).sum::<usize>()
    );
    for e in errors {
        prop_assert!(!e.to_string().is_empty());
        prop_assert!(
            e.member().chars().count() <= 64 + 3,
            "member shown too long: {:?}",
            e.member()
        );
    }

    // The same through the carriers.
    if let [one] = headers {
        if let Ok(text) = std::str::from_utf8(one) {
            let map = HashMap::from([("Baggage".to_string(), text.to_string())]);
            let other = PROPAGATOR.extract(&map);
            prop_assert_eq!(other.errors(), errors);
            prop_assert_eq!(seen(&other), seen(&extracted));
        }
    }
    #[cfg(feature = "http")]
    {
        let values: Result<Vec<_>, _> = headers
            .iter()
            .map(|h| http::HeaderValue::from_bytes(h))
            .collect();
        if let Ok(values) = values {
            let mut map = http::HeaderMap::new();
            map.insert("content-type", http::HeaderValue::from_static("text/plain"));
            for v in values {
                map.append("baggage", v);
            }
            let other = PROPAGATOR.extract(&map);
            prop_assert_eq!(other.errors(), errors);
            prop_assert_eq!(seen(&other), seen(&extracted));
        }
    }
    Ok(())
}

/// Text that a `u64` or `i32` local may or may not parse.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        prop::sample::select(
            &[
                "",
                "-1",
                "+7",
                " 7",
                "07",
                "1e3",
                "abc",
                "0x10",
                "18446744073709551616",
                "-2147483649",
                "2147483647",
                "٣",
                "1_000",
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

/// Malformed members, and well-formed ones that look odd.
const JUNK: &[&[u8]] = &[
    b"novalue",
    b"=v",
    b" = ",
    b"k(=1",
    b"k y=1",
    b"s=%zz",
    b"s=%4",
    b"s=%",
    b"s=%FF",
    b"s=%C3",
    b"s=%e9",
    b"s=a b",
    b"s=\"q\"",
    b"s=\\",
    b"s=\xff",
    b"\xff=1",
    b"s\xc3\xa9=1",
    b"n=%2B7",
    b"n=-%31",
    b"i=%00",
    b";s=1",
    b"s;=1",
    b"s==",
    b"n==1",
];

/// One list member, well-formed or not.
fn hostile_member() -> impl Strategy<Value = Vec<u8>> {
    let known = (
        0usize..4,
        prop_oneof![tricky_string(), number_text()],
        any::<bool>(),
        prop::sample::select(&["", " ", "\t", " \t "][..]),
        prop::sample::select(&["", ";p", ";ttl=5", " ; a=%zz;b", ";\u{ff}", ";=;,"][..]),
    )
        .prop_map(|(k, text, lax, ws, property)| {
            let value = if lax { enc_min(&text) } else { enc(&text) };
            let property = property.split(',').next().unwrap_or_default();
            format!("{ws}{}{ws}={ws}{value}{ws}{property}", KNOWN[k]).into_bytes()
        });
    let unknown = ("[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}", tricky_string())
        .prop_map(|(key, text)| format!("{key}={}", enc_min(&text)).into_bytes());
    prop_oneof![
        6 => known,
        2 => unknown,
        1 => Just(Vec::new()),
        1 => Just(b" \t ".to_vec()),
        2 => prop::sample::select(JUNK).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..16),
        1 => (1usize..3000).prop_map(|n| {
            let mut m = vec![b'k'; n];
            m.extend_from_slice(b"=v");
            m
        }),
        1 => (0usize..9000).prop_map(|n| {
            let mut m = b"s=".to_vec();
            m.resize(n + 2, b'x');
            m
        }),
    ]
}

/// Headers of a few members, or of about 64.
fn member_list() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        3 => prop::collection::vec(hostile_member(), 0..12),
        1 => prop::collection::vec(hostile_member(), 55..75),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Insert(Index, u8),
    Delete(Index),
    Replace(Index, u8),
    Splice(Index, &'static [u8]),
    Truncate(Index),
}

/// Pieces of members, for random headers.
const TOKENS: &[&[u8]] = &[
    b"s=", b"n=", b"i=", b",s=", b",n=", b",i=", b",", b";", b"%", b"%41", b"%C3%A9", b"%e2%82",
    b" ", b"\t", b"7", b"-1", b"x", b"\xff",
];

const SPLICES: &[&[u8]] = &[
    b",",
    b";",
    b"=",
    b"%",
    b"%G",
    b"%4",
    b"%e9",
    b"%C3",
    b"%FF",
    b" ",
    b"\t",
    b",,",
    b"s=",
    b"n=",
    b"\xff",
    b"\xc3\xa9",
    b"s=%",
    b";p=%%",
    b"\x00",
    b"\r\n",
    b"\x7f",
];

fn mutation_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(&b",;=% \t\"\\\xff\x80\xc3"[..]),
        0x21u8..0x7f,
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), mutation_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), mutation_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), prop::sample::select(SPLICES)).prop_map(|(i, s)| Mutation::Splice(i, s)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
        Mutation::Splice(i, s) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, s.iter().copied());
        }
        Mutation::Delete(i) if len > 0 => {
            bytes.remove(i.index(len));
        }
        Mutation::Replace(i, b) if len > 0 => bytes[i.index(len)] = *b,
        Mutation::Truncate(i) if len > 0 => bytes.truncate(i.index(len)),
        _ => {}
    }
}

/// Cuts `bytes` into header values at `cuts`.
fn split_at(bytes: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut values = Vec::new();
    let mut start = 0;
    for a in at {
        values.push(bytes[start..a].to_vec());
        start = a;
    }
    values.push(bytes[start..].to_vec());
    values
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Arbitrary bytes (biased towards the baggage alphabet and its tokens), cut into header
    /// values.
    #[test]
    fn random_bytes_never_panic_and_match_the_reference(
        bytes in prop::collection::vec(prop_oneof![
            2 => any::<u8>().prop_map(|b| vec![b]),
            2 => prop::sample::select(&b",;=% \tsnik0123456789aAfF\xff"[..]).prop_map(|b| vec![b]),
            1 => prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
        ], 0..200).prop_map(|chunks| chunks.concat()),
        cuts in prop::collection::vec(any::<Index>(), 0..3),
    ) {
        check_hostile(&split_at(&bytes, &cuts))?;
    }

    /// Well-formed and malformed members, then byte-level mutations, cut into header values.
    #[test]
    fn mutated_headers_never_panic_and_match_the_reference(
        members in member_list(),
        separator in prop::sample::select(&[",", ", ", " ,\t"][..]),
        mutations in prop::collection::vec(mutation(), 0..4),
        cuts in prop::collection::vec(any::<Index>(), 0..3),
    ) {
        let mut bytes = members.join(separator.as_bytes());
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check_hostile(&split_at(&bytes, &cuts))?;
    }
}

#[test]
fn reference_parser_agrees_with_the_examples_of_the_docs() {
    // Sanity of the reference itself, on the cases the design names.
    assert_eq!(
        reference_member(b" k = v;p=1 "),
        Verdict::Member {
            key: b"k",
            value: "v".into()
        }
    );
    assert_eq!(reference_member(b"k=%zz"), Verdict::Malformed);
    assert_eq!(reference_member(b"novalue"), Verdict::Malformed);
    assert_eq!(reference_member(b"=oops"), Verdict::Malformed);
    assert_eq!(reference_member(b" \t"), Verdict::Empty);
    assert_eq!(
        reference_member(b"k=a%2Cb%25"),
        Verdict::Member {
            key: b"k",
            value: "a,b%".into()
        }
    );
}

#[test]
fn a_value_that_does_not_parse_is_reported_by_key_and_the_others_apply() {
    let extracted = PROPAGATOR.extract(&carrier("n=many, s=ok;p, i=-3, unknown=1, x"));
    let errors = extracted.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[1].key(), Some("n"));
    assert!(errors[1].to_string().contains("`N`"), "{}", errors[1]);
    assert_eq!(errors[0].key(), None);
    assert_eq!(errors[0].member(), "x");
    assert_eq!(
        seen(&extracted),
        Values {
            s: Some("ok".into()),
            t: None,
            n: None,
            i: Some(-3),
        }
    );
}

#[test]
fn every_kind_of_malformed_member_is_reported_and_never_applied() {
    for (header, problem) in [
        ("s", "no `=`"),
        ("=x", "key"),
        ("s t=1", "key"),
        ("s=a b", "0x20"),
        ("s=\"q\"", "0x22"),
        ("s=%zz", "hex"),
        ("s=%4", "hex"),
        ("s=%", "hex"),
        ("s=%FF", "UTF-8"),
        ("s=%C3%28", "UTF-8"),
    ] {
        let extracted = PROPAGATOR.extract_headers([header.as_bytes(), b"n=1".as_slice()]);
        assert_eq!(extracted.errors().len(), 1, "{header}");
        let e = &extracted.errors()[0];
        assert!(e.to_string().contains(problem), "{header}: {e}");
        assert_eq!(e.member(), header);
        assert_eq!(e.key(), None);
        assert_eq!(
            seen(&extracted),
            Values {
                n: Some(1),
                ..Values::default()
            },
            "{header}"
        );
    }
    // Raw non-UTF-8 bytes: in a value, in a key; in a property (tolerated).
    let extracted = PROPAGATOR.extract_headers([b"s=\xc3\xa9,\xff=1,i=1;\xff".as_slice()]);
    assert_eq!(extracted.errors().len(), 2);
    assert_eq!(extracted.errors()[0].member(), "s=\u{e9}");
    assert_eq!(extracted.errors()[1].member(), "\u{fffd}=1");
    assert_eq!(seen(&extracted).i, Some(1));
    // A long member is shown cut.
    let long = format!("{}=%", "k".repeat(200));
    let extracted = PROPAGATOR.extract_headers([long.as_bytes()]);
    assert_eq!(
        extracted.errors()[0].member(),
        format!("{}...", "k".repeat(64))
    );
}

/// Regression (issue 17, fault 7): a `HashMap` carrier holding several spellings of the header
/// (`baggage`, `Baggage`, `BAGGAGE`) was read in the map's random order, so which member won on
/// a duplicate key changed from map to map. It is read in one order, whatever the map's hasher:
/// the keys in byte order, so the lower-case `baggage` comes last and its members win on a
/// duplicate key.
#[test]
fn hashmap_carrier_with_several_spellings_of_the_header_is_read_in_a_fixed_order() {
    for _ in 0..64 {
        // A new `RandomState` per map: its iteration order changes from map to map.
        let headers = HashMap::from([
            ("baggage".to_string(), "s=lower".to_string()),
            ("Baggage".to_string(), "s=upper,n=1".to_string()),
            ("BAGGAGE".to_string(), "s=shout,i=2".to_string()),
        ]);
        let extracted = PROPAGATOR.extract(&headers);
        assert!(extracted.errors().is_empty());
        let v = seen(&extracted);
        assert_eq!(
            (v.s.as_deref(), v.n, v.i),
            (Some("lower"), Some(1), Some(2))
        );

        // Injecting keeps the other parties' members of every spelling, in the same order,
        // and leaves one (lower-case) header.
        let mut headers = HashMap::from([
            ("baggage".to_string(), "a=1".to_string()),
            ("Baggage".to_string(), "b=2".to_string()),
        ]);
        inject_values(
            &Values {
                n: Some(3),
                ..Values::default()
            },
            &mut headers,
        )
        .unwrap();
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["baggage"], "b=2,a=1,n=3");
    }
}

/// Regression (issue 17, fault 6; W3C MUST): a percent-encoded value that is not UTF-8 is
/// rejected (reported, never decoded with U+FFFD) and the valid members still apply, through
/// every carrier; properties handed to OpenTelemetry were passed on raw, and now a property
/// that is not UTF-8 is dropped while its member is kept.
#[test]
fn percent_encoded_bytes_that_are_not_utf8_are_rejected_not_replaced() {
    let header = "s=ab%FFcd,n=4,other=x%C3";
    let check = |extracted: &Extracted| {
        let v = seen(extracted);
        assert_eq!((v.s, v.n), (None, Some(4)));
        let errors = extracted.errors();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].member(), "s=ab%FFcd");
        assert!(errors[0].to_string().contains("UTF-8"), "{}", errors[0]);
        assert_eq!(errors[1].member(), "other=x%C3");
    };
    check(&PROPAGATOR.extract(&carrier(header)));
    check(&PROPAGATOR.extract_headers([header.as_bytes()]));
    #[cfg(feature = "http")]
    {
        let mut map = http::HeaderMap::new();
        map.insert("baggage", http::HeaderValue::from_static(header));
        check(&PROPAGATOR.extract(&map));
    }
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::baggage::BaggageExt;
        use opentelemetry::propagation::TextMapPropagator;
        let cx = TextMapPropagator::extract(&*PROPAGATOR, &carrier(header));
        check(cx.get::<Extracted>().unwrap());
        assert!(cx.baggage().is_empty(), "{:?}", cx.baggage());
        // Nor in a property: `p=%FF` is dropped from the metadata, the member is kept.
        let cx = TextMapPropagator::extract(&*PROPAGATOR, &carrier("other=1;p=%FF;q=%C3%A9"));
        assert_eq!(
            cx.baggage()
                .get_with_metadata("other")
                .map(|(v, m)| (v.as_str(), m.as_str())),
            Some(("1", "q=\u{e9}"))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: the W3C limits.

/// `n` members: `s=first`, fillers of unknown keys, and at the positions given (1-based) the
/// members given.
fn members(n: usize, at: &[(usize, &str)]) -> Vec<String> {
    (1..=n)
        .map(|p| match at.iter().find(|(q, _)| *q == p) {
            Some((_, m)) => (*m).to_string(),
            None => format!("filler{p}=1"),
        })
        .collect()
}

#[test]
fn exactly_64_members_are_read() {
    let header = members(64, &[(1, "s=first"), (64, "n=64")]).join(",");
    let extracted = PROPAGATOR.extract(&carrier(&header));
    assert!(extracted.errors().is_empty(), "{:?}", extracted.errors());
    let v = seen(&extracted);
    assert_eq!((v.s.as_deref(), v.n), (Some("first"), Some(64)));

    // Empty members and whitespace do not count.
    let header = members(64, &[(1, "s=first"), (64, "n=64")]).join(", ,\t,");
    let extracted = PROPAGATOR.extract(&carrier(&format!(",{header},")));
    assert!(extracted.errors().is_empty(), "{:?}", extracted.errors());
    assert_eq!(seen(&extracted).n, Some(64));
}

#[test]
fn the_65th_member_is_reported_over_the_limit_and_the_first_64_apply() {
    let header = members(65, &[(1, "s=first"), (64, "n=64"), (65, "i=65")]).join(",");
    let extracted = PROPAGATOR.extract(&carrier(&header));
    let errors = extracted.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(is_over_limit(&errors[0]));
    assert!(
        errors[0].to_string().contains("1 members dropped"),
        "{}",
        errors[0]
    );
    let v = seen(&extracted);
    assert_eq!((v.s.as_deref(), v.n, v.i), (Some("first"), Some(64), None));

    // Malformed members count too; and many more members are one error.
    let header = members(200, &[(63, "broken"), (64, "n=64"), (65, "i=65")]).join(",");
    let extracted = PROPAGATOR.extract(&carrier(&header));
    assert_eq!(extracted.errors().len(), 2);
    assert_eq!(extracted.errors()[0].member(), "broken");
    assert!(extracted.errors()[1]
        .to_string()
        .contains("136 members dropped"));
    assert_eq!((seen(&extracted).n, seen(&extracted).i), (Some(64), None));

    // Across header values.
    let first = members(60, &[]).join(",");
    let second = members(5, &[(4, "n=64"), (5, "i=65")]).join(",");
    let extracted = PROPAGATOR.extract_headers([first.as_bytes(), second.as_bytes()]);
    assert_eq!(extracted.errors().len(), 1);
    assert_eq!((seen(&extracted).n, seen(&extracted).i), (Some(64), None));
}

#[test]
fn the_8192_byte_boundary() {
    // One member, exactly at the limit, then one byte over.
    let at = format!("s={}", "x".repeat(MAX_BYTES - 2));
    assert_eq!(at.len(), 8192);
    let extracted = PROPAGATOR.extract(&carrier(&at));
    assert!(extracted.errors().is_empty());
    assert_eq!(seen(&extracted).s.map(|s| s.len()), Some(8190));

    let over = format!("{at}x");
    let extracted = PROPAGATOR.extract(&carrier(&over));
    assert_eq!(extracted.errors().len(), 1);
    assert!(is_over_limit(&extracted.errors()[0]));
    assert_eq!(seen(&extracted), Values::default());

    // Two members (with whitespace, which counts), the second crossing the limit.
    let head = "n=7, ";
    let at = format!("{head}s={}", "x".repeat(MAX_BYTES - head.len() - 2));
    assert_eq!(at.len(), 8192);
    let extracted = PROPAGATOR.extract(&carrier(&at));
    assert!(extracted.errors().is_empty());
    assert_eq!(seen(&extracted).s.map(|s| s.len()), Some(8185));
    let extracted = PROPAGATOR.extract(&carrier(&format!("{at}x")));
    assert_eq!(extracted.errors().len(), 1);
    assert!(is_over_limit(&extracted.errors()[0]));
    assert_eq!(seen(&extracted).n, Some(7));
    assert_eq!(seen(&extracted).s, None);

    // Across two header values (joined by one `,`).
    let tail = format!("s={}", "x".repeat(MAX_BYTES - 3 - 1 - 2));
    let extracted = PROPAGATOR.extract_headers([b"n=7".as_slice(), tail.as_bytes()]);
    assert!(extracted.errors().is_empty());
    assert!(seen(&extracted).s.is_some());
    let tail = format!("{tail}x");
    let extracted = PROPAGATOR.extract_headers([b"n=7".as_slice(), tail.as_bytes()]);
    assert_eq!(extracted.errors().len(), 1);
    assert_eq!(seen(&extracted).s, None);
    assert_eq!(seen(&extracted).n, Some(7));

    // A huge header is one error, not one per member.
    let huge = "a=1,".repeat(100_000);
    let extracted = PROPAGATOR.extract(&carrier(&huge));
    assert_eq!(extracted.errors().len(), 1);
}

#[test]
fn inject_over_the_limits_writes_what_fits_and_says_how_much_did_not() {
    let over_limit = |r: Result<(), BaggageError>| {
        let e = r.expect_err("over the limits");
        assert!(is_over_limit(&e), "{e:?}");
        e.to_string()
    };

    // Exactly at the byte limit, encoded: `%` is three bytes.
    let mut headers = HashMap::new();
    let at = Values {
        s: Some("%".repeat((MAX_BYTES - 2) / 3)),
        ..Values::default()
    };
    assert_eq!((MAX_BYTES - 2) % 3, 0);
    assert_eq!(inject_values(&at, &mut headers), Ok(()));
    assert_eq!(headers["baggage"].len(), MAX_BYTES);
    assert_eq!(seen(&PROPAGATOR.extract(&headers)), at);

    // One byte over: nothing fits.
    let mut headers = HashMap::new();
    let over = Values {
        s: Some(format!("x{}", at.s.as_deref().unwrap())),
        ..Values::default()
    };
    let message = over_limit(inject_values(&over, &mut headers));
    assert!(message.contains("1 members dropped"), "{message}");
    assert_eq!(headers.get("baggage"), None);

    // The first fits, the second does not; a later small one still does.
    let mut headers = HashMap::new();
    let values = Values {
        s: Some("x".repeat(8000)),
        t: Some("y".repeat(200)),
        n: Some(7),
        i: None,
    };
    let message = over_limit(inject_values(&values, &mut headers));
    assert!(message.contains("1 members dropped"), "{message}");
    assert!(headers["baggage"].len() <= MAX_BYTES);
    let extracted = PROPAGATOR.extract(&headers);
    assert!(extracted.errors().is_empty());
    assert_eq!(
        seen(&extracted),
        Values {
            t: None,
            ..values.clone()
        }
    );

    // 64 members already there: ours do not fit; 63: one does.
    let mut headers = carrier(&members(64, &[(1, "a=1")]).join(","));
    let message = over_limit(inject_values(&values, &mut headers));
    assert!(message.contains("3 members dropped"), "{message}");
    assert_eq!(headers["baggage"].split(',').count(), 64);
    let mut headers = carrier(&members(63, &[]).join(","));
    let message = over_limit(inject_values(&values, &mut headers));
    // `s` is too long by now, `t` fits, `n` is the 65th.
    assert!(message.contains("2 members dropped"), "{message}");
    assert_eq!(headers["baggage"].split(',').count(), 64);
    assert_eq!(
        seen(&PROPAGATOR.extract(&headers)),
        Values {
            t: values.t,
            ..Values::default()
        }
    );
}

/// A member under a carried key that is already in the header is the local's: replaced by its
/// value, or removed when the local is unbound (or its value does not fit).
#[test]
fn inject_replaces_or_removes_a_stale_member_under_a_carried_key() {
    let mut headers = carrier("s=stale,other=1,n=0");
    let values = Values {
        n: Some(1),
        ..Values::default()
    };
    assert_eq!(inject_values(&values, &mut headers), Ok(()));
    assert_eq!(headers["baggage"], "other=1,n=1");

    let mut headers = carrier("other=1,s=stale");
    assert_eq!(inject_values(&Values::default(), &mut headers), Ok(()));
    assert_eq!(headers["baggage"], "other=1");

    // Header names are case-insensitive: one header after, named in lower case.
    let mut headers = HashMap::from([("Baggage".to_string(), " s = stale ,other=1".to_string())]);
    assert_eq!(inject_values(&values, &mut headers), Ok(()));
    assert_eq!(
        headers,
        HashMap::from([("baggage".to_string(), "other=1,n=1".to_string())])
    );
}

/// The same when the stale member is all the header has: nothing is left to write, and the
/// old header must not stay behind (the receiver would see the stale value as current).
#[test]
fn inject_removes_a_stale_member_when_nothing_else_is_left_unbound() {
    let mut headers = carrier("s=stale");
    assert_eq!(inject_values(&Values::default(), &mut headers), Ok(()));
    let extracted = PROPAGATOR.extract(&headers);
    assert_eq!(
        seen(&extracted).s,
        None,
        "the receiver sees the stale value: header {:?}",
        headers.get("baggage")
    );
}

/// As above, when the local's value does not fit.
#[test]
fn inject_removes_a_stale_member_when_nothing_else_is_left_too_long() {
    let mut headers = carrier("s=stale");
    let huge = Values {
        s: Some("x".repeat(MAX_BYTES)),
        ..Values::default()
    };
    assert!(inject_values(&huge, &mut headers).is_err());
    let extracted = PROPAGATOR.extract(&headers);
    assert_eq!(
        seen(&extracted).s,
        None,
        "the receiver sees the stale value: header {:?}",
        headers.get("baggage")
    );
}

// ---------------------------------------------------------------------------------------------
// Part 4: `http::HeaderMap`.

#[cfg(feature = "http")]
mod header_map {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn map(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("traceparent", HeaderValue::from_static("unrelated"));
        for v in values {
            map.append("baggage", HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn several_baggage_values_are_read_in_order() {
        let extracted = PROPAGATOR.extract(&map(&[b"s=a,n=1", b"i=-3", b"s=b"]));
        assert!(extracted.errors().is_empty());
        assert_eq!(
            seen(&extracted),
            Values {
                s: Some("b".into()), // the later one
                t: None,
                n: Some(1),
                i: Some(-3),
            }
        );

        // The limits apply to all values together, in order.
        let first = members(62, &[(1, "s=first")]).join(",");
        let extracted = PROPAGATOR.extract(&map(&[first.as_bytes(), b"i=63", b"n=64,s=65"]));
        assert_eq!(extracted.errors().len(), 1);
        let v = seen(&extracted);
        assert_eq!(
            (v.s.as_deref(), v.i, v.n),
            (Some("first"), Some(63), Some(64))
        );

        // Same as `extract_headers` on the values.
        let values: [&[u8]; 3] = [b"s=%20x", b"bad", b"n=5"];
        let a = PROPAGATOR.extract(&map(&values));
        let b = PROPAGATOR.extract_headers(values);
        assert_eq!(a.errors(), b.errors());
        assert_eq!(seen(&a), seen(&b));
    }

    #[test]
    fn non_utf8_header_values() {
        let extracted = PROPAGATOR.extract(&map(&[b"s=\xc3\xa9,n=5", b"\xff\xfe", b"i=1"]));
        assert_eq!(extracted.errors().len(), 2, "{:?}", extracted.errors());
        let v = seen(&extracted);
        assert_eq!((v.s, v.n, v.i), (None, Some(5), Some(1)));

        // Percent-encoded UTF-8 is how it is sent.
        let extracted = PROPAGATOR.extract(&map(&[b"s=%C3%A9"]));
        assert_eq!(seen(&extracted).s.as_deref(), Some("é"));
    }

    #[test]
    fn inject_then_extract() {
        let values = Values {
            s: Some("a, b; c=d % é\t😀".into()),
            t: Some(String::new()),
            n: Some(u64::MAX),
            i: Some(i32::MIN),
        };
        let mut map = HeaderMap::new();
        map.insert("baggage", HeaderValue::from_static("other=1;p"));
        assert_eq!(inject_values(&values, &mut map), Ok(()));
        assert_eq!(map.get_all("baggage").iter().count(), 1);
        assert!(map["baggage"].to_str().unwrap().starts_with("other=1;p,s="));
        let extracted = PROPAGATOR.extract(&map);
        assert!(extracted.errors().is_empty());
        assert_eq!(seen(&extracted), values);
    }

    /// Another party's members survive our injection, whichever of several `baggage` values
    /// they came in (DESIGN: "Members of an existing header with other keys are kept").
    #[test]
    fn inject_keeps_the_members_of_every_existing_baggage_value() {
        let mut map = map(&[b"o1=a", b"o2=b,s=stale"]);
        let values = Values {
            n: Some(1),
            ..Values::default()
        };
        assert_eq!(inject_values(&values, &mut map), Ok(()));
        let all: Vec<&str> = map
            .get_all("baggage")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let joined = all.join(",");
        assert!(
            joined.contains("o1=a") && joined.contains("o2=b"),
            "members of other parties lost: {all:?}"
        );
        assert!(!joined.contains("stale"), "{all:?}");
    }

    /// An existing header with a byte `to_str` rejects still has other parties' members; the
    /// member that is not text is left out and reported (it was dropped without a word).
    #[test]
    fn inject_keeps_valid_members_of_a_non_utf8_existing_value() {
        let mut map = map(&[b"o1=a,junk=\xff"]);
        let values = Values {
            n: Some(1),
            ..Values::default()
        };
        let err = inject_values(&values, &mut map).expect_err("`junk` is reported");
        assert!(err.to_string().contains("0xFF"), "{err}");
        let all: Vec<String> = map
            .get_all("baggage")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        assert!(
            all.iter().any(|v| v.contains("o1=a")),
            "member of another party lost: {all:?}"
        );
        assert_eq!(seen(&PROPAGATOR.extract(&map)).n, Some(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Part 5: OpenTelemetry.

#[cfg(feature = "opentelemetry")]
mod otel {
    use super::*;
    use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
    use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context as Cx;
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

    /// What `opentelemetry_sdk`'s `BaggagePropagator` reads from `headers`, by key.
    fn otel_reads(headers: &HashMap<String, String>) -> HashMap<String, (String, String)> {
        let cx = BaggagePropagator::new().extract(headers);
        cx.baggage()
            .iter()
            .map(|(k, (v, m))| {
                (
                    k.as_str().to_string(),
                    (v.as_str().to_string(), m.as_str().to_string()),
                )
            })
            .collect()
    }

    /// What a correct reader sees for `values`, as OpenTelemetry keeps text: trimmed
    /// (`BaggagePropagator` trims values on both sides; nothing we can do about that).
    fn as_otel_sees(values: &Values) -> HashMap<String, String> {
        KNOWN
            .iter()
            .zip(values.texts())
            .filter_map(|(k, v)| Some((k.to_string(), v?.trim().to_string())))
            .collect()
    }

    fn values_only(read: HashMap<String, (String, String)>) -> HashMap<String, String> {
        read.into_iter().map(|(k, (v, _))| (k, v)).collect()
    }

    /// A string OpenTelemetry's injector writes as a valid header: it leaves `%` and `\`
    /// unencoded (see `otel_injects_percent_and_backslash_unencoded`).
    fn otel_safe_string() -> impl Strategy<Value = String> {
        tricky_string().prop_map(|s| s.replace(['%', '\\'], "_"))
    }

    fn span_context() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// (a) What we inject, `BaggagePropagator` extracts: our keys, the values decoded.
        #[test]
        fn otel_sdk_extracts_what_we_inject(values in values()) {
            let mut headers = HashMap::new();
            prop_assert_eq!(inject_values(&values, &mut headers), Ok(()));
            prop_assert_eq!(values_only(otel_reads(&headers)), as_otel_sees(&values), "header {:?}", headers.get("baggage"));

            // The same through our `TextMapPropagator::inject_context`.
            let mut headers = HashMap::new();
            Context::new().run(|| {
                values.bind();
                PROPAGATOR.inject_context(&Cx::new(), &mut headers);
            });
            prop_assert_eq!(values_only(otel_reads(&headers)), as_otel_sees(&values), "header {:?}", headers.get("baggage"));
        }

        /// (b) What `BaggagePropagator` injects — our keys among others, with metadata — we
        /// extract: our locals restored, other keys ignored.
        #[test]
        fn we_extract_what_otel_sdk_injects(
            s in otel_safe_string(),
            t in otel_safe_string(),
            n in any::<u64>(),
            other in otel_safe_string(),
            metadata in prop::sample::select(&["", "m", "ttl=5", "a;b=c"][..]),
        ) {
            let cx = Cx::new().with_baggage(vec![
                KeyValueMetadata::new("s", s.clone(), metadata),
                KeyValueMetadata::new(KEY_T, t.clone(), ""),
                KeyValueMetadata::new("n", n.to_string(), metadata),
                KeyValueMetadata::new("other", other.clone(), metadata),
                KeyValueMetadata::new("z~", "1", ""),
            ]);
            let mut headers = HashMap::new();
            BaggagePropagator::new().inject_context(&cx, &mut headers);

            let extracted = PROPAGATOR.extract(&headers);
            prop_assert!(extracted.errors().is_empty(), "{:?} from {:?}", extracted.errors(), headers);
            let expected = Values { s: Some(s.trim().into()), t: Some(t.trim().into()), n: Some(n), i: None };
            prop_assert_eq!(seen(&extracted), expected.clone());

            // Through our `TextMapPropagator`: ours into `Extracted`, the rest into OTel baggage.
            let cx = TextMapPropagator::extract(&*PROPAGATOR, &headers);
            let ours = cx.get::<Extracted>().expect("an Extracted in the context");
            prop_assert_eq!(seen(ours), expected);
            let baggage = cx.baggage();
            prop_assert_eq!(baggage.get("other").map(|v| v.as_str()), Some(other.trim()));
            prop_assert_eq!(
                baggage.get_with_metadata("other").map(|(_, m)| m.as_str()),
                Some(metadata)
            );
            prop_assert_eq!(baggage.get("z~").map(|v| v.as_str()), Some("1"));
            prop_assert_eq!(baggage.get("s"), None);
            prop_assert_eq!(baggage.len(), 2);
        }
    }

    /// Minimal case of (a): `=` is a baggage-octet, so leaving it unencoded is valid W3C; but
    /// `BaggagePropagator` splits a member on every `=` and keeps the first two pieces.
    #[test]
    fn otel_sdk_extracts_a_value_with_an_equals_sign() {
        let mut headers = HashMap::new();
        let values = Values {
            s: Some("a=b".into()),
            ..Values::default()
        };
        assert_eq!(inject_values(&values, &mut headers), Ok(()));
        assert_eq!(
            otel_reads(&headers).get("s").map(|(v, _)| v.as_str()),
            Some("a=b"),
            "header {:?}",
            headers["baggage"]
        );
    }

    /// The same through our `TextMapPropagator`, for the context's OpenTelemetry baggage.
    #[test]
    fn otel_sdk_extracts_an_otel_value_with_an_equals_sign_that_we_inject() {
        let cx = Cx::new().with_baggage(vec![KeyValueMetadata::new("other", "a=b", "")]);
        let mut headers = HashMap::new();
        PROPAGATOR.inject_context(&cx, &mut headers);
        assert_eq!(
            otel_reads(&headers).get("other").map(|(v, _)| v.as_str()),
            Some("a=b"),
            "header {:?}",
            headers["baggage"]
        );
    }

    /// `BaggagePropagator` leaves `%` and `\` unencoded (not W3C): we report such members
    /// rather than guess, and the other members still apply.
    #[test]
    fn otel_injects_percent_and_backslash_unencoded() {
        for value in ["100%", "%zz", "a\\b"] {
            let cx = Cx::new().with_baggage(vec![
                KeyValueMetadata::new("s", value, ""),
                KeyValueMetadata::new("n", "5", ""),
            ]);
            let mut headers = HashMap::new();
            BaggagePropagator::new().inject_context(&cx, &mut headers);
            let extracted = PROPAGATOR.extract(&headers);
            assert_eq!(extracted.errors().len(), 1, "{value}: {headers:?}");
            assert_eq!(extracted.errors()[0].key(), None);
            let v = seen(&extracted);
            assert_eq!((v.s, v.n), (None, Some(5)), "{value}");
        }
    }

    /// (c) Next to `TraceContextPropagator` in a composite: both headers written, both read.
    #[test]
    fn composite_with_trace_context() {
        let composite = TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(Propagator::new().with(&S).with(&N)),
        ]);
        let fields: Vec<&str> = composite.fields().collect();
        assert!(fields.contains(&"traceparent"), "{fields:?}");
        assert!(fields.contains(&"baggage"), "{fields:?}");
        let ours: Vec<&str> = PROPAGATOR.fields().collect();
        assert_eq!(ours, ["baggage"]);

        let cx = Cx::new().with_remote_span_context(span_context());
        let mut headers = HashMap::new();
        Context::new().run(|| {
            S.set("acme, inc.".into());
            N.set(42);
            composite.inject_context(&cx, &mut headers);
        });
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers["baggage"], "s=acme%2C%20inc.,n=42");

        let cx = composite.extract(&headers);
        assert_eq!(cx.span().span_context(), &span_context());
        let extracted = cx.get::<Extracted>().expect("an Extracted in the context");
        assert!(extracted.errors().is_empty());
        let v = seen(extracted);
        assert_eq!((v.s.as_deref(), v.n), (Some("acme, inc."), Some(42)));

        // Without a baggage header: the span context, and an empty `Extracted`.
        headers.remove("baggage");
        let cx = composite.extract(&headers);
        assert!(cx.span().span_context().is_valid());
        let extracted = cx.get::<Extracted>().expect("an Extracted in the context");
        assert!(extracted.snapshot().is_empty());
        assert!(extracted.errors().is_empty());
    }

    /// (d) Our `inject_context` sends the context's OpenTelemetry baggage with our locals
    /// (the locals' values under their keys); our `extract` puts the other keys into
    /// OpenTelemetry baggage.
    #[test]
    fn text_map_propagator_carries_otel_baggage_too() {
        let cx = Cx::new().with_baggage(vec![
            KeyValueMetadata::new("other", "v,1 é;%", "ttl=5"),
            KeyValueMetadata::new("s", "from-otel", ""),
            KeyValueMetadata::new("n", "3", ""),
        ]);
        let mut headers = HashMap::new();
        Context::new().run(|| {
            S.set("from-local".into());
            PROPAGATOR.inject_context(&cx, &mut headers);
        });
        let read = otel_reads(&headers);
        assert_eq!(
            read.get("other"),
            Some(&("v,1 é;%".to_string(), "ttl=5".to_string())),
            "header {:?}",
            headers["baggage"]
        );
        assert_eq!(read["s"].0, "from-local");
        // `n` is carried and unbound: the local's (absent) value, not OpenTelemetry's.
        assert_eq!(read.get("n"), None);
        assert_eq!(read.len(), 2);

        // Back through ours.
        let parent = Cx::new().with_baggage(vec![KeyValueMetadata::new("parent", "1", "")]);
        let cx = PROPAGATOR.extract_with_context(&parent, &headers);
        let extracted = cx.get::<Extracted>().unwrap();
        assert_eq!(seen(extracted).s.as_deref(), Some("from-local"));
        let baggage = cx.baggage();
        assert_eq!(
            baggage
                .get_with_metadata("other")
                .map(|(v, m)| (v.as_str(), m.as_str())),
            Some(("v,1 é;%", "ttl=5"))
        );
        assert_eq!(baggage.get("s"), None);
        assert_eq!(baggage.len(), 1, "{baggage:?}");

        // Malformed members: reported in `Extracted`, never in OpenTelemetry baggage.
        let headers = carrier("broken, s=ok, n=x, k=%zz, other=fine");
        let cx = TextMapPropagator::extract(&*PROPAGATOR, &headers);
        let extracted = cx.get::<Extracted>().unwrap();
        assert_eq!(extracted.errors().len(), 3, "{:?}", extracted.errors());
        assert_eq!(seen(extracted).s.as_deref(), Some("ok"));
        assert_eq!(
            cx.baggage()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["other"]
        );
    }
}

/// Regression (issue 17, fault 2): OpenTelemetry metadata was written into the header verbatim,
/// so `p=1,s=forged` became a member `s=forged` and CR LF went into the header. It is written
/// as W3C properties (token keys, percent-encoded values), so it can neither forge a member nor
/// break the header, and reads back the same through `opentelemetry_sdk`'s `BaggagePropagator`
/// and through ours.
#[cfg(feature = "opentelemetry")]
mod otel_metadata {
    use super::*;
    use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::Context as Cx;
    use opentelemetry_sdk::propagation::BaggagePropagator;

    /// Our `inject_context` of `cx`, with `S` bound to "mine".
    fn inject(cx: &Cx) -> HashMap<String, String> {
        let mut headers = HashMap::new();
        Context::new().run(|| {
            N.set(9);
            PROPAGATOR.inject_context(cx, &mut headers);
        });
        headers
    }

    fn sdk_reads(headers: &HashMap<String, String>) -> Vec<(String, String, String)> {
        let cx = BaggagePropagator::new().extract(headers);
        let mut all: Vec<_> = cx
            .baggage()
            .iter()
            .map(|(k, (v, m))| (k.to_string(), v.to_string(), m.as_str().to_string()))
            .collect();
        all.sort();
        all
    }

    fn assert_safe(header: &str) {
        assert!(
            header.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "not a safe header value: {header:?}"
        );
    }

    #[test]
    fn metadata_cannot_forge_a_member() {
        let cx = Cx::new().with_baggage(vec![KeyValueMetadata::new("note", "x", "p=1,s=forged")]);
        let headers = inject(&cx);
        let header = &headers["baggage"];
        assert_safe(header);
        // Ours: no `s` restored, `n` as bound.
        let extracted = PROPAGATOR.extract(&headers);
        assert!(extracted.errors().is_empty(), "{:?}", extracted.errors());
        let v = seen(&extracted);
        assert_eq!((v.s, v.n), (None, Some(9)), "{header}");
        // opentelemetry_sdk's: two members, the metadata back as it was.
        assert_eq!(
            sdk_reads(&headers),
            [
                ("n".into(), "9".into(), String::new()),
                ("note".into(), "x".into(), "p=1,s=forged".into())
            ]
        );
    }

    #[test]
    fn metadata_cannot_break_the_header() {
        let cx = Cx::new().with_baggage(vec![KeyValueMetadata::new(
            "note",
            "x",
            "p=a\r\nx-evil: 1;flag",
        )]);
        let headers = inject(&cx);
        assert_safe(&headers["baggage"]);
        assert_eq!(
            sdk_reads(&headers)[1],
            ("note".into(), "x".into(), "p=a\r\nx-evil: 1;flag".into())
        );
        // Through ours and back: the metadata is the same text.
        let back = TextMapPropagator::extract(&*PROPAGATOR, &headers);
        assert_eq!(
            back.baggage()
                .get_with_metadata("note")
                .map(|(_, m)| m.as_str()),
            Some("p=a\r\nx-evil: 1;flag")
        );
    }

    /// A property key that is not a token cannot be sent as one: it is dropped, the rest kept.
    #[test]
    fn properties_with_keys_that_are_not_tokens_are_dropped() {
        let cx = Cx::new().with_baggage(vec![KeyValueMetadata::new(
            "note",
            "x",
            "a b=1; ok = 2 ;p,s=forged;x\r\ny;flag",
        )]);
        let headers = inject(&cx);
        assert_safe(&headers["baggage"]);
        assert_eq!(sdk_reads(&headers)[1].2, "ok=2;flag");
        assert_eq!(seen(&PROPAGATOR.extract(&headers)).s, None);
    }

    /// The wire route: `opentelemetry_sdk` percent-decodes `p=%2Cs%3Dforged` into the
    /// metadata `p=,s=forged`; re-injected by us it must not become a member `s=forged`.
    #[test]
    fn decoded_metadata_from_the_wire_is_encoded_again() {
        let incoming = carrier("note=x;p=%2Cs%3Dforged");
        for cx in [
            BaggagePropagator::new().extract(&incoming),
            TextMapPropagator::extract(&*PROPAGATOR, &incoming),
        ] {
            assert_eq!(
                cx.baggage()
                    .get_with_metadata("note")
                    .map(|(_, m)| m.as_str()),
                Some("p=,s=forged")
            );
            let headers = inject(&cx);
            assert_safe(&headers["baggage"]);
            assert_eq!(seen(&PROPAGATOR.extract(&headers)).s, None, "{headers:?}");
            assert_eq!(sdk_reads(&headers)[1].2, "p=,s=forged");
        }
    }

    /// `inject_context` inside `with_mut` of a carried local has no error to return: it
    /// panics, naming the local (fault 5, the `TextMapPropagator` side).
    #[test]
    fn inject_context_inside_with_mut_panics_naming_the_local() {
        let panic = std::panic::catch_unwind(|| {
            Context::new().run(|| {
                S.set("mine".into());
                S.with_mut(|_| PROPAGATOR.inject_context(&Cx::new(), &mut HashMap::new()));
            })
        })
        .expect_err("a panic");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("`S`"), "{message}");
        assert!(message.contains("with_mut"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Part 6: end to end.

#[test]
fn a_handler_in_a_fork_reads_the_extracted_locals_and_nothing_leaks() {
    Context::new().run(|| {
        let extracted = PROPAGATOR.extract(&carrier("s=acme%20corp,n=7,unknown=1"));
        assert!(extracted.errors().is_empty());

        async fn handler() -> (Values, Values) {
            let before = Values::read();
            yield_now().await;
            S.set("changed".into());
            yield_now().await;
            (before, Values::read())
        }
        let (before, after) = block_on(handler().in_context(extracted.snapshot().fork()));
        let expected = Values {
            s: Some("acme corp".into()),
            n: Some(7),
            ..Values::default()
        };
        assert_eq!(before, expected);
        assert_eq!(after.s.as_deref(), Some("changed"));
        // Neither this context nor the snapshot saw the handler's write.
        assert_eq!(Values::read(), Values::default());
        assert_eq!(seen(&extracted), expected);

        // `Snapshot::run`, and a thread started with `Snapshot::wrap`.
        assert_eq!(extracted.snapshot().run(|| S.get()), expected.s);
        let job = extracted.snapshot().wrap(Values::read);
        assert_eq!(std::thread::spawn(job).join().unwrap(), expected);
        assert_eq!(Values::read(), Values::default());

        // The extracted values reach the handler's children (baggage locals are inheritable).
        let child = extracted
            .snapshot()
            .run(|| context_local::thread::spawn(|| S.get()).join().unwrap());
        assert_eq!(child, expected.s);
    });
}

#[test]
fn concurrent_requests_each_see_their_own_baggage() {
    const REQUESTS: u64 = 200;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|r| {
                let headers = carrier(&format!("s=req%20{r},n={r},i={}", -(r as i64)));
                let extracted = PROPAGATOR.extract(&headers);
                assert!(extracted.errors().is_empty());
                let handler = async move {
                    for step in 0..5 {
                        let v = Values::read();
                        assert_eq!(v.n, Some(r), "request {r} step {step}");
                        assert_eq!(v.s, Some(format!("req {r}")));
                        assert_eq!(v.i.map(i64::from), Some(-(r as i64)));
                        tokio::task::yield_now().await;
                    }
                    I.set(0); // the request's own from now on
                    tokio::task::yield_now().await;
                    I.get()
                };
                tokio::spawn(handler.in_context(extracted.into_snapshot().fork()))
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(0));
        }
        // The workers' own contexts never saw a request's values.
        for _ in 0..8 {
            let own = tokio::spawn(async { Values::read() }).await.unwrap();
            assert_eq!(own, Values::default());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Part 7: `inject` against a borrowed local and other parties' members.

/// Regression (issue 17, fault 5): `inject` inside `with_mut` of a carried local took the value
/// it could not read for an unbound one: `Ok`, the value left out and the upstream member
/// removed. It is an error naming the local now, instead of a header that silently lacks it;
/// the other members are written, and no stale member stands in for the value that could not be
/// read.
#[test]
fn inject_inside_with_mut_of_a_carried_local_is_an_error_naming_it() {
    Context::new().run(|| {
        S.set("mine".into());
        N.set(1);
        let mut headers = carrier("s=upstream,other=1");
        let result = S.with_mut(|_| PROPAGATOR.inject(&mut headers));
        let err = result.expect_err("inject could not read `S`");
        assert_eq!(err.key(), Some("s"));
        assert_eq!(err.local(), Some("S"));
        assert!(err.to_string().contains("`S`"), "{err}");
        assert!(err.to_string().contains("with_mut"), "{err}");
        assert_eq!(headers["baggage"], "other=1,n=1");

        // Outside `with_mut`, the same call is fine.
        PROPAGATOR.inject(&mut headers).unwrap();
        assert_eq!(headers["baggage"], "other=1,s=mine,n=1");

        // `with` of the same local is no problem either (a shared borrow).
        let mut headers = HashMap::new();
        S.with(|_| PROPAGATOR.inject(&mut headers)).unwrap();
        assert_eq!(headers["baggage"], "s=mine,n=1");
    });
}

/// Regression (issue 17, fault 2): a member of another party already in the carrier was passed
/// on as it was, CR LF included. It is kept only if it is safe to send: otherwise dropped and
/// reported.
#[test]
fn inject_drops_an_existing_member_with_control_characters() {
    let mut headers = carrier("ok=1,bad=a\r\nx-evil: 1");
    let err = Context::new()
        .run(|| {
            N.set(9);
            PROPAGATOR.inject(&mut headers)
        })
        .expect_err("the member with CR LF is reported");
    assert!(err.to_string().contains("0x0D"), "{err}");
    assert_eq!(headers["baggage"], "ok=1,n=9");
}

/// `Local::baggage` refuses a key that is empty or not an HTTP token (in a `static` that is a
/// compile error; at run time a panic naming the rule), and takes every token character.
#[test]
fn a_baggage_key_must_be_a_non_empty_http_token() {
    let empty = common::expect_panic(|| Local::<String>::named("K").baggage(""));
    assert!(empty.contains("must not be empty"), "{empty}");
    for bad in ["a b", "tenant=", "ä", "k,v", "x;y", "q\"", "(k)"] {
        let msg = common::expect_panic(|| Local::<String>::named("K").baggage(bad));
        assert!(msg.contains("must be an HTTP token"), "{bad:?}: {msg}");
    }
    let all = "azAZ09!#$%&'*+-.^_`|~";
    assert_eq!(
        Local::<String>::named("K").baggage(all).baggage_key(),
        Some(all)
    );
}

/// Fault (adversary pass): a malformed member of another party already in the carrier was
/// passed on as sent when it was printable ASCII — no `=`, a key that is not a token, a space
/// in the value, a broken percent-escape, and a member under a carried key whose `=` lies in a
/// property (`s;p=1`), which the merge took for the key `s;p`. A receiver cannot read any of
/// them; they are dropped now, reported, and the well-formed ones kept in order.
#[test]
fn inject_drops_and_reports_malformed_members_of_other_parties() {
    let mut headers = carrier("ok=1,noequals,bad key=1,=1,k=a b,s;p=1,ok2=2;ttl=5");
    let err = Context::new()
        .run(|| {
            N.set(9);
            PROPAGATOR.inject(&mut headers)
        })
        .expect_err("the malformed members are reported");
    assert!(err.to_string().contains("noequals"), "{err}");
    assert_eq!(headers["baggage"], "ok=1,ok2=2;ttl=5,n=9");
    let again = PROPAGATOR.extract(&headers);
    assert!(again.errors().is_empty(), "{:?}", again.errors());
}

/// Fault (review of the adversary pass): a member of another party was checked by decoding
/// it, so `k=%zz` (a broken escape) and `k=%FF` (not UTF-8 once decoded) were left out and
/// reported, though both are valid W3C grammar (`%` is a baggage-octet, and the receiver
/// deals with what the value decodes to). Only the grammar is checked now: they pass as sent.
#[test]
fn inject_passes_on_members_of_other_parties_it_cannot_decode() {
    let mut headers = carrier("a=%zz,b=%FF,c=x%C3;p=%4,d=%");
    Context::new()
        .run(|| {
            N.set(9);
            PROPAGATOR.inject(&mut headers)
        })
        .expect("every member is valid grammar");
    assert_eq!(headers["baggage"], "a=%zz,b=%FF,c=x%C3;p=%4,d=%,n=9");
}

/// Fault (review of the adversary pass): a stale member under one of our keys was checked for
/// bytes that may not be sent before it was recognised as ours, so `s=é` or `n=1\r\n` already
/// in the carrier made `inject` fail, though that member is replaced anyway.
#[test]
fn inject_replaces_a_stale_member_of_ours_with_an_unsafe_byte_silently() {
    for raw in [b"s=\xc3\xa9,ok=1".as_slice(), b"ok=1,n=1\r\n", b" s =\x01"] {
        let mut headers = BytesCarrier(Some(raw.to_vec()));
        Context::new()
            .run(|| {
                N.set(9);
                PROPAGATOR.inject(&mut headers)
            })
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(raw)));
        let sent = headers.0.expect("a header is sent");
        let sent = String::from_utf8(sent).unwrap();
        assert!(sent == "ok=1,n=9" || sent == "n=9", "{sent:?}");
    }
}

/// Fault (adversary pass): a member of another party with a malformed property (a key that
/// is not a token, a value with a space, an empty key) was passed on as sent — and a strict
/// reader may refuse the whole header for one such member, so every service behind it
/// could lose all its baggage. Left out and reported now; good properties (and
/// empty ones) pass.
#[test]
fn inject_drops_and_reports_members_with_malformed_properties() {
    let mut headers = carrier("ok=1;ttl=5;flag;x = %41;,p=1;bad prop,q=2;k=a b,r=3;=1,t=4;;");
    let err = Context::new()
        .run(|| {
            N.set(9);
            PROPAGATOR.inject(&mut headers)
        })
        .expect_err("the malformed properties are reported");
    assert!(err.to_string().contains("property"), "{err}");
    assert_eq!(headers["baggage"], "ok=1;ttl=5;flag;x = %41;,t=4;;,n=9");
}

/// Fault (adversary pass): a member of another party that is UTF-8 but not ASCII was reported
/// (it may not be sent), one that is not even UTF-8 vanished without a word.
#[test]
fn inject_reports_an_existing_member_that_is_not_utf8() {
    let mut headers = http_like_carrier(b"ok=1,bin=\xff\xfe");
    let err = Context::new()
        .run(|| {
            N.set(9);
            PROPAGATOR.inject(&mut headers)
        })
        .expect_err("the member that is not text is reported");
    assert!(err.to_string().contains("0xFF"), "{err}");
}

/// A carrier whose `baggage` header holds `raw` as bytes (a `HashMap<String, String>` cannot).
fn http_like_carrier(raw: &'static [u8]) -> BytesCarrier {
    BytesCarrier(Some(raw.to_vec()))
}

struct BytesCarrier(Option<Vec<u8>>);

impl context_local::baggage::Injector for BytesCarrier {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        assert_eq!(name, "baggage");
        self.0.iter().map(Vec::as_slice).collect()
    }
    fn set(&mut self, _: &str, value: String) {
        self.0 = Some(value.into_bytes());
    }
    fn remove(&mut self, _: &str) {
        self.0 = None;
    }
}

// ---------------------------------------------------------------------------------------------
// `propagate::Otel` writing into a carrier that already has a `baggage` header.

#[cfg(all(feature = "http", feature = "opentelemetry"))]
mod otel_merge {
    use super::*;
    use context_local::propagate::{Otel, Propagate};
    use http::{HeaderMap, HeaderValue};

    fn map(raw: &[u8]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("baggage", HeaderValue::from_bytes(raw).unwrap());
        map
    }

    fn inject_s(headers: &mut HeaderMap) -> Result<(), BaggageError> {
        Context::new().run(|| {
            S.set("new".into());
            Otel(PROPAGATOR.clone()).inject(headers)
        })
    }

    /// Fault (adversary pass): a member of another party that is not ASCII (an `http` header
    /// may hold it) was merged in and sent on unreported, where `Propagator::inject` leaves it
    /// out and reports it; the stale `s` must not survive either way.
    #[test]
    fn a_non_ascii_member_is_left_out_and_reported() {
        let mut headers = map("s=stale,x=\u{e9}".as_bytes());
        let result = inject_s(&mut headers);
        let extracted = PROPAGATOR.extract(&headers);
        assert_eq!(
            seen(&extracted).s.as_deref(),
            Some("new"),
            "header {:?}, inject said {result:?}",
            headers.get("baggage")
        );
        assert!(
            result.is_err(),
            "the member that cannot be sent is reported"
        );
        assert_eq!(headers["baggage"], "s=new");
    }

    /// Fault (adversary pass): the merge with the existing header ignored the W3C limits, so
    /// 64 members there put ours 65th: the receiver drops it as over the limit (and the
    /// sender was never told).
    #[test]
    fn the_merge_keeps_the_w3c_limits_and_reports_what_did_not_fit() {
        let old = members(MAX_MEMBERS, &[]).join(",");
        let mut headers = map(old.as_bytes());
        let result = inject_s(&mut headers);
        let written = headers["baggage"].to_str().unwrap().to_string();
        assert!(
            written.split(',').count() <= MAX_MEMBERS,
            "{} members sent",
            written.split(',').count()
        );
        let err = result.expect_err("what did not fit is reported");
        assert!(is_over_limit(&err), "{err}");
    }

    /// Writes `x-tenant: a<CR><LF>b`, a value no header may hold.
    #[derive(Debug)]
    struct WritesABrokenValue;

    impl opentelemetry::propagation::TextMapPropagator for WritesABrokenValue {
        fn inject_context(
            &self,
            _: &opentelemetry::Context,
            injector: &mut dyn opentelemetry::propagation::Injector,
        ) {
            injector.set("x-tenant", "a\r\nb".to_string());
        }
        fn extract_with_context(
            &self,
            cx: &opentelemetry::Context,
            _: &dyn opentelemetry::propagation::Extractor,
        ) -> opentelemetry::Context {
            cx.clone()
        }
        fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
            opentelemetry::propagation::text_map_propagator::FieldIter::new(&[])
        }
    }

    /// Fault (adversary pass): a value the `http::HeaderMap` carrier cannot hold was left out
    /// by keeping the *old* value of the header, sent on as if current.
    #[test]
    fn a_value_the_header_map_cannot_hold_does_not_keep_the_old_one() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("stale"));
        Otel(WritesABrokenValue).inject(&mut headers).unwrap();
        assert_eq!(headers.get("x-tenant"), None);
    }

    /// Fault (adversary pass): malformed members of another party were merged in as sent.
    #[test]
    fn the_merge_drops_malformed_members() {
        let mut headers = map(b"ok=1,noequals,bad key=1,k=a b,s;p=1");
        let result = inject_s(&mut headers);
        assert_eq!(headers["baggage"], "ok=1,s=new");
        assert!(result.is_err());
    }
}

/// Fault (review of the adversary pass): the keys seen by a watch nested in another (an `Otel`
/// inside the propagator an `Otel` runs) were not passed on to the outer one, whose merge
/// then kept a stale member under such a key.
#[cfg(feature = "opentelemetry")]
#[test]
fn a_nested_watch_passes_its_keys_to_the_outer_one() {
    use opentelemetry::propagation::TextMapPropagator;
    let keys = context_local::baggage::__carried_keys_during(|| {
        let inner = context_local::baggage::__carried_keys_during(|| {
            PROPAGATOR.inject_context(&opentelemetry::Context::new(), &mut HashMap::new());
        });
        assert!(inner.contains(&"s"), "{inner:?}");
    });
    assert!(keys.contains(&"s"), "{keys:?}");
}

#[cfg(all(feature = "http", feature = "opentelemetry"))]
mod otel_extract {
    use super::*;
    use context_local::propagate::{Otel, Propagate};
    use http::{HeaderMap, HeaderValue};
    use opentelemetry::propagation::TextMapCompositePropagator;
    use opentelemetry_sdk::propagation::BaggagePropagator;

    /// Fault (review of the adversary pass): `Otel` handed OpenTelemetry the `baggage` header
    /// read with U+FFFD for each byte that is not UTF-8, so `opentelemetry_sdk`'s
    /// `BaggagePropagator` took `other=a<0xFF>b` as `other=a\u{fffd}b` and sent it on as
    /// `other=a%EF%BF%BDb`, as if the client had sent that; and our error named 0xEF, not
    /// the byte sent. Such a member is left out now and reported with its real byte.
    #[test]
    fn a_member_with_a_byte_that_is_not_text_is_left_out_and_reported_with_it() {
        let composite = Otel(TextMapCompositePropagator::new(vec![
            Box::new(BaggagePropagator::new()),
            Box::new(PROPAGATOR.clone()),
        ]));
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "baggage",
            HeaderValue::from_bytes(b"other=a\xffb,s=ok,more=1").unwrap(),
        );
        let (request, extracted) = composite.start(&incoming);
        assert_eq!(extracted.errors().len(), 1, "{:?}", extracted.errors());
        let error = extracted.errors()[0].to_string();
        assert!(error.contains("0xFF"), "{error}");
        let mut outgoing = HeaderMap::new();
        request.run(|| {
            assert_eq!(S.get().as_deref(), Some("ok"));
            composite.inject(&mut outgoing).unwrap();
        });
        let sent = outgoing["baggage"].to_str().unwrap();
        assert!(!sent.contains("other"), "{sent}");
        assert!(sent.contains("more=1"), "{sent}");
    }

    /// Fault (review of the adversary pass): the outgoing OpenTelemetry baggage was the
    /// request's with the current context's inserted after it, so with the request's at
    /// OpenTelemetry's limit (64 entries) what the handler attached (newer) was dropped, the
    /// remote entries kept, and nothing said. The current entries go first now.
    #[test]
    fn the_handlers_own_baggage_wins_over_the_requests_at_the_limit() {
        use opentelemetry::baggage::BaggageExt;
        use opentelemetry::KeyValue;
        let composite = Otel(TextMapCompositePropagator::new(vec![
            Box::new(BaggagePropagator::new()),
            Box::new(PROPAGATOR.clone()),
        ]));
        let remote: Vec<String> = (0..MAX_MEMBERS).map(|i| format!("r{i}=1")).collect();
        let mut incoming = HeaderMap::new();
        incoming.insert("baggage", HeaderValue::from_str(&remote.join(",")).unwrap());
        let (request, _) = composite.start(&incoming);
        let mut outgoing = HeaderMap::new();
        request.run(|| {
            let _attached =
                opentelemetry::Context::current_with_baggage([KeyValue::new("mine", "1")]).attach();
            let _ = composite.inject(&mut outgoing);
        });
        let sent = outgoing["baggage"].to_str().unwrap();
        assert!(sent.split(',').any(|m| m == "mine=1"), "{sent}");
    }

    /// Fault (review of the adversary pass): with a composite of `opentelemetry_sdk`'s
    /// `BaggagePropagator` and ours, the sdk wrote `s=t0` (the request's OpenTelemetry
    /// baggage) and ours `s=t1` (the local, set by the handler): both were sent, and a
    /// receiver took whichever it read last. Under a carried key only ours is sent now; other
    /// keys written twice are sent once, the last written.
    #[test]
    fn a_carried_key_is_sent_once_with_the_locals_value() {
        let composite = Otel(TextMapCompositePropagator::new(vec![
            Box::new(BaggagePropagator::new()),
            Box::new(PROPAGATOR.clone()),
        ]));
        let mut incoming = HeaderMap::new();
        incoming.insert("baggage", HeaderValue::from_static("s=t0,other=1"));
        let (request, _) = composite.start(&incoming);
        let mut outgoing = HeaderMap::new();
        request.run(|| {
            S.set("t1".into());
            composite.inject(&mut outgoing).unwrap();
        });
        let sent = outgoing["baggage"].to_str().unwrap();
        let mut members: Vec<&str> = sent.split(',').collect();
        members.sort_unstable();
        assert_eq!(members, ["other=1", "s=t1"], "{sent}");

        // `s` in OpenTelemetry's baggage too (attached by the handler): the sdk writes it.
        let mut outgoing = HeaderMap::new();
        request.run(|| {
            use opentelemetry::baggage::BaggageExt;
            let _attached =
                opentelemetry::Context::current_with_baggage([opentelemetry::KeyValue::new(
                    "s", "t0",
                )])
                .attach();
            S.set("t1".into());
            composite.inject(&mut outgoing).unwrap();
        });
        let sent = outgoing["baggage"].to_str().unwrap();
        let mut members: Vec<&str> = sent.split(',').collect();
        members.sort_unstable();
        assert_eq!(members, ["other=1", "s=t1"], "{sent}");
    }
}

#[cfg(all(feature = "http", feature = "opentelemetry"))]
mod otel_stale {
    use super::*;
    use context_local::propagate::{Otel, Propagate};
    use http::{HeaderMap, HeaderValue};

    /// Fault (adversary pass): with none of the carried locals bound (and no remote
    /// baggage), the `Propagator` inside `Otel` wrote no header, so the merge never ran and a
    /// stale member under a carried key in the outgoing request's header was sent on as
    /// current (`Propagator::inject` removes it:
    /// `inject_removes_a_stale_member_when_nothing_else_is_left_unbound`). Inside a
    /// composite too.
    #[test]
    fn otel_removes_a_stale_member_when_nothing_is_bound() {
        use opentelemetry::propagation::TextMapCompositePropagator;
        use opentelemetry_sdk::propagation::TraceContextPropagator;
        let composite = Otel(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(PROPAGATOR.clone()),
        ]));
        for header in ["s=stale,other=1", "s=stale"] {
            let mut headers = HeaderMap::new();
            headers.insert("baggage", HeaderValue::from_static(header));
            Context::new()
                .run(|| composite.inject(&mut headers))
                .unwrap();
            assert_eq!(seen(&PROPAGATOR.extract(&headers)).s, None, "{headers:?}");
            let left = headers.get("baggage").map(|v| v.to_str().unwrap());
            assert_eq!(left, header.strip_prefix("s=stale,"), "{header}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// (adversary pass) Whatever other parties put in the carrier's header, `inject` sends on
    /// only members of valid W3C grammar (their values may not decode: that is the
    /// receiver's business), each one as it came (trimmed) or ours;
    /// and when it says `Ok`, every member it did not send was empty or stale (under a carried
    /// key): nothing lost without a word.
    #[test]
    fn inject_forwards_only_readable_members_and_loses_none_silently(list in member_list()) {
        let raw = list.join(&b","[..]);
        let mut carrier = BytesCarrier(Some(raw.clone()));
        let result = Context::new().run(|| {
            N.set(9);
            PROPAGATOR.inject(&mut carrier)
        });
        let written = carrier.0.clone().unwrap_or_default();
        let text = String::from_utf8(written.clone()).expect("the header is text");
        let sent: Vec<&str> = if text.is_empty() { Vec::new() } else { text.split(',').collect() };
        let trimmed: Vec<&[u8]> = raw
            .split(|&b| b == b',')
            .map(trim_ows_ref)
            .collect();
        for member in &sent {
            prop_assert!(*member == "n=9" || trimmed.contains(&member.as_bytes()),
                "{member:?} was not in {:?}", short(&raw));
        }
        // Valid grammar is passed on even when its value does not decode (the receiver's
        // business): the only errors a receiver may find are about decoding.
        let extracted = FULL.extract_headers([written.as_slice()]);
        prop_assert!(
            extracted.errors().iter().all(|e| {
                let e = e.to_string();
                e.contains("hex") || e.contains("UTF-8")
            }),
            "{:?} from {text:?}",
            extracted.errors()
        );
        if result.is_ok() {
            for member in trimmed.iter().filter(|m| !m.is_empty()) {
                let stale = KNOWN.iter().any(|k| {
                    let pair = member.split(|&b| b == b';').next().unwrap_or_default();
                    pair.split(|&b| b == b'=').next().map(trim_ows_ref) == Some(k.as_bytes())
                });
                prop_assert!(stale || sent.iter().any(|s| s.as_bytes() == *member),
                    "{:?} lost without an error", short(member));
            }
        }
    }
}
