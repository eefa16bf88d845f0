//! L7 routing tables per Service, from HTTPRoutes, GRPCRoutes and TrafficSplits.

use super::Index;
use super::validate::RuleMatches;
use crate::desired::{DesiredState, GrpcRule, HttpRule};
use crate::model::Kind;

/// Fills `routes`. Rules keep the order of their object; objects are
/// ordered producer routes first, then consumer routes, each by creation
/// time and name; TrafficSplits come after Gateway API routes.
pub(super) fn routes(ix: &Index, state: &mut DesiredState) {
    let mut ordered: Vec<_> = ix.routes.iter().collect();
    ordered.sort_by_key(|(r, rec)| {
        (
            r.kind == Kind::TrafficSplit,
            rec.created.clone(),
            (*r).clone(),
        )
    });
    for consumer_pass in [false, true] {
        for (r, rec) in &ordered {
            for (parent, port) in &rec.parents {
                let consumer = parent.namespace != r.namespace;
                if consumer != consumer_pass {
                    continue;
                }
                let consumer_namespace = consumer.then(|| r.namespace.clone());
                let table = state.routes.entry(parent.clone()).or_default();
                for rule in &rec.rules {
                    match &rule.matches {
                        RuleMatches::Http(matches) => table.http.push(HttpRule {
                            source: rule.source.clone(),
                            consumer_namespace: consumer_namespace.clone(),
                            port: *port,
                            matches: matches.clone(),
                            backends: rule.backends.clone(),
                            request_timeout: rule.request_timeout,
                            backend_request_timeout: rule.backend_request_timeout,
                            retry: rule.retry.clone(),
                        }),
                        RuleMatches::Grpc(matches) => table.grpc.push(GrpcRule {
                            source: rule.source.clone(),
                            consumer_namespace: consumer_namespace.clone(),
                            port: *port,
                            matches: matches.clone(),
                            backends: rule.backends.clone(),
                        }),
                    }
                }
            }
        }
    }
}
