//! Tool policy: which tools a tenant's requests may declare, and whether the declarations are
//! well-formed.
//!
//! A request's `tools` (and the legacy `functions`) must follow the OpenAI shape, with a
//! `parameters` value that is a structurally valid JSON Schema (types, `properties`, `required`,
//! `items`, bounded nesting). With an allowlist, every declared name must be on it, and a tool whose
//! schema the tenant pinned must be declared with exactly that schema, so a client cannot widen
//! a tool's contract (say, add a free-form `command` argument to `search`).

use std::collections::HashMap;

use serde_json::Value;

/// Deepest schema nesting accepted.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Most tools one request may declare.
pub const MAX_TOOLS: usize = 128;

const JSON_TYPES: [&str; 7] = [
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// A tenant's tool settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolPolicy {
    /// `None`: any tool name; `Some`: only these.
    pub allowed: Option<Vec<String>>,
    /// Pinned `parameters` schema per tool name.
    pub pinned: HashMap<String, Value>,
}

/// Why a request's tools were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// `not_allowed` or `invalid`.
    pub kind: ToolErrorKind,
    /// JSON path of the offending field, e.g. `tools[1].function.parameters.properties.q.type`.
    pub param: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolErrorKind {
    NotAllowed,
    Invalid,
}

fn invalid(param: String, message: impl Into<String>) -> ToolError {
    ToolError {
        kind: ToolErrorKind::Invalid,
        param,
        message: message.into(),
    }
}

impl ToolPolicy {
    /// Check the `tools` and `functions` of a chat request body.
    pub fn check(&self, body: &serde_json::Map<String, Value>) -> Result<(), ToolError> {
        if let Some(tools) = body.get("tools") {
            let Some(list) = tools.as_array() else {
                return Err(invalid("tools".into(), "must be an array"));
            };
            if list.len() > MAX_TOOLS {
                return Err(invalid(
                    "tools".into(),
                    format!("at most {MAX_TOOLS} tools"),
                ));
            }
            for (i, tool) in list.iter().enumerate() {
                let base = format!("tools[{i}]");
                let Some(obj) = tool.as_object() else {
                    return Err(invalid(base, "must be an object"));
                };
                match obj.get("type").and_then(Value::as_str) {
                    Some("function") => {}
                    _ => return Err(invalid(format!("{base}.type"), "must be \"function\"")),
                }
                let Some(function) = obj.get("function") else {
                    return Err(invalid(format!("{base}.function"), "is required"));
                };
                self.check_function(function, &format!("{base}.function"))?;
            }
        }
        if let Some(functions) = body.get("functions") {
            let Some(list) = functions.as_array() else {
                return Err(invalid("functions".into(), "must be an array"));
            };
            if list.len() > MAX_TOOLS {
                return Err(invalid(
                    "functions".into(),
                    format!("at most {MAX_TOOLS} functions"),
                ));
            }
            for (i, f) in list.iter().enumerate() {
                self.check_function(f, &format!("functions[{i}]"))?;
            }
        }
        Ok(())
    }

