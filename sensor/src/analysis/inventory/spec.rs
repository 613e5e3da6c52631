//! OpenAPI documents (3.0, 3.1, and Swagger 2.0; YAML or JSON): their operations, and which one
//! an observed request calls.
//!
//! Only what the inventory needs is read: the base paths (`servers[].url` paths in 3.x, with
//! server variables at their defaults; `basePath` in 2.0), each path template and its
//! operations (method, `deprecated`). Path-level and operation-level `servers` and path items
//! given by `$ref` are not followed. A request path matches a template when it has as many
//! segments and each literal segment is equal; among matching templates, those that have the
//! request's method win, then the most specific one (literal segments before parameters, from
//! the left), so `/pet/findByStatus` wins over `/pet/{petId}`.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or JSON: where the parser stopped.
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        path: PathBuf,
        line: u64,
        column: u64,
        reason: String,
    },
    /// The document parsed but is not an OpenAPI document we can use: the JSON pointer of the
    /// element at fault (`/paths/~1pets/get`).
    #[error("{path}: at {pointer}: {reason}")]
    Invalid {
        path: PathBuf,
        pointer: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecVersion {
    Swagger2,
    OpenApi30,
    OpenApi31,
}

/// An operation a spec documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Upper case.
    pub method: String,
    /// The path template as the spec writes it (`/pet/{petId}`), without the base path.
    pub path: String,
    pub deprecated: bool,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`, or a template inside a segment (`{id}.json`): what comes before and after.
    Param {
        before: String,
        after: String,
    },
}

pub use crate::record::SpecStatus;

/// The result of matching a request against a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecMatch<'a> {
    pub status: SpecStatus,
    /// The operation called (None for shadow).
    pub operation: Option<&'a Operation>,
    /// The endpoint template to use: the base path the request came under followed by the
    /// operation's path template (None for shadow).
    pub template: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub file: PathBuf,
    pub version: SpecVersion,
    /// Path prefixes of the API (`/v2`); empty means the root.
    pub base_paths: Vec<String>,
    pub operations: Vec<Operation>,
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Spec {
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// A document's text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Spec, SpecError> {
        let root = parse_document(file, text)?;
        from_document(file, &root)
    }

    /// The operation `method path` calls (`path` without the query), if any.
    pub fn match_request(&self, method: &str, path: &str) -> SpecMatch<'_> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let mut best: Option<(bool, Vec<bool>, &Operation, &str)> = None;
        for base in self.bases() {
            let Some(rest) = strip_base(path, base) else {
                continue;
            };
            let segments: Vec<&str> = rest.split('/').skip(1).collect();
            for op in &self.operations {
                let Some(specificity) = op.matches(&segments) else {
                    continue;
                };
                let key = (op.method.eq_ignore_ascii_case(method), specificity);
                let better = best
                    .as_ref()
                    .is_none_or(|(m, s, _, _)| (key.0, &key.1) > (*m, s));
                if better {
                    best = Some((key.0, key.1, op, base));
                }
            }
        }
        match best {
            Some((true, _, op, base)) => SpecMatch {
                status: if op.deprecated {
                    SpecStatus::Zombie
                } else {
                    SpecStatus::Documented
                },
                operation: Some(op),
                template: Some(format!("{base}{}", op.path)),
            },
            _ => SpecMatch {
                status: SpecStatus::Shadow,
                operation: None,
                template: None,
            },
        }
    }

    /// The base paths, the root when the spec names none.
    fn bases(&self) -> Vec<&str> {
        if self.base_paths.is_empty() {
            vec![""]
        } else {
            self.base_paths.iter().map(String::as_str).collect()
        }
    }
}

/// `path` below `base` (`/v2/pet` under `/v2` is `/pet`); the root base takes every path.
fn strip_base<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    if base.is_empty() {
        return path.starts_with('/').then_some(path);
    }
    let rest = path.strip_prefix(base)?;
    (rest.starts_with('/')).then_some(rest)
}

impl Operation {
    /// Per segment, whether it matched literally; None when the path does not match.
    fn matches(&self, segments: &[&str]) -> Option<Vec<bool>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        self.segments
            .iter()
            .zip(segments)
            .map(|(template, value)| match template {
                Segment::Literal(l) => (l == value).then_some(true),
                Segment::Param { before, after } => (value.len() > before.len() + after.len()
                    && value.starts_with(before.as_str())
                    && value.ends_with(after.as_str()))
                .then_some(false),
            })
            .collect()
    }
}

fn parse_document(file: &Path, text: &str) -> Result<Value, SpecError> {
    let parse_error = |line: u64, column: u64, reason: String| SpecError::Parse {
        path: file.to_owned(),
        line,
        column,
        reason,
    };
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| parse_error(e.line() as u64, e.column() as u64, e.to_string()));
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The message repeats the place; keep its first line.
        let reason = e.to_string().lines().next().unwrap_or_default().to_owned();
        parse_error(line, column, reason)
    })
}

fn from_document(file: &Path, root: &Value) -> Result<Spec, SpecError> {
    let invalid = |pointer: &str, reason: &str| SpecError::Invalid {
        path: file.to_owned(),
        pointer: if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer.to_owned()
        },
        reason: reason.to_owned(),
    };
    let Value::Object(doc) = root else {
        return Err(invalid("", "an OpenAPI document is an object"));
    };
    let version = match (doc.get("openapi"), doc.get("swagger")) {
        (Some(Value::String(v)), _) if v.starts_with("3.0") => SpecVersion::OpenApi30,
        (Some(Value::String(v)), _) if v.starts_with("3.1") => SpecVersion::OpenApi31,
        (Some(_), _) => {
            return Err(invalid(
                "/openapi",
                "unsupported version (3.0.x and 3.1.x are)",
            ));
        }
        (None, Some(Value::String(v))) if v == "2.0" => SpecVersion::Swagger2,
        (None, Some(_)) => return Err(invalid("/swagger", "unsupported version (2.0 is)")),
        (None, None) => {
            return Err(invalid(
                "",
                "neither an `openapi` nor a `swagger` version field",
            ));
        }
    };
    let base_paths = match version {
        SpecVersion::Swagger2 => match doc.get("basePath") {
            None => Vec::new(),
            Some(Value::String(base)) => vec![normalise_base(base)],
            Some(_) => return Err(invalid("/basePath", "basePath is a string")),
        },
        _ => servers(doc.get("servers")).map_err(|(pointer, reason)| invalid(&pointer, reason))?,
    };
    let mut operations = Vec::new();
    match doc.get("paths") {
        None => {}
        Some(Value::Object(paths)) => {
            for (path, item) in paths {
                let pointer = format!("/paths/{}", escape_pointer(path));
                if !path.starts_with('/') {
                    return Err(invalid(&pointer, "a path starts with '/'"));
                }
                let Value::Object(item) = item else {
                    return Err(invalid(&pointer, "a path item is an object"));
                };
                let segments = parse_template(path).ok_or_else(|| {
                    invalid(&pointer, "unbalanced '{' or '}' in the path template")
                })?;
                for method in METHODS {
                    let Some(op) = item.get(*method) else {
                        continue;
                    };
                    let Value::Object(op) = op else {
                        return Err(invalid(
                            &format!("{pointer}/{method}"),
                            "an operation is an object",
                        ));
                    };
                    let deprecated = match op.get("deprecated") {
                        None => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => {
                            return Err(invalid(
                                &format!("{pointer}/{method}/deprecated"),
                                "deprecated is true or false",
                            ));
                        }
                    };
                    operations.push(Operation {
                        method: method.to_ascii_uppercase(),
                        path: path.clone(),
                        deprecated,
                        segments: segments.clone(),
                    });
                }
            }
        }
        Some(_) => return Err(invalid("/paths", "paths is an object")),
    }
    Ok(Spec {
        file: file.to_owned(),
        version,
        base_paths,
        operations,
    })
}

/// The path part of each `servers[].url` (absolute or relative; variables at their default).
fn servers(servers: Option<&Value>) -> Result<Vec<String>, (String, &'static str)> {
    let Some(servers) = servers else {
        return Ok(Vec::new());
    };
    let Value::Array(servers) = servers else {
        return Err(("/servers".to_owned(), "servers is an array"));
    };
    let mut bases = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let Some(url) = server.get("url").and_then(Value::as_str) else {
            return Err((format!("/servers/{i}/url"), "a server has a url string"));
        };
        let mut url = url.to_owned();
        if let Some(Value::Object(vars)) = server.get("variables") {
            for (name, var) in vars {
                if let Some(default) = var.get("default").and_then(Value::as_str) {
                    url = url.replace(&format!("{{{name}}}"), default);
                }
            }
        }
        let path = match url.find("://") {
            Some(i) => url[i + 3..].find('/').map_or("", |p| &url[i + 3 + p..]),
            None => url.as_str(),
        };
        let base = normalise_base(path);
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    Ok(bases)
}

/// `/v2/` and `v2` as `/v2`; `/` and `` as the root (empty).
fn normalise_base(base: &str) -> String {
    let base = base
        .split(['?', '#'])
        .next()
        .unwrap_or(base)
        .trim_end_matches('/');
    if base.is_empty() {
        String::new()
    } else if base.starts_with('/') {
        base.to_owned()
    } else {
        format!("/{base}")
    }
}

fn parse_template(path: &str) -> Option<Vec<Segment>> {
    path.split('/')
        .skip(1)
        .map(|segment| match (segment.find('{'), segment.rfind('}')) {
            (None, None) => Some(Segment::Literal(segment.to_owned())),
            (Some(open), Some(close)) if open < close => Some(Segment::Param {
                before: segment[..open].to_owned(),
                after: segment[close + 1..].to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// RFC 6901: `~` as `~0`, `/` as `~1`.
fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(Path::new("api.yaml"), text)
    }

    const PETS: &str = r#"
openapi: 3.1.0
info: { title: pets, version: "1" }
servers:
  - url: https://api.example.com/{ver}
    variables: { ver: { default: v2 } }
  - url: /internal/
paths:
  /pet/{petId}:
    get: { responses: { '200': { description: ok } } }
    delete: { deprecated: true, responses: { 200: { description: ok } } }
  /pet/findByStatus:
    get: { responses: { '200': { description: ok } } }
  /files/{name}.json:
    get: {}
"#;

    #[test]
    fn matches_most_specific_under_base_paths() {
        let s = spec(PETS).unwrap();
        assert_eq!(s.version, SpecVersion::OpenApi31);
        assert_eq!(s.base_paths, ["/v2", "/internal"]);
        let m = s.match_request("GET", "/v2/pet/findByStatus?status=sold");
        assert_eq!(m.status, SpecStatus::Documented);
        assert_eq!(m.template.as_deref(), Some("/v2/pet/findByStatus"));
        let m = s.match_request("GET", "/internal/pet/42");
        assert_eq!(m.template.as_deref(), Some("/internal/pet/{petId}"));
        assert_eq!(
            s.match_request("DELETE", "/v2/pet/42").status,
            SpecStatus::Zombie
        );
        // A method the best path lacks falls to a path that has it.
        let m = s.match_request("DELETE", "/v2/pet/findByStatus");
        assert_eq!(m.status, SpecStatus::Zombie);
        assert_eq!(m.operation.unwrap().path, "/pet/{petId}");
        assert_eq!(
            s.match_request("POST", "/v2/pet/42").status,
            SpecStatus::Shadow
        );
        assert_eq!(
            s.match_request("GET", "/pet/42").status,
            SpecStatus::Shadow,
            "outside the base"
        );
        assert_eq!(
            s.match_request("GET", "/v2/pet/42/x").status,
            SpecStatus::Shadow
        );
        assert_eq!(
            s.match_request("GET", "/v2/pet/").status,
            SpecStatus::Shadow,
            "empty parameter"
        );
        assert_eq!(
            s.match_request("GET", "/v2x/pet/1").status,
            SpecStatus::Shadow
        );
        assert_eq!(
            s.match_request("GET", "/v2/files/a.json").status,
            SpecStatus::Documented
        );
        assert_eq!(
            s.match_request("GET", "/v2/files/a.xml").status,
            SpecStatus::Shadow
        );
    }

    #[test]
    fn swagger_2_and_json() {
        let s = Spec::parse(
            Path::new("s.json"),
            r#"{"swagger":"2.0","basePath":"/api/","paths":{"/users/{id}":{"get":{},"parameters":[]}}}"#,
        )
        .unwrap();
        assert_eq!(s.version, SpecVersion::Swagger2);
        assert_eq!(s.operations.len(), 1);
        assert_eq!(
            s.match_request("get", "/api/users/7").status,
            SpecStatus::Documented
        );
        // No servers: the root.
        let s = spec("openapi: 3.0.3\npaths:\n  /a:\n    get: {}\n").unwrap();
        assert_eq!(s.match_request("GET", "/a").status, SpecStatus::Documented);
    }

    #[test]
    fn invalid_documents_name_the_place() {
        let cases = [
            ("openapi: 3.0.0\npaths: [\n", "api.yaml:"),
            (
                "openapi: 3.0.0\npaths:\n  /a:\n    get: 5\n",
                "at /paths/~1a/get: an operation",
            ),
            (
                "openapi: 3.0.0\npaths:\n  a: {}\n",
                "at /paths/a: a path starts",
            ),
            ("openapi: 2.5.0\n", "at /openapi: unsupported"),
            ("swagger: '1.2'\n", "at /swagger"),
            ("title: x\n", "at /: neither"),
            ("- 1\n", "at /: an OpenAPI document is an object"),
            (
                "openapi: 3.1.0\npaths:\n  /a/{b:\n    get: {}\n",
                "unbalanced",
            ),
            ("openapi: 3.1.0\nservers: [{}]\n", "at /servers/0/url"),
            (
                "openapi: 3.1.0\npaths:\n  /a:\n    get: { deprecated: yes please }\n",
                "/paths/~1a/get/deprecated",
            ),
        ];
        for (text, expected) in cases {
            let error = spec(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        // The parser's line and column.
        let error = spec("openapi: 3.0.0\npaths:\n  /a: {get: [}\n").unwrap_err();
        assert!(matches!(error, SpecError::Parse { line: 3, .. }), "{error}");
        let error = Spec::parse(Path::new("x.json"), "{\n\"openapi\": 3,,\n}").unwrap_err();
        assert!(error.to_string().starts_with("x.json:2:"), "{error}");
        assert!(matches!(
            Spec::load(Path::new("/nonexistent.yaml")),
            Err(SpecError::Read { .. })
        ));
    }
}
