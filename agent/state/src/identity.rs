//! Workload identities (SPIFFE IDs) and the numbers the kernel maps use for them.

use std::collections::HashMap;
use std::fmt;

/// The trust domain used when no MeshConfig or agent setting names one.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload's SPIFFE identity: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// The trust domain.
    pub trust_domain: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account.
    pub service_account: String,
}

impl Identity {
    /// The identity of a service account.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// Parses a SPIFFE ID of the `ns/<ns>/sa/<sa>` form.
    pub fn parse(id: &str) -> Option<Self> {
        let rest = id.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if !trust_domain.is_empty() && !ns.is_empty() && !sa.is_empty() =>
            {
                Some(Self::new(trust_domain, ns, sa))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Hands out stable, non-zero `u32` numbers for keys: a key keeps its number
/// for as long as the allocator lives, and numbers are never reused, so a
/// number in a kernel map never silently changes meaning.
#[derive(Clone, Debug)]
pub struct Numbers<K> {
    by_key: HashMap<K, u32>,
    next: u32,
}

impl<K> Default for Numbers<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            next: 1,
        }
    }
}

impl<K: Eq + std::hash::Hash + Clone> Numbers<K> {
    /// The number of `key`, allocating the next free one on first sight.
    pub fn get_or_assign(&mut self, key: &K) -> u32 {
        if let Some(n) = self.by_key.get(key) {
            return *n;
        }
        let n = self.next;
        // Wrapping past u32::MAX would take four billion distinct keys in one
        // agent's lifetime; skip 0 regardless so 0 keeps meaning "unknown".
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.by_key.insert(key.clone(), n);
        n
    }

    /// The number of `key`, if it has one.
    pub fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// How many keys have numbers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key has a number yet.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip() {
        let id = Identity::new("cluster.local", "demo", "reviews");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/demo/sa/reviews");
        assert_eq!(Identity::parse(&id.to_string()), Some(id));
        for bad in [
            "spiffe://td/ns/demo",
            "http://td/ns/a/sa/b",
            "spiffe://td/ns/a/sa/b/c",
            "spiffe:///ns/a/sa/b",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_stable_and_non_zero() {
        let mut n = Numbers::default();
        let a = n.get_or_assign(&"a");
        let b = n.get_or_assign(&"b");
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(n.get_or_assign(&"a"), a);
        assert_eq!(n.get(&"c"), None);
        assert_eq!(n.len(), 2);
    }
}
