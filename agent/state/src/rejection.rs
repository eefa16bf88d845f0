//! Why an object was refused. The last good version of a refused object
//! stays in force.

use crate::desired::ServiceName;
use crate::model::ObjectRef;

/// An object nodemesh refused, naming the object, the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rejected {object}: {field}: {reason}")]
pub struct Rejection {
    /// The refused object.
    pub object: ObjectRef,
    /// Path of the offending field, e.g. `spec.rules[0].backendRefs[1].weight`.
    pub field: String,
    /// What is wrong with it.
    pub reason: Reason,
}

impl Rejection {
    /// A rejection of `object` for `reason` at `field`.
    pub fn new(object: &ObjectRef, field: impl Into<String>, reason: Reason) -> Self {
        Self {
            object: object.clone(),
            field: field.into(),
            reason,
        }
    }
}

/// What is wrong with a refused object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The object does not decode into its kind's schema (e.g. an unknown field).
    #[error("does not match the {kind} schema: {message}")]
    Schema {
        /// The kind.
        kind: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A required field is absent or empty.
    #[error("is required")]
    Missing,
    /// Every backend weight is zero.
    #[error("backend weights sum to zero")]
    ZeroWeights,
    /// A weight is negative.
    #[error("weight {0} is negative")]
    NegativeWeight(i64),
    /// A referenced Service does not exist.
    #[error("Service {0} does not exist")]
    MissingService(Box<ServiceName>),
    /// A label selector does not parse.
    #[error("invalid label selector: {0}")]
    Selector(String),
    /// An IP address does not parse.
    #[error("invalid IP address {0:?}")]
    Ip(String),
    /// A port is outside 1..=65535.
    #[error("invalid port {0}")]
    Port(i64),
    /// A duration is not in Gateway API format.
    #[error("invalid duration {0:?}")]
    Duration(String),
    /// A SPIFFE ID does not parse.
    #[error("invalid SPIFFE ID {0:?}")]
    SpiffeId(String),
    /// A value is not one of the accepted ones.
    #[error("unsupported value {0:?}")]
    Unsupported(String),
}
