//! `clearance mcp schema`: a Cedar schema for an MCP server's tools, each tool an action
//! `tool:<name>` whose `context.arguments` is typed from its `inputSchema`, so argument
//! policies are validated when pushed instead of failing at run time.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// How a JSON Schema maps to Cedar: string -> String, integer -> Long, boolean -> Bool,
/// array -> Set of its items, object -> record (required properties plain, others
/// optional). JSON Schema `number` becomes Long: a fractional value is then refused as
/// an invalid request (Cedar has no floating point), never silently accepted. Anything
/// else (unions, `$ref`, missing types) cannot be typed: the tool's action is still
/// declared, with a comment, and without `arguments`, so calls carrying arguments are
/// refused until someone writes the type by hand.
fn cedar_type(schema: &Value, depth: usize) -> Option<String> {
    if depth > 16 {
        return None;
    }
    match schema.get("type").and_then(Value::as_str)? {
        "string" => Some("String".into()),
        "integer" | "number" => Some("Long".into()),
        "boolean" => Some("Bool".into()),
        "array" => Some(format!("Set<{}>", cedar_type(schema.get("items")?, depth + 1)?)),
        "object" => record(schema, depth),
        _ => None,
    }
}

fn record(schema: &Value, depth: usize) -> Option<String> {
    let empty = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    // Sorted, so the schema is the same whatever order the server listed them in.
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort();
    for name in names {
        let prop = &properties[name.as_str()];
        let ty = cedar_type(prop, depth + 1)?;
        let optional = if required.contains(&name.as_str()) { "" } else { "?" };
        fields.push(format!("{}{optional}: {ty}", quote(name)));
    }
    Some(format!("{{ {} }}", fields.join(", ")))
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The schema text for `(tool name, inputSchema)` pairs.
pub fn cedar_schema(server: &str, tools: &[(String, Value)]) -> String {
    let mut out = format!(
        "// Cedar schema for the tools of MCP server `{server}`, written by `clearance mcp schema`.\n\
         // Each tool is the action `tool:<name>` on resource McpServer::\"{server}\".\n\
         entity Agent;\nentity McpServer;\n"
    );
    for (name, input) in tools {
        let action = quote(&format!("tool:{name}"));
        let has_properties = input
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        match (has_properties, record(input, 0)) {
            (false, _) => {
                let _ = writeln!(
                    out,
                    "action {action} appliesTo {{ principal: Agent, resource: McpServer }};"
                );
            }
            (true, Some(args)) => {
                let _ = writeln!(
                    out,
                    "action {action} appliesTo {{\n    principal: Agent, resource: McpServer,\n    context: {{ arguments: {args} }}\n}};"
                );
            }
            (true, None) => {
                let _ = writeln!(
                    out,
                    "// `{name}`: its inputSchema has types Cedar cannot express; calls with arguments are refused.\n\
                     action {action} appliesTo {{ principal: Agent, resource: McpServer }};"
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn types_arguments_from_input_schemas() {
        let tools = vec![
            (
                "refund".to_owned(),
                json!({"type": "object", "required": ["amount"], "properties": {
                    "amount": {"type": "integer"}, "currency": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "meta": {"type": "object", "properties": {"urgent": {"type": "boolean"}}}
                }}),
            ),
            ("ping".to_owned(), json!({"type": "object", "properties": {}})),
            (
                "odd".to_owned(),
                json!({"type": "object", "properties": {"x": {"anyOf": []}}}),
            ),
        ];
        let text = cedar_schema("pay", &tools);
        assert!(text.contains(
            r#"context: { arguments: { "amount": Long, "currency"?: String, "meta"?: { "urgent"?: Bool }, "tags"?: Set<String> } }"#
        ), "{text}");
        assert!(text.contains(r#"action "tool:ping" appliesTo { principal: Agent, resource: McpServer };"#));
        assert!(text.contains("`odd`: its inputSchema has types Cedar cannot express"));
    }
}
