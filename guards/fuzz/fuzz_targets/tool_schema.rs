//! `tool_schema`: arbitrary bytes that are JSON, as a tool parameter schema and as a request's
//! `tools` / `functions`.
//!
//! `check_schema` and `ToolPolicy::check` (no allowlist; and an allowlist with a pinned schema)
//! must return `Ok` or an error, never panic or overflow the stack; an error's `param` always starts
//! with the path the check was given (`p`, `tools`, `functions`).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use warden_guards::tools::{check_schema, ToolPolicy};

fn body(key: &str, v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.to_string(), v.clone());
    m
}

fn check_param(r: Result<(), warden_guards::tools::ToolError>, prefixes: &[&str]) {
    if let Err(e) = r {
        assert!(
            prefixes.iter().any(|p| e.param.starts_with(p)),
            "error param {:?} does not start with {prefixes:?}",
            e.param
        );
        assert!(!e.message.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_param(check_schema(&v, "p", 0), &["p"]);

    let open = ToolPolicy::default();
    let pinned = ToolPolicy {
        allowed: Some(vec!["get_weather".into(), "search".into()]),
        pinned: HashMap::from([(
            "get_weather".to_string(),
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )]),
    };
    for policy in [&open, &pinned] {
        check_param(policy.check(&body("tools", &v)), &["tools"]);
        check_param(policy.check(&body("functions", &v)), &["functions"]);
        if let Some(obj) = v.as_object() {
            check_param(policy.check(obj), &["tools", "functions"]);
        }
        // The input as one tool's parameters and as one tool.
        let tool =
            json!([{"type": "function", "function": {"name": "get_weather", "parameters": v}}]);
        check_param(policy.check(&body("tools", &tool)), &["tools"]);
        check_param(policy.check(&body("tools", &json!([v]))), &["tools"]);
    }
});
