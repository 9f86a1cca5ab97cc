use context_local::context_local;

/// Not `Default`: a field of this type cannot be rebuilt on the receiving side.
#[derive(Clone)]
struct Connection(u32);

#[context_local]
#[derive(Clone)]
struct Request {
    #[baggage = "tenant"]
    tenant: String,
    connection: Connection,
}

fn main() {
    Request::set(Request {
        tenant: "acme".into(),
        connection: Connection(1),
    });
}