    fn check_function(&self, function: &Value, base: &str) -> Result<(), ToolError> {
        let Some(obj) = function.as_object() else {
            return Err(invalid(base.to_string(), "must be an object"));
        };
        let name = match obj.get("name").and_then(Value::as_str) {
            Some(n) if valid_name(n) => n,
            _ => {
                return Err(invalid(
                    format!("{base}.name"),
                    "must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'",
                ))
            }
        };
        if let Some(d) = obj.get("description") {
            if !d.is_string() {
                return Err(invalid(format!("{base}.description"), "must be a string"));
            }
        }
        if let Some(s) = obj.get("strict") {
            if !s.is_boolean() {
                return Err(invalid(format!("{base}.strict"), "must be true or false"));
            }
        }
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|a| a == name) {
                return Err(ToolError {
                    kind: ToolErrorKind::NotAllowed,
                    param: format!("{base}.name"),
                    message: format!("tool {name:?} is not allowed for this API key"),
                });
            }
        }
        let params = obj.get("parameters");
        if let Some(p) = params {
            check_schema(p, &format!("{base}.parameters"), 0)?;
            if !p.is_object()
                || p.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t != "object")
            {
                return Err(invalid(
                    format!("{base}.parameters.type"),
                    "tool parameters must be an object schema",
                ));
            }
        }
        if let Some(pinned) = self.pinned.get(name) {
            if params != Some(pinned) {
                return Err(ToolError {
                    kind: ToolErrorKind::NotAllowed,
                    param: format!("{base}.parameters"),
                    message: format!(
                        "tool {name:?} must be declared with the schema configured for it"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Structural JSON-Schema check: the keywords tools use, with the types they must have.
pub fn check_schema(schema: &Value, path: &str, depth: usize) -> Result<(), ToolError> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(invalid(
            path.to_string(),
            format!("schema nested deeper than {MAX_SCHEMA_DEPTH}"),
        ));
    }
    if schema.is_boolean() {
        return Ok(());
    }
    let Some(obj) = schema.as_object() else {
        return Err(invalid(
            path.to_string(),
            "a schema must be an object or a boolean",
        ));
    };
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Value::String(s) => JSON_TYPES.contains(&s.as_str()),
            Value::Array(a) => {
                !a.is_empty()
                    && a.iter()
                        .all(|v| v.as_str().is_some_and(|s| JSON_TYPES.contains(&s)))
            }
            _ => false,
        };
        if !ok {
            return Err(invalid(
                format!("{path}.type"),
                "must be one of object, array, string, number, integer, boolean, null (or a list of them)",
            ));
        }
    }
    if let Some(props) = obj.get("properties") {
        let Some(props) = props.as_object() else {
            return Err(invalid(format!("{path}.properties"), "must be an object"));
        };
        for (k, v) in props {
            check_schema(v, &format!("{path}.properties.{k}"), depth + 1)?;
        }
    }
    if let Some(req) = obj.get("required") {
        let Some(list) = req.as_array() else {
            return Err(invalid(
                format!("{path}.required"),
                "must be an array of property names",
            ));
        };
        for (i, r) in list.iter().enumerate() {
            let Some(name) = r.as_str() else {
                return Err(invalid(format!("{path}.required[{i}]"), "must be a string"));
            };
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                if !props.contains_key(name) {
                    return Err(invalid(
                        format!("{path}.required[{i}]"),
                        format!("{name:?} is not in properties"),
                    ));
                }
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = obj.get(key) {
            check_schema(sub, &format!("{path}.{key}"), depth + 1)?;
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(list) = obj.get(key) {
            let Some(list) = list.as_array() else {
                return Err(invalid(
                    format!("{path}.{key}"),
                    "must be an array of schemas",
                ));
            };
            for (i, sub) in list.iter().enumerate() {
                check_schema(sub, &format!("{path}.{key}[{i}]"), depth + 1)?;
            }
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(defs) = obj.get(key) {
            let Some(defs) = defs.as_object() else {
                return Err(invalid(
                    format!("{path}.{key}"),
                    "must be an object of schemas",
                ));
            };
            for (k, sub) in defs {
                check_schema(sub, &format!("{path}.{key}.{k}"), depth + 1)?;
            }
        }
    }
    if let Some(e) = obj.get("enum") {
        if e.as_array().is_none_or(|a| a.is_empty()) {
            return Err(invalid(format!("{path}.enum"), "must be a non-empty array"));
        }
    }
    for key in [
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ] {
        if let Some(v) = obj.get(key) {
            if !v.is_number() {
                return Err(invalid(format!("{path}.{key}"), "must be a number"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(tools: Value) -> serde_json::Map<String, Value> {
        json!({ "tools": tools }).as_object().cloned().unwrap()
    }

    fn weather() -> Value {
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    }

    #[test]
    fn well_formed_tools_pass_without_an_allowlist() {
        let p = ToolPolicy::default();
        let b = body(
            json!([{"type": "function", "function": {"name": "get_weather", "parameters": weather()}}]),
        );
        assert_eq!(p.check(&b), Ok(()));
    }

    #[test]
    fn malformed_schemas_name_the_field() {
        let p = ToolPolicy::default();
        let cases = [
            (
                json!([{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {"city": {"type": "text"}}}}}]),
                "tools[0].function.parameters.properties.city.type",
            ),
            (
                json!([{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {}, "required": ["x"]}}}]),
                "tools[0].function.parameters.required[0]",
            ),
            (
                json!([{"type": "function", "function": {"name": "bad name!"}}]),
                "tools[0].function.name",
            ),
            (json!([{"type": "retrieval"}]), "tools[0].type"),
            (json!({"a": 1}), "tools"),
        ];
        for (tools, param) in cases {
            let err = p.check(&body(tools)).unwrap_err();
            assert_eq!(
                (err.kind, err.param.as_str()),
                (ToolErrorKind::Invalid, param)
            );
        }
    }

    #[test]
    fn allowlist_and_pinned_schemas() {
        let p = ToolPolicy {
            allowed: Some(vec!["get_weather".into()]),
            pinned: HashMap::from([("get_weather".to_string(), weather())]),
        };
        let ok = body(
            json!([{"type": "function", "function": {"name": "get_weather", "parameters": weather()}}]),
        );
        assert_eq!(p.check(&ok), Ok(()));
        let other = body(json!([{"type": "function", "function": {"name": "run_shell"}}]));
        let err = p.check(&other).unwrap_err();
        assert_eq!(
            (err.kind, err.param.as_str()),
            (ToolErrorKind::NotAllowed, "tools[0].function.name")
        );
        let mut widened = weather();
        widened["properties"]["command"] = json!({"type": "string"});
        let err = p
            .check(&body(json!([{"type": "function", "function": {"name": "get_weather", "parameters": widened}}])))
            .unwrap_err();
        assert_eq!(
            (err.kind, err.param.as_str()),
            (ToolErrorKind::NotAllowed, "tools[0].function.parameters")
        );
    }

    #[test]
    fn deep_schemas_are_refused_not_recursed_without_bound() {
        let mut s = json!({"type": "string"});
        for _ in 0..100 {
            s = json!({"type": "array", "items": s});
        }
        let err = check_schema(&s, "p", 0).unwrap_err();
        assert!(err.message.contains("deeper"));
    }
}
