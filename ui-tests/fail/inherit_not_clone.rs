use context_local::context_local;

#[context_local(inherit)]
struct Tenant {
    id: u32,
}

fn main() {
    Tenant::set(Tenant { id: 1 });
}
