//! The host's own check of a resource's properties against the schema its
//! type declares, before the plugin's `validate` runs: unknown names,
//! missing required properties and values of the wrong kind. Plugins in any
//! language get these checks for free, with the same wording.

use crate::bindings::{Problem, PropertyKind, PropertySpec};

/// Every problem of `values` against `schema`, each naming its property.
pub fn check(schema: &[PropertySpec], values: &[(String, String)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, _) in values {
        if !schema.iter().any(|spec| &spec.name == name) {
            let known: Vec<&str> = schema.iter().map(|spec| spec.name.as_str()).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            problems.push(problem(name, format!("unknown property; this type accepts: {known}")));
        }
    }
    for spec in schema {
        match values.iter().rev().find(|(name, _)| name == &spec.name) {
            None if spec.required => {
                problems.push(problem(&spec.name, format!("required property is missing ({})", spec.description)))
            }
            None => {}
            Some((_, value)) => {
                if let Some(message) = kind_problem(spec.kind, value) {
                    problems.push(problem(&spec.name, message));
                }
            }
        }
    }
    problems
}

/// Why `value` is not of `kind`, or none when it is.
pub(crate) fn kind_problem(kind: PropertyKind, value: &str) -> Option<String> {
    match kind {
        PropertyKind::Integer if value.trim().parse::<i64>().is_err() => {
            Some(format!("`{value}` is not an integer; write a whole number such as 5"))
        }
        PropertyKind::Boolean if !matches!(value.trim(), "true" | "false") => {
            Some(format!("`{value}` is not a boolean; write true or false"))
        }
        _ => None,
    }
}

fn problem(property: &str, message: String) -> Problem {
    Problem { property: property.to_string(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: PropertyKind, required: bool) -> PropertySpec {
        PropertySpec { name: name.into(), kind, required, default_value: None, description: "d".into() }
    }

    #[test]
    fn names_unknown_missing_and_mistyped_properties() {
        let schema = [spec("program", PropertyKind::Text, true), spec("grace-ms", PropertyKind::Integer, false)];
        let values = vec![("grace-ms".to_string(), "soon".to_string()), ("colour".to_string(), "red".to_string())];
        let named: Vec<String> = check(&schema, &values).into_iter().map(|p| p.property).collect();
        assert_eq!(named, ["colour", "program", "grace-ms"]);
    }

    #[test]
    fn accepts_a_complete_set() {
        let schema = [spec("flag", PropertyKind::Boolean, true)];
        assert!(check(&schema, &[("flag".into(), "true".into())]).is_empty());
    }
}
