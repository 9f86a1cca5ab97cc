use context_local::context_local;

#[context_local]
#[derive(Clone, Default)]
struct Request {
    #[baggage = "tenant id"]
    tenant: String,
}

fn main() {
    Request::set(Request::default());
}
