//! Which context attributes each action's schema declares. Cedar records are closed, so
//! the context Clearance builds must hold exactly what the schema declares: no more.

use std::collections::HashMap;

use serde_json::Value;

use crate::compile::PolicyError;

/// The schema types of the context attributes a request supplies itself (`arguments`,
/// `context`), with the namespace's common types, to say which field of a request does
/// not fit. Only read when a request is refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DeclaredInputs {
    pub namespace: String,
    /// Shared by every action of the schema.
    pub common: Option<std::sync::Arc<serde_json::Map<String, Value>>>,
    /// Attribute name and its declared type.
    pub types: Vec<(String, Value)>,
}

impl DeclaredInputs {
    /// The first field of the request's `arguments` or `context` that does not fit.
    pub fn mismatch(&self, arguments: &Value, context: &Value) -> Option<String> {
        self.types.iter().find_map(|(name, ty)| {
            let value = if name == "arguments" { arguments } else { context };
            mismatch(
                ty,
                value,
                &format!("context.{name}"),
                &self.namespace,
                self.common.as_deref(),
                0,
            )
        })
    }
}

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
pub(crate) fn context_shapes(schema_json: &Value) -> Result<(String, HashMap<String, ActionContext>), PolicyError> {
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
    let shared_common = common.cloned().map(std::sync::Arc::new);
    let mut shapes = HashMap::new();
    let actions = body.get("actions").and_then(Value::as_object);
    for (action, decl) in actions.into_iter().flatten() {
        let context = decl.get("appliesTo").and_then(|a| a.get("context"));
        let attributes = match context {
            None => None,
            Some(ty) => Some(record_attributes(ty, namespace, common, action)?),
        };
        let mut shape = ContextShape::default();
        let mut inputs = DeclaredInputs::default();
        for (name, ty) in attributes.into_iter().flatten() {
            if matches!(name.as_str(), "arguments" | "context") {
                inputs.types.push((name.clone(), ty.clone()));
            }
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
        if !inputs.types.is_empty() {
            inputs.namespace.clone_from(namespace);
            inputs.common.clone_from(&shared_common);
        }
        shapes.insert(action.clone(), ActionContext { shape, inputs });
    }
    Ok((namespace.clone(), shapes))
}

/// What one action's context holds, and the types of what the request supplies.
#[derive(Clone, Debug, Default)]
pub(crate) struct ActionContext {
    pub shape: ContextShape,
    pub inputs: DeclaredInputs,
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

/// Why `value` does not fit the schema type `ty`, naming the first field that does not
/// (`context.arguments.amount must be a Long, ...`), or `None` if no reason is
/// found here (Cedar's own check then speaks). Values are never quoted: arguments may
/// carry secrets. `common` holds the namespace's common types.
pub(crate) fn mismatch(
    ty: &Value,
    value: &Value,
    path: &str,
    namespace: &str,
    common: Option<&serde_json::Map<String, Value>>,
    depth: usize,
) -> Option<String> {
    if depth > 32 {
        return None;
    }
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or_default();
    // A name may be a common type, a primitive or an entity type.
    let named = match kind {
        "EntityOrCommon" => ty.get("name").and_then(Value::as_str),
        "Long" | "String" | "Boolean" | "Bool" | "Set" | "Record" | "Entity" | "Extension" => None,
        other => Some(other),
    };
    if let Some(name) = named {
        let local = name.strip_prefix(&format!("{namespace}::")).unwrap_or(name);
        if let Some(target) = common.and_then(|c| c.get(local)) {
            return mismatch(target, value, path, namespace, common, depth + 1);
        }
        let primitive = name.strip_prefix("__cedar::").unwrap_or(name);
        return match primitive {
            "Long" | "String" | "Bool" | "Boolean" => mismatch(
                &serde_json::json!({ "type": primitive }),
                value,
                path,
                namespace,
                common,
                depth + 1,
            ),
            _ => None,
        };
    }
    let wrong = |wanted: &str| Some(format!("`{path}` must be {wanted}, but it is {}", json_kind(value)));
    match kind {
        "Long" => match value.as_i64() {
            Some(_) => None,
            None => wrong("a Long (a whole number within 64 bits)"),
        },
        "String" => (!value.is_string()).then(|| wrong("a String")).flatten(),
        "Boolean" | "Bool" => (!value.is_boolean()).then(|| wrong("a Boolean")).flatten(),
        "Set" => {
            let Some(items) = value.as_array() else {
                return wrong("a Set (a JSON array)");
            };
            let element = ty.get("element")?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| mismatch(element, item, &format!("{path}[{i}]"), namespace, common, depth + 1))
        }
        "Record" => {
            let Some(fields) = value.as_object() else {
                return wrong("a record (a JSON object)");
            };
            let declared = ty.get("attributes").and_then(Value::as_object)?;
            for (name, attribute) in declared {
                let required = attribute.get("required").and_then(Value::as_bool).unwrap_or(true);
                match fields.get(name) {
                    Some(v) => {
                        if let Some(why) =
                            mismatch(attribute, v, &format!("{path}.{name}"), namespace, common, depth + 1)
                        {
                            return Some(why);
                        }
                    }
                    None if required => return Some(format!("`{path}.{name}` is missing")),
                    None => {}
                }
            }
            fields
                .keys()
                .find(|k| !declared.contains_key(*k))
                .map(|k| format!("`{path}.{k}` is not declared in the schema for this action"))
        }
        _ => None,
    }
}

/// What kind of JSON value this is, for a message.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(n) if n.as_i64().is_some() => "a number",
        Value::Number(_) => "a number beyond the 64-bit range",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
