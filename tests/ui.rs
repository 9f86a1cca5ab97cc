//! Compile-fail and compile-pass cases of the macros and the runtime's `!Send` guards, one
//! mistake per file in `ui-tests/fail/` with the exact expected error in its `.stderr`.
//! Regenerate the expectations after a deliberate change with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui-tests/fail/*.rs");
    t.pass("ui-tests/pass/*.rs");
}
