use context_local::context_local;

#[context_local]
#[derive(Clone, Default)]
struct Request {
    #[baggage = "tenant"]
    tenant: String,
    #[baggage = "tenant"]
    owner: String,
}

fn main() {
    Request::set(Request::default());
}
