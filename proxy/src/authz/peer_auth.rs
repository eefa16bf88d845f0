//! Peer authentication modes: whether a workload port accepts plaintext
//! from clients outside the mesh (permissive) or only mesh tunnels (strict).
//! The agent decides, per accepted plaintext connection, with
//! [`PeerAuthentication::accepts_plaintext`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How a workload port treats plaintext from non-meshed clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Accept both mesh tunnels and plaintext (the migration default).
    #[default]
    Permissive,
    /// Accept only mesh tunnels; plaintext is refused.
    Strict,
}

/// The mode of one workload: a default plus per-port overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAuthentication {
    /// Mode for ports without an override.
    pub mode: MtlsMode,
    /// Per-port overrides.
    #[serde(default)]
    pub port_modes: HashMap<u16, MtlsMode>,
}

impl PeerAuthentication {
    /// The mode in force for `port`.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.port_modes.get(&port).copied().unwrap_or(self.mode)
    }

    /// Whether a plaintext connection from outside the mesh may reach `port`.
    /// Authorization still applies to it, with no source identity.
    pub fn accepts_plaintext(&self, port: u16) -> bool {
        self.mode_for(port) == MtlsMode::Permissive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_overrides_win() {
        let strict_but_metrics = PeerAuthentication {
            mode: MtlsMode::Strict,
            port_modes: HashMap::from([(9090, MtlsMode::Permissive)]),
        };
        assert!(!strict_but_metrics.accepts_plaintext(80));
        assert!(strict_but_metrics.accepts_plaintext(9090));
        let permissive_but_db = PeerAuthentication {
            mode: MtlsMode::Permissive,
            port_modes: HashMap::from([(5432, MtlsMode::Strict)]),
        };
        assert!(permissive_but_db.accepts_plaintext(80));
        assert!(!permissive_but_db.accepts_plaintext(5432));
        assert!(PeerAuthentication::default().accepts_plaintext(1));
    }
}
