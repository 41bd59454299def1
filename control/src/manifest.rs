//! Reading manifests: YAML (several documents) or JSON, files or directories, into validated
//! objects. Every error names the file, the document and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::api::{App, Kind, Object, Route, Secret, Service, user_kind, validate};

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type errors, or invalid fields; one line each.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Where a document came from, for messages.
#[derive(Clone, Debug)]
struct Origin<'a> {
    file: &'a str,
    doc: usize,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.doc)
    }
}

/// Decodes one object from JSON data, naming the path of the first bad field.
pub fn decode_object(mut value: Value) -> Result<Object, String> {
    let Some(map) = value.as_object_mut() else {
        return Err("expected an object with kind, metadata and spec".to_owned());
    };
    let kind = match map.remove("kind") {
        Some(Value::String(k)) => k,
        Some(other) => return Err(format!("kind: expected a string, found {other}")),
        None => return Err("kind: missing (one of App, Service, Route, Secret)".to_owned()),
    };
    let kind: Kind = kind.parse().map_err(|e| format!("kind: {e}"))?;
    if !user_kind(kind) {
        return Err(format!(
            "kind: {kind} objects are managed by berth, not declared (declare App, Service, Route or Secret)"
        ));
    }
    fn typed<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, String> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })
    }
    Ok(match kind {
        Kind::App => Object::App(typed::<App>(value)?),
        Kind::Service => Object::Service(typed::<Service>(value)?),
        Kind::Route => Object::Route(typed::<Route>(value)?),
        Kind::Secret => Object::Secret(typed::<Secret>(value)?),
        Kind::Node | Kind::Instance | Kind::Endpoints => {
            return Err(format!("kind: {kind} cannot be declared"));
        }
    })
}

/// Decodes and validates one object; the message names the object and every bad field.
pub fn check_object(value: Value) -> Result<Object, Vec<String>> {
    let obj = decode_object(value).map_err(|e| vec![e])?;
    validate(&obj).map_err(|errs| {
        let m = obj.meta();
        errs.iter()
            .map(|e| format!("{} {}/{}: {e}", obj.kind(), m.namespace, m.name))
            .collect::<Vec<_>>()
    })?;
    Ok(obj)
}

/// Parses YAML (or JSON) text holding one or more documents into validated objects.
pub fn parse_str(file: &str, text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file, doc: i + 1 };
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{origin}: {e}"));
                // A syntax error leaves the stream unusable: later documents are not trusted.
                break;
            }
        };
        // A JSON array or a YAML sequence holds several objects.
        let values = match value {
            Value::Array(items) => items,
            v => vec![v],
        };
        for v in values {
            match check_object(v) {
                Ok(o) => objects.push(o),
                Err(msgs) => errors.extend(msgs.into_iter().map(|m| format!("{origin}: {m}"))),
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for o in &objects {
        if !seen.insert(o.key()) {
            let m = o.meta();
            errors.push(format!(
                "{file}: {} {}/{} is declared twice",
                o.kind(),
                m.namespace,
                m.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestError::Invalid(errors))
    }
}

/// Reads a manifest file, or every `.yaml`, `.yml` and `.json` file of a directory in name order.
pub fn load(path: &Path) -> Result<Vec<Object>, ManifestError> {
    let read_err = |p: &Path, source| ManifestError::Read {
        path: p.display().to_string(),
        source,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| read_err(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| read_err(&f, e))?;
        match parse_str(&f.display().to_string(), &text) {
            Ok(mut o) => objects.append(&mut o),
            Err(ManifestError::Invalid(mut e)) => errors.append(&mut e),
            Err(e) => return Err(e),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = include_str!("../../examples/hello.yaml");

    #[test]
    fn example_parses() {
        let objs = parse_str("hello.yaml", HELLO).unwrap();
        let kinds: Vec<_> = objs.iter().map(|o| o.kind()).collect();
        assert_eq!(kinds, [Kind::App, Kind::Service, Kind::Route]);
        let Object::App(app) = &objs[0] else { panic!() };
        assert_eq!(app.spec.replicas, 3);
        assert_eq!(app.metadata.namespace, "default");
    }

    fn err(text: &str) -> String {
        parse_str("f.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let e = err(
            "kind: App\nmetadata: {name: a}\nspec:\n  replicas: three\n  template: {command: x}\n",
        );
        assert!(
            e.starts_with("f.yaml: document 1: spec.replicas: invalid type"),
            "{e}"
        );
        let e = err(
            "---\nkind: Service\nmetadata: {name: s}\nspec: {app: a, ports: [{name: http, port: 80}], colour: red}\n",
        );
        assert!(
            e.contains("document 1: spec.colour: unknown field `colour`"),
            "{e}"
        );
        let e = err(
            "kind: Route\nmetadata: {name: r}\nspec: {hosts: [\"bad host\"], rules: [{service: s, port: http}]}\n",
        );
        assert!(
            e.contains("Route default/r: spec.hosts[0]: \"bad host\" is not a host name"),
            "{e}"
        );
        let e = err("kind: Gadget\nmetadata: {name: g}\n");
        assert!(e.contains("kind: unknown kind \"Gadget\""), "{e}");
        let e = err("kind: Instance\nmetadata: {name: g}\n");
        assert!(e.contains("managed by berth"), "{e}");
        let e = err("kind: App\nmetadata: {name: Bad_Name}\nspec: {template: {command: x}}\n");
        assert!(
            e.contains("metadata.name: \"Bad_Name\" must be a DNS label"),
            "{e}"
        );
        let e = err("a: [1, 2\n");
        assert!(e.starts_with("f.yaml: document 1: "), "{e}");
        let e = err(
            "kind: App\nmetadata: {name: a}\nspec: {template: {command: x, ports: [{name: http}], readinessProbe: {tcp: {port: web}}}}\n",
        );
        assert!(
            e.contains(
                "spec.template.readinessProbe.tcp.port: \"web\" is not one of the app's ports"
            ),
            "{e}"
        );
    }

    #[test]
    fn json_and_duplicates() {
        let doc = r#"[{"kind":"Service","metadata":{"name":"s"},"spec":{"app":"a","ports":[{"name":"http","port":80}]}},
                      {"kind":"Service","metadata":{"name":"s"},"spec":{"app":"a","ports":[{"name":"http","port":80}]}}]"#;
        let e = parse_str("f.json", doc).unwrap_err().to_string();
        assert!(e.contains("Service default/s is declared twice"), "{e}");
    }
}
