//! Authorization of mesh connections, with Istio's semantics.
//!
//! The agent turns its policy resources into these plain types and, having
//! resolved label selectors itself, registers each local workload (keyed by
//! its IP) with its identity and the policies that target it. A request is
//! decided in this order:
//!
//! 0. the destination address must be a registered local workload whose
//!    identity is the one the client asked for (fail closed otherwise);
//! 1. any matching `DENY` policy denies;
//! 2. if any `ALLOW` policy targets the workload, one must match, otherwise
//!    the request is denied;
//! 3. otherwise the mesh-wide default applies.
//!
//! `AUDIT` policies never change the outcome: a match is logged and counted.

pub mod peer_auth;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::identity::SpiffeId;
use crate::metrics::Metrics;

/// What a policy does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Let matching requests through (and require a match if any ALLOW targets the workload).
    Allow,
    /// Refuse matching requests; checked first.
    Deny,
    /// Log and count matching requests; never blocks.
    Audit,
}

/// The mesh-wide decision when no ALLOW policy targets a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DefaultAction {
    /// Allow (Istio's default).
    #[default]
    Allow,
    /// Deny.
    Deny,
}

/// A source identity pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    /// `*`: any authenticated identity.
    Any,
    /// Exactly this identity.
    Exact(SpiffeId),
}

impl SourceMatch {
    /// Parses `*` or a SPIFFE id.
    pub fn parse(s: &str) -> Result<Self, crate::identity::Error> {
        if s == "*" {
            Ok(Self::Any)
        } else {
            s.parse().map(Self::Exact)
        }
    }

    fn matches(&self, source: Option<&SpiffeId>) -> bool {
        match (self, source) {
            (Self::Any, Some(_)) => true,
            (Self::Exact(want), Some(got)) => want == got,
            (_, None) => false,
        }
    }
}

/// One rule; every non-empty field must match (a field matches when any
/// of its entries does). A rule with every field empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Source identities; empty = any source, even unauthenticated.
    pub sources: Vec<SourceMatch>,
    /// Source namespaces (from the source identity); empty = any.
    pub namespaces: Vec<String>,
    /// Destination ports; empty = any.
    pub ports: Vec<u16>,
}

impl Rule {
    fn matches(&self, req: &Request<'_>) -> bool {
        (self.sources.is_empty() || self.sources.iter().any(|s| s.matches(req.source)))
            && (self.namespaces.is_empty()
                || req
                    .source
                    .is_some_and(|s| self.namespaces.iter().any(|ns| ns == s.namespace())))
            && (self.ports.is_empty() || self.ports.contains(&req.port))
    }
}

/// A policy targeting a workload. It matches when any rule matches; a
/// policy without rules matches nothing (so an ALLOW without rules denies all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Name for logs and debugging, e.g. `<namespace>/<name>`.
    pub name: String,
    /// What to do on a match.
    pub action: Action,
    /// The rules.
    pub rules: Vec<Rule>,
}

impl Policy {
    fn matches(&self, req: &Request<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(req))
    }
}

/// What is being decided.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The authenticated source, `None` for plaintext from outside the mesh.
    pub source: Option<&'a SpiffeId>,
    /// The destination port.
    pub port: u16,
}

/// Why a decision was taken; also the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A DENY policy matched.
    DenyPolicy,
    /// An ALLOW policy matched.
    AllowPolicy,
    /// ALLOW policies target the workload and none matched.
    NoAllowMatched,
    /// No ALLOW policy; the mesh default is allow.
    DefaultAllow,
    /// No ALLOW policy; the mesh default is deny.
    DefaultDeny,
    /// The destination address is not a workload registered on this node.
    UnknownDestination,
    /// The destination workload's identity is not the one the client
    /// authenticated to.
    DestinationMismatch,
}

impl Reason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DenyPolicy => "deny_policy",
            Self::AllowPolicy => "allow_policy",
            Self::NoAllowMatched => "no_allow_matched",
            Self::DefaultAllow => "default_allow",
            Self::DefaultDeny => "default_deny",
            Self::UnknownDestination => "unknown_destination",
            Self::DestinationMismatch => "destination_mismatch",
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The deciding policy, if one matched.
    pub policy: Option<String>,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
}

