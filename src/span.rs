//! The current `tracing` span, carried into children by the spawn helpers (feature
//! `tracing`); without the feature a zero-sized no-op, so the helpers read the same either way.

/// The span current where a child was spawned, entered around the child's work.
#[derive(Clone, Debug)]
pub(crate) struct CurrentSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl CurrentSpan {
    /// The span current now (`Span::none()` outside any).
    pub(crate) fn capture() -> Self {
        Self {
            #[cfg(feature = "tracing")]
            span: tracing::Span::current(),
        }
    }

    /// Runs `f` inside the captured span.
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tracing")]
        let _entered = self.span.enter();
        f()
    }

    /// `f`, to be run inside the captured span wherever it is called.
    pub(crate) fn wrap<F, R>(self, f: F) -> impl FnOnce() -> R + Send + 'static
    where
        F: FnOnce() -> R + Send + 'static,
    {
        move || self.run(f)
    }
}
