use context_local::context_local;

#[context_local]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
