use context_local::Context;

fn main() {
    let ctx: &'static Context = Box::leak(Box::new(Context::new()));
    let guard = ctx.enter();
    std::thread::spawn(move || drop(guard));
}
