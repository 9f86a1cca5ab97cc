use context_local::context_local;

/// Neither `Display` nor `FromStr`: it cannot travel as text.
#[derive(Clone, Debug, Default)]
struct Tenant {
    id: u32,
}

#[context_local]
#[derive(Clone, Default)]
struct Request {
    #[baggage = "tenant"]
    tenant: Tenant,
    #[baggage = "request-id"]
    id: u64,
}

fn main() {
    Request::set(Request::default());
}
