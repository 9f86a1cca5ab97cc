use context_local::context_stack;

context_stack! {
    #[explicit_only(yes)]
    static SPANS: &'static str;
    #[explicit_only = true]
    static APPS: &'static str;
}

fn main() {
    SPANS.push("handler");
    APPS.push("shop");
}
