//! Decoding objects from YAML or JSON, exactly as `kubectl get -o yaml`
//! prints them: multi-document streams and `kind: List` wrappers included.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::object::{Kind, Object, ObjectRef};
use crate::rejection::{Reason, Rejection};

/// A YAML stream that is not YAML at all; nothing of it can be used.
#[derive(Debug, thiserror::Error)]
#[error("document {document} is not valid YAML")]
pub struct SyntaxError {
    /// Index of the failing document in the stream, from 0.
    pub document: usize,
    /// The parser's error.
    #[source]
    pub source: serde_yaml_ng::Error,
}

/// Decodes every object of a YAML stream. Objects of kinds nodemesh does not
/// read are skipped; objects that do not fit their kind's schema come back
/// as [`Rejection`]s.
pub fn decode_yaml(text: &str) -> Result<Vec<Result<Object, Rejection>>, SyntaxError> {
    Ok(yaml_values(text)?
        .into_iter()
        .filter_map(decode_object)
        .collect())
}

/// Splits a YAML stream into the raw objects of the kinds nodemesh reads,
/// unwrapping `List`s.
pub fn yaml_values(text: &str) -> Result<Vec<Value>, SyntaxError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (document, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| SyntaxError { document, source })?;
        flatten(value, &mut out);
    }
    Ok(out)
}

fn flatten(value: Value, out: &mut Vec<Value>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    match value {
        Value::Null => {}
        Value::Object(mut map) if is_list => {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten(item, out);
                }
            }
        }
        value => {
            if object_ref_of(&value).is_some() {
                out.push(value);
            } else {
                tracing::trace!(
                    kind = value
                        .get("kind")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default(),
                    "skipping object of a kind nodemesh does not read"
                );
            }
        }
    }
}

/// The reference of a raw object, if it is of a kind nodemesh reads; the
/// name is empty when the object has none.
pub fn object_ref_of(value: &Value) -> Option<ObjectRef> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = Kind::from_type(api_version, kind)?;
    let meta = |field: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(ObjectRef {
        kind,
        namespace: if kind.namespaced() {
            meta("namespace").unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        },
        name: meta("name").unwrap_or_default(),
    })
}

/// Decodes one raw object; `None` if its kind is not one nodemesh reads.
pub fn decode_object(value: Value) -> Option<Result<Object, Rejection>> {
    let object = object_ref_of(&value)?;
    let kind = object.kind;
    if object.name.is_empty() {
        return Some(Err(Rejection::new(
            &object,
            "metadata.name",
            Reason::Missing,
        )));
    }
    let decoded = match kind {
        Kind::Namespace => typed(value, &object).map(Object::Namespace),
        Kind::MeshConfig => typed(value, &object).map(Object::MeshConfig),
        Kind::Pod => typed(value, &object).map(|p| Object::Pod(Box::new(p))),
        Kind::Service => typed(value, &object).map(Object::Service),
        Kind::EndpointSlice => typed(value, &object).map(Object::EndpointSlice),
        Kind::TrafficSplit => typed(value, &object).map(Object::TrafficSplit),
        Kind::HttpRoute => typed(value, &object).map(Object::HttpRoute),
        Kind::GrpcRoute => typed(value, &object).map(Object::GrpcRoute),
        Kind::AuthorizationPolicy => typed(value, &object).map(Object::AuthorizationPolicy),
    };
    Some(decoded.map(|o| with_default_namespace(o, &object.namespace)))
}

fn typed<T: DeserializeOwned>(value: Value, object: &ObjectRef) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let message = e.into_inner().to_string();
        Rejection::new(
            object,
            field,
            Reason::Schema {
                kind: object.kind.as_str(),
                message,
            },
        )
    })
}

/// Objects in files often leave `metadata.namespace` out; they live in `default`.
fn with_default_namespace(mut object: Object, namespace: &str) -> Object {
    if namespace.is_empty() {
        return object;
    }
    let meta = match &mut object {
        Object::Namespace(o) => &mut o.metadata,
        Object::MeshConfig(o) => &mut o.metadata,
        Object::Pod(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::TrafficSplit(o) => &mut o.metadata,
        Object::HttpRoute(o) => &mut o.metadata,
        Object::GrpcRoute(o) => &mut o.metadata,
        Object::AuthorizationPolicy(o) => &mut o.metadata,
    };
    meta.namespace.get_or_insert_with(|| namespace.to_owned());
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_documents_are_flattened_and_foreign_kinds_skipped() {
        let yaml = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: demo}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
"#;
        let objects: Vec<_> = decode_yaml(yaml)
            .unwrap()
            .into_iter()
            .map(|o| o.unwrap().object_ref())
            .collect();
        assert_eq!(
            objects,
            [
                ObjectRef::new(Kind::Namespace, "", "demo"),
                ObjectRef::new(Kind::Service, "default", "web")
            ]
        );
    }

    #[test]
    fn schema_errors_name_object_and_field() {
        let yaml = r#"
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: demo}
spec:
  action: DENY
  rules:
  - from: [{identitees: []}]
"#;
        let decoded = decode_yaml(yaml).unwrap();
        let err = decoded[0].as_ref().unwrap_err();
        assert_eq!(
            err.object,
            ObjectRef::new(Kind::AuthorizationPolicy, "demo", "p")
        );
        assert_eq!(err.field, "spec.rules[0].from[0].identitees");
        assert!(
            err.to_string().contains("unknown field `identitees`"),
            "{err}"
        );
    }

    #[test]
    fn broken_yaml_is_a_syntax_error() {
        assert!(decode_yaml("a: [1, 2\n").is_err());
    }
}
