//! Publishing desired states to the agent over a `tokio::sync::watch` channel.

use std::sync::Arc;

use tokio::sync::watch;

use crate::desired::DesiredState;
use crate::index::Index;

/// The receiving half the agent holds: the latest desired state. The
/// initial value is an empty state with generation 0; a source publishes
/// its first state once its initial load or list is complete.
pub type StateReceiver = watch::Receiver<Arc<DesiredState>>;

/// Owns the index and publishes a new desired state when it changed.
#[derive(Debug)]
pub struct Publisher {
    index: Index,
    tx: watch::Sender<Arc<DesiredState>>,
    published: u64,
}

impl Publisher {
    /// A publisher for `index` and the receiver of its states.
    pub fn new(index: Index) -> (Self, StateReceiver) {
        let (tx, rx) = watch::channel(Arc::new(DesiredState::default()));
        (
            Self {
                index,
                tx,
                published: 0,
            },
            rx,
        )
    }

    /// The index, for applying and deleting objects.
    pub fn index(&mut self) -> &mut Index {
        &mut self.index
    }

    /// Another receiver of the published states.
    pub fn subscribe(&self) -> StateReceiver {
        self.tx.subscribe()
    }

    /// Computes the desired state and publishes it if it differs from the
    /// last published one (or if nothing was published yet). Returns
    /// whether it published. Published generations count up from 1.
    pub fn publish(&mut self) -> bool {
        let mut state = self.index.snapshot();
        let current = self.tx.borrow().clone();
        state.generation = current.generation;
        if self.published > 0 && *current == state {
            return false;
        }
        self.published += 1;
        state.generation = self.published;
        tracing::debug!(
            generation = state.generation,
            services = state.services.len(),
            endpoints = state.endpoints.len(),
            workloads = state.workloads.len(),
            policy_rules = state.policy.len(),
            "publishing desired state"
        );
        self.tx.send_replace(Arc::new(state));
        true
    }
}
