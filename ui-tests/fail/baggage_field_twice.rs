use context_local::context_local;

#[context_local]
#[derive(Clone, Default)]
struct Request {
    #[baggage = "tenant"]
    #[baggage = "owner"]
    tenant: String,
}

fn main() {
    Request::set(Request::default());
}