/// Decides `req` against the policies targeting its workload. Pure: no
/// logging, no counting (see [`Authorizer`] for that).
pub fn evaluate(policies: &[Policy], default: DefaultAction, req: &Request<'_>) -> Decision {
    let audited = policies
        .iter()
        .filter(|p| p.action == Action::Audit && p.matches(req))
        .map(|p| p.name.clone())
        .collect();
    let decide = |allowed, reason, policy: Option<&Policy>| Decision {
        allowed,
        reason,
        policy: policy.map(|p| p.name.clone()),
        audited,
    };
    if let Some(p) = policies
        .iter()
        .find(|p| p.action == Action::Deny && p.matches(req))
    {
        return decide(false, Reason::DenyPolicy, Some(p));
    }
    let mut allows = policies
        .iter()
        .filter(|p| p.action == Action::Allow)
        .peekable();
    if allows.peek().is_some() {
        return match allows.find(|p| p.matches(req)) {
            Some(p) => decide(true, Reason::AllowPolicy, Some(p)),
            None => decide(false, Reason::NoAllowMatched, None),
        };
    }
    match default {
        DefaultAction::Allow => decide(true, Reason::DefaultAllow, None),
        DefaultAction::Deny => decide(false, Reason::DefaultDeny, None),
    }
}

/// A connection to authorize, as the data path sees it.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    /// Authenticated source identity; `None` for plaintext non-mesh clients.
    pub source: Option<SpiffeId>,
    /// Identity of the destination workload (the certificate it presented,
    /// or the one the agent resolved for same-node delivery).
    pub destination: SpiffeId,
    /// The destination workload address (pod IP and port).
    pub destination_addr: SocketAddr,
    /// Serial of the source's leaf certificate, when it came over mTLS.
    pub source_cert_serial: Option<String>,
}

/// The hook the data path calls for every stream before connecting to the
/// destination. [`Authorizer`] is the implementation the agent uses.
pub trait Authorize: Send + Sync + 'static {
    /// Decides whether `req` may reach its destination.
    fn authorize(&self, req: &AuthzRequest) -> Decision;
}

#[derive(Debug)]
struct Workload {
    identity: SpiffeId,
    policies: Vec<Policy>,
}

#[derive(Debug, Default)]
struct PolicyState {
    default: DefaultAction,
    workloads: HashMap<IpAddr, Arc<Workload>>,
}

/// Holds the local workloads (IP, identity, policies) and the mesh
/// default; decides, logs and counts. Updates are atomic swaps.
#[derive(Debug)]
pub struct Authorizer {
    state: ArcSwap<PolicyState>,
    metrics: Arc<Metrics>,
}

impl Authorizer {
    /// An authorizer with no policies and the given mesh default.
    pub fn new(default: DefaultAction, metrics: Arc<Metrics>) -> Self {
        Self {
            state: ArcSwap::from_pointee(PolicyState {
                default,
                workloads: HashMap::new(),
            }),
            metrics,
        }
    }

    /// Sets the mesh-wide default.
    pub fn set_default(&self, default: DefaultAction) {
        self.state.rcu(|old| PolicyState {
            default,
            workloads: old.workloads.clone(),
        });
    }

    /// Registers (or updates) the local workload at `address` (pod IP) with
    /// its identity and the policies targeting it. Connections to addresses
    /// not registered here are denied.
    pub fn set_workload(&self, address: IpAddr, identity: SpiffeId, policies: Vec<Policy>) {
        let workload = Arc::new(Workload { identity, policies });
        self.state.rcu(|old| {
            let mut workloads = old.workloads.clone();
            workloads.insert(address, workload.clone());
            PolicyState {
                default: old.default,
                workloads,
            }
        });
    }

    /// Forgets a workload that left the node.
    pub fn remove_workload(&self, address: IpAddr) {
        self.state.rcu(|old| {
            let mut workloads = old.workloads.clone();
            workloads.remove(&address);
            PolicyState {
                default: old.default,
                workloads,
            }
        });
    }
}

