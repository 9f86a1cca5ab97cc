use context_local::context_local;

/// `Clone + Send + Sync`, but neither `Display` nor `FromStr`: it cannot travel as text.
#[context_local(baggage = "tenant")]
#[derive(Clone, Debug)]
struct Tenant {
    id: u32,
}

fn main() {
    Tenant::set(Tenant { id: 1 });
}
