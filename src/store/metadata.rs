//! The `Metadata` record kept for every version of every object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Kind of the record that marks a dropped object (see [`super::Catalog`]).
pub const TOMBSTONE_KIND: &str = "omega.dropped";

/// One committed version of an object, stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The user's name, e.g. `sales/2024/q1`.
    pub name: String,
    /// The namespace, `default` unless chosen.
    pub bucket: String,
    /// The store: `datasets`, `models` or `jobs`.
    pub prefix: String,
    /// Which backend owns the object, e.g. `table.delta`.
    pub kind: String,
    /// The backend's own description (for tables: schema, rows, size, Delta version).
    #[serde(default)]
    pub kind_meta: Value,
    /// The user's attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Where the data of this version lives (a URL).
    #[serde(default)]
    pub uri: String,
    /// Version number, from 1, contiguous.
    pub version: u64,
    /// When version 1 of the object was committed.
    pub created: DateTime<Utc>,
    /// When this version was committed.
    pub modified: DateTime<Utc>,
}

impl Metadata {
    pub(crate) fn is_tombstone(&self) -> bool {
        self.kind == TOMBSTONE_KIND
    }
}

/// How a put changes the attributes: `None` keeps the previous ones,
/// an empty map resets them, otherwise the keys are merged in.
pub(crate) fn merge_attributes(
    previous: Option<&Map<String, Value>>,
    update: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    match (previous, update) {
        (prev, None) => prev.cloned().unwrap_or_default(),
        (_, Some(new)) if new.is_empty() => Map::new(),
        (prev, Some(new)) => {
            let mut merged = prev.cloned().unwrap_or_default();
            for (k, v) in new {
                merged.insert(k.clone(), v.clone());
            }
            merged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_merge_and_reset() {
        let prev = json!({"a": 1, "b": 2}).as_object().cloned().unwrap();
        let upd = json!({"b": 3, "c": 4}).as_object().cloned().unwrap();
        let merged = merge_attributes(Some(&prev), Some(&upd));
        assert_eq!(Value::Object(merged), json!({"a": 1, "b": 3, "c": 4}));
        assert!(merge_attributes(Some(&prev), Some(&Map::new())).is_empty());
        assert_eq!(merge_attributes(Some(&prev), None), prev);
    }
}
