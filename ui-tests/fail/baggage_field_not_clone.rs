use context_local::context_local;

/// Carried per field, so inheritable: it must be `Clone`.
#[context_local]
#[derive(Default)]
struct Request {
    #[baggage = "tenant"]
    tenant: String,
}

fn main() {
    Request::set(Request::default());
}
