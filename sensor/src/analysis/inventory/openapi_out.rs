//! The discovered API as an OpenAPI 3.1 document (`apisessions endpoints --openapi`): the paths
//! seen with their path parameters, methods, query parameters and request body schemas with the
//! inferred types, and the response codes seen.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{
    EndpointRow,
    facts::ParamIn,
    spec::SpecStatus,
    types::{TypeSet, ValueType},
};

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document for `rows` (those of `host` only, when given). Spec operations never seen
/// (orphans) are not part of what was discovered; methods OpenAPI cannot describe (WebDAV's
/// PROPFIND, say) and templates that were cut (`…`) are left out.
pub fn document(rows: &[EndpointRow], host: Option<&str>) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for row in rows {
        if host.is_some_and(|h| !h.eq_ignore_ascii_case(&row.host))
            || row.spec_status == Some(SpecStatus::Orphan)
            || row.endpoint.ends_with('…')
            || !row.endpoint.starts_with('/')
        {
            continue;
        }
        let method = row.method.to_ascii_lowercase();
        if !METHODS.contains(&method.as_str()) {
            continue;
        }
        let (path, path_params) = unique_parameters(&row.endpoint);
        let item = paths.entry(path).or_default();
        // Two hosts can serve the same path and method: the first row (sorted) describes it.
        if item.contains_key(&method) {
            continue;
        }
        item.insert(method, operation(row, &path_params));
    }
    let paths: Map<String, Value> = paths
        .into_iter()
        .map(|(path, ops)| (path, Value::Object(ops)))
        .collect();
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "API discovered by apisessions",
            "version": "observed",
            "description": "Endpoints, parameters and response codes seen in captured traffic.",
        },
        "paths": paths,
    });
    if let Some(host) = host {
        doc["servers"] = json!([{ "url": format!("http://{host}") }]);
    }
    doc
}

/// The template with each placeholder named uniquely (`/a/{id}/b/{id}` becomes
/// `/a/{id}/b/{id2}`: OpenAPI requires unique parameter names in a path), and those names.
fn unique_parameters(template: &str) -> (String, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let base: String = rest[open + 1..close]
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = if base.is_empty() {
            "param".to_owned()
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        out.push('{');
        out.push_str(&name);
        out.push('}');
        names.push(name);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    (out, names)
}

fn operation(row: &EndpointRow, path_params: &[String]) -> Value {
    let mut parameters: Vec<Value> = path_params
        .iter()
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect();
    let mut body_fields: Vec<(&str, TypeSet)> = Vec::new();
    for param in &row.params {
        match param.place {
            ParamIn::Query => parameters.push(json!({
                "name": param.name,
                "in": "query",
                "required": param.count >= row.calls,
                "schema": schema_of(param.types),
            })),
            ParamIn::Body => body_fields.push((&param.name, param.types)),
        }
    }
    let mut responses = Map::new();
    for status in &row.statuses {
        if (100..=599).contains(&status.status) {
            responses.insert(
                status.status.to_string(),
                json!({ "description": format!("Seen {} times", status.count) }),
            );
        }
    }
    if responses.is_empty() {
        responses.insert(
            "default".to_owned(),
            json!({ "description": "No response seen" }),
        );
    }
    let mut op = json!({
        "summary": format!("{} calls, {} sessions", row.calls, row.sessions),
        "responses": responses,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if !body_fields.is_empty() {
        op["requestBody"] = json!({
            "content": { "application/json": { "schema": body_schema(&body_fields) } }
        });
    }
    op
}

fn schema_of(types: TypeSet) -> Value {
    match types.schema_type() {
        Some((t, Some(format))) => json!({ "type": t, "format": format }),
        Some((t, None)) => json!({ "type": t }),
        // Mixed types: any of them.
        None => json!({
            "type": types
                .iter()
                .filter_map(|t| TypeSet::of(t).schema_type().map(|(name, _)| name))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        }),
    }
}

/// A field tree built from flattened paths (`owner.email`, `tags[].id`).
#[derive(Default)]
struct Node {
    types: TypeSet,
    properties: BTreeMap<String, Node>,
    items: Option<Box<Node>>,
}

fn body_schema(fields: &[(&str, TypeSet)]) -> Value {
    let mut root = Node::default();
    for (path, types) in fields {
        let mut node = &mut root;
        for token in path.split('.') {
            let name = token.trim_end_matches("[]");
            let arrays = (token.len() - name.len()) / 2;
            node = node.properties.entry(name.to_owned()).or_default();
            for _ in 0..arrays {
                node = node.items.get_or_insert_with(Box::default);
            }
        }
        node.types = node.types.union(*types);
    }
    render(&root)
}

fn render(node: &Node) -> Value {
    if !node.properties.is_empty() {
        let properties: Map<String, Value> = node
            .properties
            .iter()
            .map(|(name, child)| (name.clone(), render(child)))
            .collect();
        return json!({ "type": "object", "properties": properties });
    }
    if let Some(items) = &node.items {
        return json!({ "type": "array", "items": render(items) });
    }
    if node.types.contains(ValueType::Array) {
        return json!({ "type": "array" });
    }
    schema_of(node.types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_are_unique() {
        assert_eq!(
            unique_parameters("/a/{id}/b/{id}/c/{param}"),
            (
                "/a/{id}/b/{id2}/c/{param}".to_owned(),
                vec!["id".into(), "id2".into(), "param".into()]
            )
        );
        assert_eq!(
            unique_parameters("/x/{}"),
            ("/x/{param}".to_owned(), vec!["param".into()])
        );
        assert_eq!(unique_parameters("/plain"), ("/plain".to_owned(), vec![]));
    }

    #[test]
    fn body_schemas_nest() {
        let t = TypeSet::of;
        let schema = body_schema(&[
            ("id", t(ValueType::Integer)),
            ("tags", t(ValueType::Array)),
            ("tags[].name", t(ValueType::String)),
            ("photoUrls", t(ValueType::Array)),
            ("photoUrls[]", t(ValueType::String)),
            ("owner", t(ValueType::Object)),
            ("owner.email", t(ValueType::Email)),
            ("empty", t(ValueType::Array)),
        ]);
        assert_eq!(
            schema,
            json!({"type": "object", "properties": {
                "id": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "photoUrls": {"type": "array", "items": {"type": "string"}},
                "owner": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}},
                "empty": {"type": "array"},
            }})
        );
    }
}
