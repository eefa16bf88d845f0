//! Checks of HTTPRoutes, GRPCRoutes and TrafficSplits.

use std::time::Duration;

use super::{RouteRecord, RouteRuleRecord, RuleMatches, parse_duration, port};
use crate::desired::{
    GrpcMatch, HttpMatch, Retry, RuleSource, ServiceName, StringMatch, WeightedService,
};
use crate::model::ObjectRef;
use crate::model::gateway::{BackendRef, GRPCRoute, HTTPRoute, HeaderMatch, ParentRef};
use crate::model::smi::TrafficSplit;
use crate::rejection::{Reason, Rejection};

fn duration(
    object: &ObjectRef,
    field: String,
    s: Option<&String>,
) -> Result<Option<Duration>, Rejection> {
    s.map(|s| {
        parse_duration(s).ok_or_else(|| Rejection::new(object, field, Reason::Duration(s.clone())))
    })
    .transpose()
}

fn string_match(
    object: &ObjectRef,
    field: String,
    type_: Option<&str>,
    value: String,
    default_prefix: bool,
) -> Result<StringMatch, Rejection> {
    Ok(match type_ {
        None if default_prefix => StringMatch::Prefix(value),
        Some("PathPrefix") if default_prefix => StringMatch::Prefix(value),
        None | Some("Exact") => StringMatch::Exact(value),
        Some("RegularExpression") => StringMatch::Regex(value),
        Some(other) => {
            return Err(Rejection::new(
                object,
                field,
                Reason::Unsupported(other.to_owned()),
            ));
        }
    })
}

fn header_matches(
    object: &ObjectRef,
    field: &str,
    hs: &[HeaderMatch],
    lower: bool,
) -> Result<Vec<(String, StringMatch)>, Rejection> {
    hs.iter()
        .enumerate()
        .map(|(i, h)| {
            let name = if lower {
                h.name.to_ascii_lowercase()
            } else {
                h.name.clone()
            };
            Ok((
                name,
                string_match(
                    object,
                    format!("{field}[{i}].type"),
                    h.type_.as_deref(),
                    h.value.clone(),
                    false,
                )?,
            ))
        })
        .collect()
}

/// Service parents of a route; routes attached only to Gateways have none.
fn parents(
    object: &ObjectRef,
    refs: &[ParentRef],
) -> Result<Vec<(ServiceName, Option<u16>)>, Rejection> {
    let mut out = Vec::new();
    for (i, p) in refs.iter().enumerate() {
        if !p.is_service() {
            continue;
        }
        let ns = p
            .namespace
            .clone()
            .unwrap_or_else(|| object.namespace.clone());
        let port = p
            .port
            .map(|n| port(object, format!("spec.parentRefs[{i}].port"), n.into()))
            .transpose()?;
        out.push((ServiceName::new(ns, p.name.clone()), port));
    }
    Ok(out)
}

fn backends(
    object: &ObjectRef,
    rule: usize,
    refs: &[BackendRef],
) -> Result<Vec<WeightedService>, Rejection> {
    let mut out = Vec::new();
    for (i, b) in refs.iter().enumerate() {
        let field = format!("spec.rules[{rule}].backendRefs[{i}]");
        let is_service = matches!(b.group.as_deref(), None | Some("") | Some("core"))
            && matches!(b.kind.as_deref(), None | Some("Service"));
        if !is_service {
            return Err(Rejection::new(
                object,
                format!("{field}.kind"),
                Reason::Unsupported(b.kind.clone().unwrap_or_default()),
            ));
        }
        let weight = i64::from(b.weight.unwrap_or(1));
        if weight < 0 {
            return Err(Rejection::new(
                object,
                format!("{field}.weight"),
                Reason::NegativeWeight(weight),
            ));
        }
        out.push(WeightedService {
            service: ServiceName::new(
                b.namespace
                    .clone()
                    .unwrap_or_else(|| object.namespace.clone()),
                b.name.clone(),
            ),
            port: b
                .port
                .map(|n| port(object, format!("{field}.port"), n.into()))
                .transpose()?,
            weight: weight as u32,
        });
    }
    if !out.is_empty() && out.iter().all(|b| b.weight == 0) {
        return Err(Rejection::new(
            object,
            format!("spec.rules[{rule}].backendRefs"),
            Reason::ZeroWeights,
        ));
    }
    Ok(out)
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

pub(in crate::index) fn http_route(
    object: &ObjectRef,
    route: &HTTPRoute,
) -> Result<RouteRecord, Rejection> {
    let mut rules = Vec::new();
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let mut matches = Vec::new();
        for (m, hm) in rule.matches.iter().enumerate() {
            let field = format!("spec.rules[{r}].matches[{m}]");
            let path = hm
                .path
                .as_ref()
                .map(|p| {
                    let value = p.value.clone().unwrap_or_else(|| "/".to_owned());
                    if !value.starts_with('/') && p.type_.as_deref() != Some("RegularExpression") {
                        return Err(Rejection::new(
                            object,
                            format!("{field}.path.value"),
                            Reason::Unsupported(value),
                        ));
                    }
                    string_match(
                        object,
                        format!("{field}.path.type"),
                        p.type_.as_deref(),
                        value,
                        true,
                    )
                })
                .transpose()?;
            let method = hm.method.as_ref().map(|m| m.to_ascii_uppercase());
            matches.push(HttpMatch {
                path,
                headers: header_matches(object, &format!("{field}.headers"), &hm.headers, true)?,
                query_params: header_matches(
                    object,
                    &format!("{field}.queryParams"),
                    &hm.query_params,
                    false,
                )?,
                method,
            });
        }
        let retry = rule
            .retry
            .as_ref()
            .map(|rt| {
                let attempts = rt.attempts.unwrap_or(1);
                Ok::<_, Rejection>(Retry {
                    attempts: u32::try_from(attempts).map_err(|_| {
                        Rejection::new(
                            object,
                            format!("spec.rules[{r}].retry.attempts"),
                            Reason::Unsupported(attempts.to_string()),
                        )
                    })?,
                    codes: rt.codes.clone(),
                    backoff: duration(
                        object,
                        format!("spec.rules[{r}].retry.backoff"),
                        rt.backoff.as_ref(),
                    )?,
                })
            })
            .transpose()?;
        let timeouts = rule.timeouts.as_ref();
        rules.push(RouteRuleRecord {
            source: RuleSource {
                kind: "HTTPRoute",
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                rule: r,
            },
            matches: RuleMatches::Http(matches),
            backends: backends(object, r, &rule.backend_refs)?,
            request_timeout: duration(
                object,
                format!("spec.rules[{r}].timeouts.request"),
                timeouts.and_then(|t| t.request.as_ref()),
            )?,
            backend_request_timeout: duration(
                object,
                format!("spec.rules[{r}].timeouts.backendRequest"),
                timeouts.and_then(|t| t.backend_request.as_ref()),
            )?,
            retry,
        });
    }
    Ok(RouteRecord {
        created: created(&route.metadata),
        parents: parents(object, &route.spec.parent_refs)?,
        rules,
    })
}

