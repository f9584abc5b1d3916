//! Which context attributes each action's schema declares. Cedar records are closed, so
//! the context Clearance builds must hold exactly what the schema declares: no more.

use std::collections::HashMap;

use serde_json::Value;

use crate::compile::PolicyError;

/// The context attributes Clearance knows how to fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ContextShape {
    pub arguments: bool,
    pub context: bool,
    pub request_time: bool,
    pub lineage: bool,
    pub environment: bool,
}

pub(crate) const KNOWN_ATTRIBUTES: &str = "`arguments`, `context`, `request_time`, `lineage`, `environment`";

/// The schema's namespace (empty for none) and each action's context shape, read from
/// the JSON form of the schema.
pub(crate) fn context_shapes(schema_json: &Value) -> Result<(String, HashMap<String, ContextShape>), PolicyError> {
    let namespaces = schema_json
        .as_object()
        .ok_or_else(|| PolicyError::Schema(vec!["schema is not a JSON object".into()]))?;
    let mut iter = namespaces.iter();
    let (namespace, body) = match (iter.next(), iter.next()) {
        (Some(only), None) => only,
        (None, _) => {
            return Err(PolicyError::Schema(vec!["schema declares no actions".into()]));
        }
        (Some(_), Some(_)) => {
            return Err(PolicyError::Unsupported(
                "schemas with more than one namespace are not supported".into(),
            ));
        }
    };
    let common = body.get("commonTypes").and_then(Value::as_object);
    let mut shapes = HashMap::new();
    let actions = body.get("actions").and_then(Value::as_object);
    for (action, decl) in actions.into_iter().flatten() {
        let context = decl.get("appliesTo").and_then(|a| a.get("context"));
        let attributes = match context {
            None => None,
            Some(ty) => Some(record_attributes(ty, namespace, common, action)?),
        };
        let mut shape = ContextShape::default();
        for name in attributes.into_iter().flat_map(|a| a.keys()) {
            match name.as_str() {
                "arguments" => shape.arguments = true,
                "context" => shape.context = true,
                "request_time" => shape.request_time = true,
                "lineage" => shape.lineage = true,
                "environment" => shape.environment = true,
                other => {
                    return Err(PolicyError::Schema(vec![format!(
                        "action `{action}` declares context attribute `{other}`, which Clearance does not supply: \
                         use only {KNOWN_ATTRIBUTES}"
                    )]));
                }
            }
        }
        shapes.insert(action.clone(), shape);
    }
    Ok((namespace.clone(), shapes))
}

fn record_attributes<'a>(
    ty: &'a Value,
    namespace: &str,
    common: Option<&'a serde_json::Map<String, Value>>,
    action: &str,
) -> Result<&'a serde_json::Map<String, Value>, PolicyError> {
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind == "Record" {
        return ty
            .get("attributes")
            .and_then(Value::as_object)
            .ok_or_else(|| PolicyError::Schema(vec![format!("action `{action}`: context record has no attributes")]));
    }
    // A reference to a common type: `{"type": "Name"}` or `{"type": "EntityOrCommon", "name": "Name"}`.
    let name = if kind == "EntityOrCommon" {
        ty.get("name").and_then(Value::as_str).unwrap_or_default()
    } else {
        kind
    };
    let prefix = format!("{namespace}::");
    let local = name.strip_prefix(&prefix).unwrap_or(name);
    let target = common.and_then(|c| c.get(local)).ok_or_else(|| {
        PolicyError::Schema(vec![format!(
            "action `{action}`: context type `{name}` is not a record type"
        )])
    })?;
    if target.get("type").and_then(Value::as_str) == Some("Record") {
        record_attributes(target, namespace, common, action)
    } else {
        Err(PolicyError::Schema(vec![format!(
            "action `{action}`: context type `{name}` is not a record type"
        )]))
    }
}
