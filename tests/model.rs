//! Model-based property tests: random sequences of stack and local operations on 1-3 threads,
//! each thread with two explicit contexts it enters and leaves, checked after every step
//! against a plain `Vec`-per-context model. Every value records its drop: never twice, never
//! while the model still holds it, and all of them by the end.
//!
//! `PROPTEST_CASES` sets the number of cases (default 96).

use context_local::{Context, ContextGuard, Local, LocalStack, StackGuard};
use proptest::prelude::*;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Op {
    Push,
    Pop,
    Top,
    Enter,
    DropGuard(usize),
    Scope { panics: bool },
    Release,
    Set,
    Replace,
    Take,
    Read,
    ReleaseLocal,
    EnterCtx(usize),
    LeaveCtx,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Push),
        3 => Just(Op::Pop),
        1 => Just(Op::Top),
        3 => Just(Op::Enter),
        3 => any::<usize>().prop_map(Op::DropGuard),
        2 => any::<bool>().prop_map(|panics| Op::Scope { panics }),
        1 => Just(Op::Release),
        2 => Just(Op::Set),
        1 => Just(Op::Replace),
        1 => Just(Op::Take),
        1 => Just(Op::Read),
        1 => Just(Op::ReleaseLocal),
        2 => (0..2usize).prop_map(Op::EnterCtx),
        2 => Just(Op::LeaveCtx),
    ]
}

/// Ids of dropped values, shared by one case's threads.
type Dropped = Arc<Mutex<HashSet<u64>>>;

struct Value {
    id: u64,
    dropped: Dropped,
}

impl Drop for Value {
    fn drop(&mut self) {
        let fresh = self.dropped.lock().unwrap().insert(self.id);
        assert!(fresh, "value {} dropped twice", self.id);
    }
}

/// One context's expected state: the stack (with the guard that pushed each value, if any)
/// and the local.
#[derive(Default, Clone, Debug)]
struct Model {
    stack: Vec<(u64, Option<u64>)>,
    local: Option<u64>,
}

/// One thread's run: contexts 0 (the thread's own) and 1..=2 (explicit).
struct Run {
    stack: &'static LocalStack<Value>,
    local: &'static Local<Value>,
    dropped: Dropped,
    models: [Model; 3],
    /// Explicit contexts entered, innermost last.
    entered: Vec<usize>,
    next_id: u64,
    next_guard: u64,
}

impl Run {
    fn current(&self) -> usize {
        self.entered.last().map_or(0, |i| i + 1)
    }

    fn value(&mut self) -> Value {
        self.next_id += 1;
        Value {
            id: self.next_id,
            dropped: self.dropped.clone(),
        }
    }

    fn is_dropped(&self, id: u64) -> bool {
        self.dropped.lock().unwrap().contains(&id)
    }

    /// Nothing the model holds was dropped; the runtime agrees with the current context's model.
    fn check(&self) {
        for m in &self.models {
            for &(id, _) in &m.stack {
                assert!(
                    !self.is_dropped(id),
                    "value {id} dropped while still on a stack"
                );
            }
            if let Some(id) = m.local {
                assert!(!self.is_dropped(id), "value {id} dropped while still bound");
            }
        }
        let m = &self.models[self.current()];
        assert_eq!(self.stack.len(), m.stack.len());
        assert_eq!(self.stack.with_top(|v| v.id), m.stack.last().map(|e| e.0));
        assert_eq!(self.local.try_with(|v| v.id).ok(), m.local);
    }
}

