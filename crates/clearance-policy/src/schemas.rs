//! Several schema files as one: a schema generated from an MCP server's tools beside a
//! hand-written one, say. Each file is parsed on its own (so an error names its file),
//! then their declarations are merged namespace by namespace. A declaration made in two
//! files must be the same in both (`entity Agent;` twice is fine); two different
//! declarations of one name are refused, naming both files.

use std::collections::{BTreeMap, HashMap};

use cedar_policy::SchemaFragment;
use serde_json::{Map, Value};

use crate::compile::PolicyError;
use crate::located::messages;

/// The kinds of declaration a schema namespace holds, as the JSON schema names them.
const SECTIONS: [(&str, &str); 3] = [
    ("entityTypes", "entity type"),
    ("actions", "action"),
    ("commonTypes", "type"),
];

/// One schema text from several `(name, text)` files. One file is returned as written.
pub fn merge_schemas(files: &[(String, String)]) -> Result<String, PolicyError> {
    match files {
        [] => Err(PolicyError::Schema(vec!["no schema file given".into()])),
        [(_, text)] => Ok(text.clone()),
        _ => merged(files),
    }
}

fn merged(files: &[(String, String)]) -> Result<String, PolicyError> {
    // (namespace, section) -> declarations, and which file made each declaration.
    let mut sections: BTreeMap<(String, &str), Map<String, Value>> = BTreeMap::new();
    let mut annotations: BTreeMap<String, Value> = BTreeMap::new();
    let mut origin: HashMap<(String, &str, String), &str> = HashMap::new();
    for (file, text) in files {
        let (fragment, _) =
            SchemaFragment::from_cedarschema_str(text).map_err(|e| PolicyError::Schema(messages(file, text, 0, &e)))?;
        let json = fragment
            .to_json_value()
            .map_err(|e| PolicyError::Schema(vec![format!("{file}: {e}")]))?;
        let Value::Object(spaces) = json else { continue };
        for (namespace, body) in spaces {
            // Annotations on a namespace are kept from the first file that has them.
            if let Some(a) = body.get("annotations") {
                annotations.entry(namespace.clone()).or_insert_with(|| a.clone());
            }
            for (section, what) in SECTIONS {
                // Every namespace gets each section, empty if no file declares any.
                let into = sections.entry((namespace.clone(), section)).or_default();
                for (name, decl) in body.get(section).and_then(Value::as_object).into_iter().flatten() {
                    let key = (namespace.clone(), section, name.clone());
                    match into.get(name) {
                        None => {
                            into.insert(name.clone(), decl.clone());
                            origin.insert(key, file);
                        }
                        Some(existing) if existing == decl => {}
                        Some(_) => {
                            let first = origin.get(&key).copied().unwrap_or("another file");
                            let qualified = if namespace.is_empty() {
                                name.clone()
                            } else {
                                format!("{namespace}::{name}")
                            };
                            return Err(PolicyError::Schema(vec![format!(
                                "{what} `{qualified}` is declared differently in `{first}` and `{file}`: \
                                 declare it in one of them only, or the same way in both"
                            )]));
                        }
                    }
                }
            }
        }
    }
    let mut namespaces: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for ((namespace, section), declared) in sections {
        namespaces
            .entry(namespace)
            .or_default()
            .insert(section.to_owned(), Value::Object(declared));
    }
    for (namespace, a) in annotations {
        namespaces.entry(namespace).or_default().insert("annotations".into(), a);
    }
    let whole: Map<String, Value> = namespaces
        .into_iter()
        .map(|(n, body)| (n, Value::Object(body)))
        .collect();
    let fragment = SchemaFragment::from_json_value(Value::Object(whole))
        .map_err(|e| PolicyError::Schema(vec![format!("the merged schema: {e}")]))?;
    fragment
        .to_cedarschema()
        .map_err(|e| PolicyError::Schema(vec![format!("the merged schema: {e}")]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CompiledPolicy;
    use clearance_model::wire::PolicyBundle;

    fn files(texts: &[&str]) -> Vec<(String, String)> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("s{i}.cedarschema"), (*t).to_owned()))
            .collect()
    }

    const PAYMENTS: &str = "entity Agent;\nentity Tool;\naction refund appliesTo { principal: Agent, resource: Tool, \
                            context: { arguments: { amount: Long } } };\n";
    const MCP: &str = "entity Agent;\nentity McpServer;\naction \"tool:echo\" appliesTo { principal: Agent, \
                       resource: McpServer, context: { arguments: { message: String } } };\n";

    #[test]
    fn files_declaring_the_same_entity_alike_combine() {
        let schema = merge_schemas(&files(&[PAYMENTS, MCP])).unwrap();
        let bundle = PolicyBundle {
            schema,
            policies: "@id(\"echo\")\npermit(principal, action == Action::\"tool:echo\", resource) \
                       when { context.arguments.message == \"hi\" };\n@id(\"refund\")\npermit(principal, \
                       action == Action::\"refund\", resource) when { context.arguments.amount < 5 };\n"
                .into(),
        };
        let compiled = CompiledPolicy::compile(&bundle).unwrap();
        assert_eq!(compiled.actions(), ["refund", "tool:echo"]);
    }

    #[test]
    fn different_declarations_of_one_name_are_refused_naming_both_files() {
        let other = "entity Agent { team: String };\naction ping appliesTo { principal: Agent, resource: Agent };\n";
        let err = merge_schemas(&files(&[PAYMENTS, other])).unwrap_err();
        assert_eq!(
            err.messages(),
            [
                "entity type `Agent` is declared differently in `s0.cedarschema` and `s1.cedarschema`: declare it in \
              one of them only, or the same way in both"
            ]
        );
    }

    #[test]
    fn a_syntax_error_names_its_own_file_and_line() {
        let err = merge_schemas(&files(&[PAYMENTS, "entity Agent;\nentity X\n"])).unwrap_err();
        assert!(err.messages()[0].starts_with("s1.cedarschema:2:9: "), "{err:?}");
    }

    #[test]
    fn one_file_is_kept_as_written() {
        assert_eq!(merge_schemas(&files(&[PAYMENTS])).unwrap(), PAYMENTS);
    }
}
