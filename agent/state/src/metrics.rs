//! Metrics of the state index.

use prometheus::{IntCounterVec, Opts, Registry};

use crate::model::Kind;

/// Counts refused objects by kind.
#[derive(Clone, Debug)]
pub struct RejectionMetrics {
    rejected: IntCounterVec,
}

impl RejectionMetrics {
    /// Name of the counter family.
    pub const NAME: &'static str = "nodemesh_state_rejected_objects_total";

    /// Creates the counters and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rejected = IntCounterVec::new(
            Opts::new(
                Self::NAME,
                "Objects refused as invalid; the last good version of each stays in force.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(rejected.clone()))?;
        Ok(Self { rejected })
    }

    /// Counts one refused object.
    pub fn record(&self, kind: Kind) {
        self.rejected.with_label_values(&[kind.as_str()]).inc();
    }

    /// Refusals counted so far for `kind`.
    pub fn count(&self, kind: Kind) -> u64 {
        self.rejected.with_label_values(&[kind.as_str()]).get()
    }
}