impl Authorize for Authorizer {
    fn authorize(&self, req: &AuthzRequest) -> Decision {
        let state = self.state.load();
        let refuse = |reason| Decision {
            allowed: false,
            reason,
            policy: None,
            audited: Vec::new(),
        };
        let decision = match state.workloads.get(&req.destination_addr.ip()) {
            None => refuse(Reason::UnknownDestination),
            Some(w) if w.identity != req.destination => refuse(Reason::DestinationMismatch),
            Some(w) => evaluate(
                &w.policies,
                state.default,
                &Request {
                    source: req.source.as_ref(),
                    port: req.destination_addr.port(),
                },
            ),
        };
        let source = req
            .source
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "<unauthenticated>".to_owned());
        for policy in &decision.audited {
            info!(
                %source,
                destination = %req.destination,
                destination_addr = %req.destination_addr,
                policy,
                allowed = decision.allowed,
                "authorization audit"
            );
            self.metrics
                .authz_decisions
                .with_label_values(&["audit", "audit_policy"])
                .inc();
        }
        let action = if decision.allowed { "allow" } else { "deny" };
        self.metrics
            .authz_decisions
            .with_label_values(&[action, decision.reason.as_str()])
            .inc();
        if !decision.allowed {
            warn!(
                %source,
                destination = %req.destination,
                destination_addr = %req.destination_addr,
                reason = decision.reason.as_str(),
                policy = decision.policy.as_deref().unwrap_or("-"),
                "connection denied by authorization"
            );
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        format!("spiffe://cluster.local/{s}").parse().unwrap()
    }

    fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
        Policy {
            name: name.into(),
            action,
            rules,
        }
    }

    #[test]
    fn evaluation_table() {
        let web = id("ns/shop/sa/web");
        let batch = id("ns/jobs/sa/batch");
        let allow_web_80 = policy(
            "allow-web",
            Action::Allow,
            vec![Rule {
                sources: vec![SourceMatch::Exact(web.clone())],
                ports: vec![80],
                ..Rule::default()
            }],
        );
        let deny_jobs = policy(
            "deny-jobs",
            Action::Deny,
            vec![Rule {
                namespaces: vec!["jobs".into()],
                ..Rule::default()
            }],
        );
        let deny_all_9090 = policy(
            "deny-admin",
            Action::Deny,
            vec![Rule {
                ports: vec![9090],
                ..Rule::default()
            }],
        );
        let allow_any_mesh = policy(
            "allow-mesh",
            Action::Allow,
            vec![Rule {
                sources: vec![SourceMatch::Any],
                ..Rule::default()
            }],
        );
        let audit_all = policy("audit", Action::Audit, vec![Rule::default()]);
        let allow_nothing = policy("allow-nothing", Action::Allow, vec![]);

        use DefaultAction as D;
        use Reason as R;
        #[rustfmt::skip]
        type Row<'a> = (Vec<Policy>, D, Option<&'a SpiffeId>, u16, bool, R);
        let table: Vec<Row<'_>> = vec![
            (vec![], D::Allow, Some(&web), 80, true, R::DefaultAllow),
            (vec![], D::Deny, Some(&web), 80, false, R::DefaultDeny),
            (vec![], D::Allow, None, 80, true, R::DefaultAllow),
            (
                vec![allow_web_80.clone()],
                D::Deny,
                Some(&web),
                80,
                true,
                R::AllowPolicy,
            ),
            (
                vec![allow_web_80.clone()],
                D::Allow,
                Some(&web),
                81,
                false,
                R::NoAllowMatched,
            ),
            (
                vec![allow_web_80.clone()],
                D::Allow,
                Some(&batch),
                80,
                false,
                R::NoAllowMatched,
            ),
            (
                vec![allow_web_80.clone()],
                D::Allow,
                None,
                80,
                false,
                R::NoAllowMatched,
            ),
            (
                vec![allow_web_80.clone(), deny_jobs.clone()],
                D::Allow,
                Some(&batch),
                80,
                false,
                R::DenyPolicy,
            ),
            (
                vec![deny_jobs.clone()],
                D::Allow,
                Some(&web),
                80,
                true,
                R::DefaultAllow,
            ),
            (
                vec![deny_jobs.clone()],
                D::Allow,
                None,
                80,
                true,
                R::DefaultAllow,
            ),
            (
                vec![deny_all_9090.clone(), allow_any_mesh.clone()],
                D::Deny,
                Some(&web),
                9090,
                false,
                R::DenyPolicy,
            ),
            (
                vec![deny_all_9090.clone(), allow_any_mesh.clone()],
                D::Deny,
                Some(&batch),
                8080,
                true,
                R::AllowPolicy,
            ),
            (
                vec![allow_any_mesh.clone()],
                D::Allow,
                None,
                8080,
                false,
                R::NoAllowMatched,
            ),
            (
                vec![audit_all.clone()],
                D::Deny,
                Some(&web),
                80,
                false,
                R::DefaultDeny,
            ),
            (
                vec![audit_all.clone()],
                D::Allow,
                Some(&web),
                80,
                true,
                R::DefaultAllow,
            ),
            (
                vec![allow_nothing.clone()],
                D::Allow,
                Some(&web),
                80,
                false,
                R::NoAllowMatched,
            ),
            (
                vec![allow_nothing, allow_web_80],
                D::Deny,
                Some(&web),
                80,
                true,
                R::AllowPolicy,
            ),
        ];
        for (i, (policies, default, source, port, allowed, reason)) in table.into_iter().enumerate()
        {
            let d = evaluate(&policies, default, &Request { source, port });
            assert_eq!((d.allowed, d.reason), (allowed, reason), "row {i}: {d:?}");
            let audited = policies.iter().any(|p| p.action == Action::Audit);
            assert_eq!(
                d.audited,
                if audited {
                    vec!["audit".to_owned()]
                } else {
                    vec![]
                },
                "row {i}"
            );
        }
    }

    #[test]
    fn source_match_parses_star_and_ids() {
        assert_eq!(SourceMatch::parse("*").unwrap(), SourceMatch::Any);
        assert_eq!(
            SourceMatch::parse("spiffe://cluster.local/ns/a/sa/b").unwrap(),
            SourceMatch::Exact(id("ns/a/sa/b"))
        );
        assert!(SourceMatch::parse("web").is_err());
    }

    #[test]
    fn authorizer_counts_by_action() {
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::new(&registry).unwrap());
        let authz = Authorizer::new(DefaultAction::Allow, metrics.clone());
        let dst: SocketAddr = "10.0.0.7:80".parse().unwrap();
        let req = AuthzRequest {
            source: Some(id("ns/a/sa/b")),
            destination: id("ns/x/sa/y"),
            destination_addr: dst,
            source_cert_serial: None,
        };
        assert_eq!(authz.authorize(&req).reason, Reason::UnknownDestination);
        authz.set_workload(dst.ip(), id("ns/x/sa/other"), vec![]);
        assert_eq!(authz.authorize(&req).reason, Reason::DestinationMismatch);
        assert_eq!(metrics.authz_count("deny", "unknown_destination"), 1);
        assert_eq!(metrics.authz_count("deny", "destination_mismatch"), 1);
        authz.set_workload(
            dst.ip(),
            id("ns/x/sa/y"),
            vec![
                policy("audit", Action::Audit, vec![Rule::default()]),
                policy(
                    "deny-80",
                    Action::Deny,
                    vec![Rule {
                        ports: vec![80],
                        ..Rule::default()
                    }],
                ),
            ],
        );
        assert!(!authz.authorize(&req).allowed);
        assert_eq!(metrics.authz_count("deny", "deny_policy"), 1);
        assert_eq!(metrics.authz_count("audit", "audit_policy"), 1);
        authz.set_workload(dst.ip(), id("ns/x/sa/y"), vec![]);
        assert!(authz.authorize(&req).allowed);
        assert_eq!(metrics.authz_count("allow", "default_allow"), 1);
        authz.set_default(DefaultAction::Deny);
        assert!(!authz.authorize(&req).allowed);
        assert_eq!(metrics.authz_count("deny", "default_deny"), 1);
        authz.remove_workload(dst.ip());
        assert_eq!(authz.authorize(&req).reason, Reason::UnknownDestination);
    }
}
