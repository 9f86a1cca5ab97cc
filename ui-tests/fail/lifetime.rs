use context_local::context_local;

#[context_local]
struct Borrowed<'a> {
    name: &'a str,
}

fn main() {}
