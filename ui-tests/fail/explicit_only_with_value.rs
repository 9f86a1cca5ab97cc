use context_local::context_local;

// Two mistakes, one error each; the item is still emitted (`Request::set` resolves).
#[context_local(explicit_only = true, inherit, explicit_only(strict))]
#[derive(Clone)]
struct Request(u64);

fn main() {
    Request::set(Request(1));
}