pub(in crate::index) fn grpc_route(
    object: &ObjectRef,
    route: &GRPCRoute,
) -> Result<RouteRecord, Rejection> {
    let mut rules = Vec::new();
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let mut matches = Vec::new();
        for (m, gm) in rule.matches.iter().enumerate() {
            let field = format!("spec.rules[{r}].matches[{m}]");
            let (service, method) = match &gm.method {
                None => (None, None),
                Some(mm) => {
                    if mm.service.is_none() && mm.method.is_none() {
                        return Err(Rejection::new(
                            object,
                            format!("{field}.method"),
                            Reason::Missing,
                        ));
                    }
                    let t = mm.type_.as_deref();
                    (
                        mm.service
                            .clone()
                            .map(|s| {
                                string_match(object, format!("{field}.method.type"), t, s, false)
                            })
                            .transpose()?,
                        mm.method
                            .clone()
                            .map(|s| {
                                string_match(object, format!("{field}.method.type"), t, s, false)
                            })
                            .transpose()?,
                    )
                }
            };
            matches.push(GrpcMatch {
                service,
                method,
                headers: header_matches(object, &format!("{field}.headers"), &gm.headers, true)?,
            });
        }
        rules.push(RouteRuleRecord {
            source: RuleSource {
                kind: "GRPCRoute",
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                rule: r,
            },
            matches: RuleMatches::Grpc(matches),
            backends: backends(object, r, &rule.backend_refs)?,
            request_timeout: None,
            backend_request_timeout: None,
            retry: None,
        });
    }
    Ok(RouteRecord {
        created: created(&route.metadata),
        parents: parents(object, &route.spec.parent_refs)?,
        rules,
    })
}

/// A TrafficSplit becomes a one-rule HTTP route without conditions.
pub(in crate::index) fn traffic_split(
    object: &ObjectRef,
    split: &TrafficSplit,
) -> Result<RouteRecord, Rejection> {
    let root = split.spec.service.split('.').next().unwrap_or_default();
    if root.is_empty() {
        return Err(Rejection::new(object, "spec.service", Reason::Missing));
    }
    if !split.spec.matches.is_empty() {
        return Err(Rejection::new(
            object,
            "spec.matches",
            Reason::Unsupported("HTTPRouteGroup matches".to_owned()),
        ));
    }
    let mut out = Vec::new();
    for (i, b) in split.spec.backends.iter().enumerate() {
        if b.weight < 0 {
            return Err(Rejection::new(
                object,
                format!("spec.backends[{i}].weight"),
                Reason::NegativeWeight(b.weight),
            ));
        }
        let name = b.service.split('.').next().unwrap_or_default();
        out.push(WeightedService {
            service: ServiceName::new(object.namespace.clone(), name),
            port: None,
            weight: u32::try_from(b.weight).unwrap_or(u32::MAX),
        });
    }
    if out.is_empty() {
        return Err(Rejection::new(object, "spec.backends", Reason::Missing));
    }
    if out.iter().all(|b| b.weight == 0) {
        return Err(Rejection::new(object, "spec.backends", Reason::ZeroWeights));
    }
    Ok(RouteRecord {
        created: created(&split.metadata),
        parents: vec![(ServiceName::new(object.namespace.clone(), root), None)],
        rules: vec![RouteRuleRecord {
            source: RuleSource {
                kind: "TrafficSplit",
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                rule: 0,
            },
            matches: RuleMatches::Http(vec![]),
            backends: out,
            request_timeout: None,
            backend_request_timeout: None,
            retry: None,
        }],
    })
}