fn run_thread(
    stack: &'static LocalStack<Value>,
    local: &'static Local<Value>,
    dropped: Dropped,
    thread: u64,
    ops: &[Op],
) {
    let contexts = [Context::new(), Context::new()];
    let mut ctx_guards: Vec<ContextGuard<'_>> = Vec::new();
    let mut guards: Vec<(StackGuard<'static, Value>, usize, u64)> = Vec::new();
    let mut run = Run {
        stack,
        local,
        dropped,
        models: Default::default(),
        entered: Vec::new(),
        next_id: thread << 32,
        next_guard: 0,
    };
    for op in ops {
        step(&mut run, &contexts, &mut ctx_guards, &mut guards, op);
        run.check();
    }
    // Guards first (in the order they were made, not the reverse), then contexts.
    for (guard, ctx, gid) in guards.drain(..) {
        drop(guard);
        run.models[ctx].stack.retain(|e| e.1 != Some(gid));
    }
    run.check();
    while let Some(g) = ctx_guards.pop() {
        drop(g);
        run.entered.pop();
    }
    run.check();
    let held: Vec<u64> = run.models[1..].iter().flat_map(held_ids).collect();
    drop(ctx_guards);
    drop(contexts);
    for id in held {
        assert!(
            run.is_dropped(id),
            "value {id} outlived its explicit context"
        );
    }
}

fn held_ids(m: &Model) -> Vec<u64> {
    m.stack.iter().map(|e| e.0).chain(m.local).collect()
}

fn step<'c>(
    run: &mut Run,
    contexts: &'c [Context; 2],
    ctx_guards: &mut Vec<ContextGuard<'c>>,
    guards: &mut Vec<(StackGuard<'static, Value>, usize, u64)>,
    op: &Op,
) {
    let cur = run.current();
    match *op {
        Op::Push => {
            let v = run.value();
            run.models[cur].stack.push((v.id, None));
            run.stack.push(v);
        }
        Op::Pop => {
            let got = run.stack.pop().map(|v| v.id);
            assert_eq!(got, run.models[cur].stack.pop().map(|e| e.0));
        }
        Op::Top => assert_eq!(
            run.stack.with_top(|v| v.id),
            run.models[cur].stack.last().map(|e| e.0)
        ),
        Op::Enter => {
            let v = run.value();
            run.next_guard += 1;
            run.models[cur].stack.push((v.id, Some(run.next_guard)));
            guards.push((run.stack.enter(v), cur, run.next_guard));
        }
        Op::DropGuard(k) if !guards.is_empty() => {
            let (guard, ctx, gid) = guards.remove(k % guards.len());
            drop(guard);
            run.models[ctx].stack.retain(|e| e.1 != Some(gid));
        }
        Op::DropGuard(_) => {}
        Op::Scope { panics } => {
            let v = run.value();
            let id = v.id;
            let stack = run.stack;
            let r = catch_unwind(AssertUnwindSafe(|| {
                stack.scope(v, || {
                    assert_eq!(stack.with_top(|t| t.id), Some(id));
                    if panics {
                        panic!("scope body fails");
                    }
                })
            }));
            assert_eq!(r.is_err(), panics);
            assert!(run.is_dropped(id), "scope's value survived the scope");
        }
        Op::Release => {
            let gone = std::mem::take(&mut run.models[cur].stack);
            run.stack.release();
            assert!(gone.iter().all(|e| run.is_dropped(e.0)));
        }
        Op::Set => {
            let v = run.value();
            let old = run.models[cur].local.replace(v.id);
            run.local.set(v);
            assert!(old.is_none_or(|id| run.is_dropped(id)));
        }
        Op::Replace => {
            let v = run.value();
            let expected = run.models[cur].local.replace(v.id);
            assert_eq!(run.local.replace(v).map(|o| o.id), expected);
        }
        Op::Take => assert_eq!(run.local.take().map(|v| v.id), run.models[cur].local.take()),
        Op::Read => assert_eq!(run.local.try_with(|v| v.id).ok(), run.models[cur].local),
        Op::ReleaseLocal => {
            let old = run.models[cur].local.take();
            run.local.release();
            assert!(old.is_none_or(|id| run.is_dropped(id)));
        }
        Op::EnterCtx(i) if !run.entered.contains(&i) => {
            ctx_guards.push(contexts[i].enter());
            run.entered.push(i);
        }
        Op::EnterCtx(_) => {}
        Op::LeaveCtx => {
            if ctx_guards.pop().is_some() {
                run.entered.pop();
            }
        }
    }
}

// Shared by all cases, which run one after another; each case leaves them empty everywhere.
static STACK: LocalStack<Value> = LocalStack::named("MODEL_STACK");
static LOCAL: Local<Value> = Local::named("MODEL_LOCAL");

/// The expected panics of `Scope { panics: true }` would flood the output.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"scope body fails") {
                default(info);
            }
        }));
    });
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn stacks_and_locals_follow_the_model(
        threads in prop::collection::vec(prop::collection::vec(op(), 0..60), 1..=3)
    ) {
        quiet_expected_panics();
        let dropped: Dropped = Arc::default();
        // `spawn` + `join` rather than `thread::scope`: `join` returns only after the thread's
        // thread-local destructors (its context's teardown) ran; a scope may return before.
        let handles: Vec<_> = threads
            .iter()
            .cloned()
            .enumerate()
            .map(|(t, ops)| {
                let dropped = dropped.clone();
                std::thread::spawn(move || run_thread(&STACK, &LOCAL, dropped, t as u64 + 1, &ops))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Every thread has exited: its context's values are gone too.
        prop_assert_eq!(STACK.contexts(), 0);
        prop_assert_eq!(LOCAL.contexts(), 0);
        let dropped = dropped.lock().unwrap();
        for (t, ops) in threads.iter().enumerate() {
            let base = (t as u64 + 1) << 32;
            let made = ops.iter().filter(|o| matches!(o, Op::Push | Op::Enter | Op::Scope { .. } | Op::Set | Op::Replace)).count() as u64;
            for id in base + 1..=base + made {
                prop_assert!(dropped.contains(&id), "value {} was never dropped", id);
            }
        }
    }
}
