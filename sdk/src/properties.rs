//! Reads the host's text property values into a plugin's typed properties.
//!
//! The schema a type declares in its metadata says how each value is read
//! (integer, boolean, text, comma-separated list) and supplies defaults; the
//! result is handed to serde, so a plugin's properties are a plain
//! `#[derive(Deserialize)]` struct. Every problem names its property.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Problem, PropertyKind, PropertySpec};

/// Reads `values` by `schema` into `T`, or returns every problem found:
/// unknown properties, missing required ones, values of the wrong kind.
pub fn parse<T: DeserializeOwned>(schema: &[PropertySpec], values: &[(String, String)]) -> Result<T, Vec<Problem>> {
    let mut problems = Vec::new();
    for (name, _) in values {
        if !schema.iter().any(|spec| &spec.name == name) {
            let known: Vec<&str> = schema.iter().map(|spec| spec.name.as_str()).collect();
            problems.push(Problem::new(name, format!("unknown property; this type accepts: {}", known.join(", "))));
        }
    }
    let mut object = Map::new();
    for spec in schema {
        let given = values.iter().rev().find(|(name, _)| name == &spec.name).map(|(_, value)| value.as_str());
        let Some(text) = given.or(spec.default_value.as_deref()) else {
            if spec.required {
                problems.push(Problem::new(&spec.name, format!("required property is missing: {}", spec.description)));
            }
            continue;
        };
        match typed_value(spec.kind, text) {
            Ok(value) => {
                object.insert(spec.name.clone(), value);
            }
            Err(message) => problems.push(Problem::new(&spec.name, message)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(Value::Object(object)).map_err(|error| vec![Problem::new("", error.to_string())])
}

/// Joins problems into one line, for errors that carry a single message.
pub fn describe(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|problem| match problem.property.as_str() {
            "" => problem.message.clone(),
            property => format!("{property}: {}", problem.message),
        })
        .collect();
    parts.join("; ")
}

fn typed_value(kind: PropertyKind, text: &str) -> Result<Value, String> {
    match kind {
        PropertyKind::Text => Ok(Value::String(text.to_string())),
        PropertyKind::Integer => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("`{text}` is not an integer; write a whole number such as 5")),
        PropertyKind::Boolean => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not a boolean; write true or false")),
        },
        PropertyKind::TextList => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_string()))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TypeInfo;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    struct Props {
        program: String,
        grace_ms: i64,
        args: Vec<String>,
        verbose: bool,
    }

    fn schema() -> Vec<PropertySpec> {
        TypeInfo::new("t", "0.1.0", "test")
            .required("program", PropertyKind::Text, "the program")
            .optional("grace-ms", PropertyKind::Integer, "500", "grace period")
            .optional("args", PropertyKind::TextList, "", "arguments")
            .optional("verbose", PropertyKind::Boolean, "false", "chatty")
            .build()
            .properties
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn applies_defaults_and_kinds() {
        let props: Props = parse(&schema(), &pairs(&[("program", "/bin/sleep"), ("args", "10, 20")])).unwrap();
        assert_eq!(
            props,
            Props { program: "/bin/sleep".into(), grace_ms: 500, args: vec!["10".into(), "20".into()], verbose: false }
        );
    }

    #[test]
    fn names_every_problem() {
        let problems = parse::<Props>(&schema(), &pairs(&[("grace-ms", "soon"), ("colour", "red")])).unwrap_err();
        let named: Vec<&str> = problems.iter().map(|p| p.property.as_str()).collect();
        assert_eq!(named, vec!["colour", "program", "grace-ms"]);
        assert!(describe(&problems).contains("grace-ms: `soon` is not an integer"));
    }
}
