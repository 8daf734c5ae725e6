//! Tool calls in a model's reply, checked before the client can act on them: the called tool
//! must be one the request declared and the tenant allows, and its arguments must be JSON that
//! satisfies the declared `parameters` schema.
//!
//! The schema check covers what tool schemas use: `type` (one or a list), `properties`,
//! `required`, `additionalProperties: false`, `items`, `enum`, `const`, `minimum` / `maximum`,
//! `minLength` / `maxLength`, `minItems` / `maxItems`. Keywords it does not know are ignored (a
//! schema that uses `oneOf` is only checked for the parts it understands), and nesting is
//! bounded by [`crate::tools::MAX_SCHEMA_DEPTH`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::tools::MAX_SCHEMA_DEPTH;

/// Why a tool call was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// `tool:undeclared`, `tool:not_allowed` or `tool:invalid_arguments`: stable, reported
    /// among the output rule ids.
    pub code: &'static str,
    /// For the log: names and schema paths, never argument values.
    pub detail: String,
}

/// The tools a request declared (`tools[].function`, legacy `functions[]`), and the tenant's
/// allowlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolCheck {
    declared: HashMap<String, Value>,
    allowed: Option<Vec<String>>,
}

impl ToolCheck {
    /// From a chat request body (already validated by [`crate::tools::ToolPolicy::check`]).
    pub fn new(body: &Map<String, Value>, allowed: Option<&[String]>) -> ToolCheck {
        let mut declared = HashMap::new();
        let tools = body
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("function"));
        let functions = body
            .get("functions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for f in tools.chain(functions) {
            if let Some(name) = f.get("name").and_then(Value::as_str) {
                let schema = f.get("parameters").cloned().unwrap_or(Value::Null);
                declared.insert(name.to_string(), schema);
            }
        }
        ToolCheck {
            declared,
            allowed: allowed.map(<[String]>::to_vec),
        }
    }

    /// Check one complete call.
    pub fn check(&self, name: &str, arguments: &str) -> Result<(), CallError> {
        let Some(schema) = self.declared.get(name) else {
            return Err(CallError {
                code: "tool:undeclared",
                detail: format!("the request declared no tool {:?}", bounded(name)),
            });
        };
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|a| a == name) {
                return Err(CallError {
                    code: "tool:not_allowed",
                    detail: format!("{:?} is not on the tenant's allowlist", bounded(name)),
                });
            }
        }
        let args: Value = if arguments.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(arguments).map_err(|_| CallError {
                code: "tool:invalid_arguments",
                detail: format!("arguments of {:?} are not JSON", bounded(name)),
            })?
        };
        if schema.is_null() {
            return Ok(());
        }
        validate(schema, &args, "arguments", 0).map_err(|path| CallError {
            code: "tool:invalid_arguments",
            detail: format!(
                "arguments of {:?} do not match its schema at {path}",
                bounded(name)
            ),
        })
    }
}

fn bounded(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// `Err(path)` of the first place `v` breaks `schema`.
pub fn validate(schema: &Value, v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(path.to_string());
    }
    let Some(s) = schema.as_object() else {
        return Ok(());
    };
    let fail = || Err(path.to_string());
    match s.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => return fail(),
        Some(Value::Array(ts))
            if !ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, v)) =>
        {
            return fail()
        }
        _ => {}
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            return fail();
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return fail();
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
            || s.get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
        {
            return fail();
        }
    }
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || s.get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return fail();
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || s.get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return fail();
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{path}.{r}"));
                }
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(ps, val, &format!("{path}.{k}"), depth + 1)?,
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}.{k}"));
                }
                None => {
                    if let Some(extra) = s.get("additionalProperties").filter(|x| x.is_object()) {
                        validate(extra, val, &format!("{path}.{k}"), depth + 1)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check() -> ToolCheck {
        let body = json!({"tools": [{"type": "function", "function": {
            "name": "search",
            "parameters": {"type": "object", "properties": {
                "q": {"type": "string", "maxLength": 100},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50},
            }, "required": ["q"], "additionalProperties": false},
        }}, {"type": "function", "function": {"name": "delete_all"}}]});
        ToolCheck::new(body.as_object().unwrap(), Some(&["search".to_string()]))
    }

    #[test]
    fn calls_are_checked_by_name_allowlist_and_schema() {
        let c = check();
        assert_eq!(c.check("search", r#"{"q": "rust", "limit": 5}"#), Ok(()));
        let code = |name, args| c.check(name, args).unwrap_err().code;
        assert_eq!(code("shell", "{}"), "tool:undeclared");
        assert_eq!(code("delete_all", "{}"), "tool:not_allowed");
        assert_eq!(code("search", "{\"q\": "), "tool:invalid_arguments");
        assert_eq!(code("search", r#"{"limit": 5}"#), "tool:invalid_arguments");
        assert_eq!(
            code("search", r#"{"q": "x", "limit": 500}"#),
            "tool:invalid_arguments"
        );
        assert_eq!(
            code("search", r#"{"q": "x", "cmd": "rm -rf /"}"#),
            "tool:invalid_arguments"
        );
        let e = c.check("search", r#"{"q": 7}"#).unwrap_err();
        assert!(e.detail.contains("arguments.q"), "{e:?}");
        assert!(
            !e.detail.contains('7'),
            "no argument value in the detail: {e:?}"
        );
    }
}
