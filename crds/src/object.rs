//! A resource as `compile` reads it: the metadata it uses (name, namespace, labels) and the spec.
//!
//! Plain serde types, so reading YAML files needs no Kubernetes client code. The operator turns
//! the objects it watches into these with [`Object::of`] (feature `kube`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One resource of one kind: `Object<ModelEndpointSpec>` is a ModelEndpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object<S> {
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: S,
}

/// The part of Kubernetes' `ObjectMeta` that compile reads; other fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `None` reads as `default`, as kubectl does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Set by the API server; `created` of the models a ModelEndpoint serves.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub creation_timestamp: Option<jiff::Timestamp>,
}

/// `creationTimestamp` as the API server writes it (RFC 3339).
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<jiff::Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(feature = "kube")]
impl<S: Clone> Object<S> {
    /// The compile input for an object read from the API server.
    pub fn of<K>(object: &K) -> Self
    where
        K: kube::Resource + kube::core::object::HasSpec<Spec = S>,
    {
        let meta = object.meta();
        Object {
            metadata: Metadata {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                labels: meta.labels.clone(),
                creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0),
            },
            spec: object.spec().clone(),
        }
    }
}
