use context_local::baggage::BaggageValue;
use context_local::context_local;

#[context_local(baggage = "tenant", inherit, baggage = "tenant-id")]
#[derive(Clone)]
struct Tenant(String);

impl BaggageValue for Tenant {
    fn encode(&self, out: &mut String) {
        out.push_str(&self.0);
    }
    fn decode(text: &str) -> Result<Self, String> {
        Ok(Tenant(text.to_owned()))
    }
}

fn main() {
    Tenant::set(Tenant("acme".into()));
}
