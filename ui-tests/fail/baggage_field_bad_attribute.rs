use context_local::context_local;

#[context_local]
#[derive(Clone, Default)]
struct Request {
    #[baggage]
    tenant: String,
    #[baggage = "request-id"]
    id: u64,
}

fn main() {
    Request::set(Request::default());
}
