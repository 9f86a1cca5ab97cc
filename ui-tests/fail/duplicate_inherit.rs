use context_local::context_local;

#[context_local(inherit, name = "TENANT", inherit)]
#[derive(Clone)]
struct Tenant(u32);

fn main() {
    Tenant::set(Tenant(1));
}
