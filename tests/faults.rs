//! Faults: destructors that panic in every place a value can be dropped, and what the runtime
//! promises then. The container stays consistent (the entry is gone, the local usable) and no
//! other value leaks. Thread exit is the exception std imposes on every thread-local: a panic
//! in a destructor there aborts the process, which a child process checks.

mod common;

use common::{expect_panic, Tally};
use context_local::{Context, Local, LocalStack};

/// Panics when dropped if `armed`.
struct Bomb {
    armed: bool,
    _counted: common::Counted,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            panic!("bomb");
        }
    }
}

fn bomb(t: &Tally, armed: bool) -> Bomb {
    Bomb {
        armed,
        _counted: t.make(0),
    }
}

#[test]
fn a_panicking_drop_on_set_or_release_leaves_the_local_consistent() {
    static L: Local<Bomb> = Local::named("L");
    let t = Tally::new();
    L.set(bomb(&t, true));
    assert_eq!(expect_panic(|| L.set(bomb(&t, false))), "bomb");
    assert!(
        L.is_set(),
        "the new value is in place before the old one drops"
    );
    L.set(bomb(&t, true));
    assert_eq!(expect_panic(|| L.release()), "bomb");
    assert!(!L.is_set(), "released even though the drop panicked");
    L.set(bomb(&t, false));
    L.release();
    assert_eq!(t.live(), 0);
}

#[test]
fn a_panicking_element_on_stack_release_does_not_leak_the_others() {
    static S: LocalStack<Bomb> = LocalStack::named("S");
    let t = Tally::new();
    S.push(bomb(&t, false));
    S.push(bomb(&t, true));
    S.push(bomb(&t, false));
    assert_eq!(expect_panic(|| S.release()), "bomb");
    assert!(S.is_empty());
    assert_eq!(t.live(), 0, "the other elements were dropped too");
    S.push(bomb(&t, false));
    assert_eq!(S.len(), 1);
    S.release();
}

#[test]
fn a_panicking_popped_value_is_the_callers_and_the_stack_is_fine() {
    static S: LocalStack<Bomb> = LocalStack::named("S");
    let t = Tally::new();
    S.push(bomb(&t, false));
    S.push(bomb(&t, true));
    assert_eq!(expect_panic(|| drop(S.pop())), "bomb");
    assert_eq!(S.len(), 1);
    assert_eq!(expect_panic(|| S.scope(bomb(&t, true), || ())), "bomb");
    assert_eq!(S.len(), 1, "scope popped its value before it panicked");
    S.release();
    assert_eq!(t.live(), 0);
}

#[test]
fn a_panicking_drop_in_a_dropped_context_drops_the_rest() {
    static L: Local<Bomb> = Local::named("L");
    static S: LocalStack<Bomb> = LocalStack::named("S");
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        L.set(bomb(&t, true));
        S.push(bomb(&t, true));
        S.push(bomb(&t, false));
    });
    assert_eq!(expect_panic(move || drop(ctx)), "bomb");
    assert_eq!(t.live(), 0);
    assert_eq!((L.contexts(), S.contexts()), (0, 0));
}

/// The child half of the thread-exit test: run only when the parent asks for it.
#[test]
#[ignore = "run as a child process by a_panicking_drop_at_thread_exit_aborts_like_any_thread_local"]
fn child_thread_exit_with_a_panicking_drop() {
    if std::env::var_os("CONTEXT_LOCAL_FAULT_CHILD").is_none() {
        return;
    }
    static L: Local<Bomb> = Local::named("L");
    let t = Tally::new();
    std::thread::spawn(move || L.set(bomb(&t, true)))
        .join()
        .ok();
    println!("not reached: the process should have aborted");
}

#[test]
fn a_panicking_drop_at_thread_exit_aborts_like_any_thread_local() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_thread_exit_with_a_panicking_drop",
            "--ignored",
            "--nocapture",
        ])
        .env("CONTEXT_LOCAL_FAULT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child should abort");
    assert!(!stdout.contains("not reached"), "{stdout}");
    assert!(
        stderr.contains("bomb"),
        "the panic message is printed first:\n{stderr}"
    );
}
