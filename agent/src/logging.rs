//! Log setup: `tracing` to stderr, with the `log` records of aya and aya-log
//! (the kernel programs' logs) bridged in.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `filter` uses `RUST_LOG` syntax.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // `init` also installs the `log` -> `tracing` bridge (feature tracing-log).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
