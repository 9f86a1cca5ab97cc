//! The package of the quickstart example (`cargo run --example quickstart`), kept apart from
//! the `context-local` package so that running it builds only the crate and its macros: an
//! example of a package is built with all of that package's dev-dependencies, and the root
//! package's (tokio, rayon, OpenTelemetry, proptest, trybuild, ...) serve its tests.
