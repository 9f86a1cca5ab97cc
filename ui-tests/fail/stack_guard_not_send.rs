use context_local::LocalStack;

static STACK: LocalStack<u32> = LocalStack::named("STACK");

fn main() {
    let guard = STACK.enter(1);
    std::thread::spawn(move || drop(guard));
}
