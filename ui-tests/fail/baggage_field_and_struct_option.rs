use context_local::context_local;

#[context_local(baggage = "request")]
#[derive(Clone, Default)]
struct Request {
    #[baggage = "tenant"]
    tenant: String,
}

fn main() {
    Request::set(Request::default());
}
