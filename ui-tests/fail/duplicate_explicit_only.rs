use context_local::context_local;

#[context_local(explicit_only, name = "REQUEST", explicit_only)]
#[derive(Clone)]
struct Request(u64);

fn main() {
    Request::set(Request(1));
}
