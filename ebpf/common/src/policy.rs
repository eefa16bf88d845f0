//! In-kernel L4 policy: connects a deny rule matches fail with `EPERM`.
//!
//! Rules are keyed by (source identity, destination identity, port), where 0
//! in any field is a wildcard. `connect4/6` try the exact key first, then
//! the wildcard combinations in the order of [`LOOKUP_ORDER`]; the first hit
//! decides.

/// Map name: [`PolicyKey`] -> [`PolicyValue`].
pub const POLICY: &str = "POLICY";
/// Capacity of [`POLICY`].
pub const MAX_POLICY_RULES: u32 = 65_536;

/// [`PolicyValue::action`]: the connect fails with `EPERM`.
pub const ACTION_DENY: u32 = 1;
/// [`PolicyValue::action`]: the connect proceeds (overrides a broader deny).
pub const ACTION_ALLOW: u32 = 2;

/// Which of (source, destination, port) each lookup keeps; the rest become wildcards.
pub const LOOKUP_ORDER: [(bool, bool, bool); 7] = [
    (true, true, true),
    (true, true, false),
    (false, true, true),
    (true, false, true),
    (false, true, false),
    (true, false, false),
    (false, false, true),
];

/// A policy rule's match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    /// Source identity number, 0 for any.
    pub src_identity: u32,
    /// Destination identity number, 0 for any.
    pub dst_identity: u32,
    /// Destination port (host byte order), 0 for any.
    pub port: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
}

/// A policy rule's verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// [`ACTION_DENY`] or [`ACTION_ALLOW`].
    pub action: u32,
    /// The agent's number for the rule, for logs.
    pub rule_id: u32,
}

crate::impl_pod!(PolicyKey, PolicyValue);
