//! A crate that re-exports context-local under another path uses `crate = path`.

mod facade {
    pub use context_local as cl;
}

use context_local::context_local;

#[context_local(crate = crate::facade::cl, name = "TENANT")]
struct Tenant(u32);

fn main() {
    Tenant::set(Tenant(7));
    assert_eq!(Tenant::with(|t| t.0), 7);
    assert_eq!(Tenant::local().name(), "TENANT");
}
