//! `warden ctl`: the on-call engineer's client for the admin API.
//!
//! `--admin URL` (default `http://127.0.0.1:9090`), the admin key from `--token-file` or
//! `WARDEN_ADMIN_TOKEN`. Human output by default, `--json` for scripts (the server's JSON as it
//! came); an error exits non-zero with the server's message. The admin listener is plain HTTP on
//! loopback (or a private network), so this is a small blocking HTTP/1.1 client, one request per
//! connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

/// What one `ctl` call prints and whether it worked.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

impl Outcome {
    fn fail(msg: impl Into<String>) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr: format!("warden ctl: {}\n", msg.into()),
            ok: false,
        }
    }
}

/// Where and as whom.
pub struct Target {
    pub admin: String,
    pub token: Option<String>,
    pub json: bool,
}

impl Target {
    /// The token from `--token-file`, else `WARDEN_ADMIN_TOKEN`.
    pub fn new(
        admin: String,
        token_file: Option<&std::path::Path>,
        json: bool,
    ) -> Result<Target, String> {
        let token = match token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("{}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("WARDEN_ADMIN_TOKEN").ok(),
        };
        Ok(Target { admin, token, json })
    }

    /// One request; `(status, body as JSON)`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let rest = self
            .admin
            .strip_prefix("http://")
            .ok_or_else(|| format!("{}: only http:// admin URLs", self.admin))?;
        let host = rest.trim_end_matches('/');
        let mut s = TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let payload = body.map(Value::to_string).unwrap_or_default();
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
            payload.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("the admin listener sent no complete response")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("the admin listener sent no status")?;
        let v = serde_json::from_str(body).unwrap_or_else(|_| json!({"raw": body}));
        Ok((status, v))
    }

    fn run(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        human: fn(&Value) -> String,
    ) -> Outcome {
        match self.call(method, path, body) {
            Err(e) => Outcome::fail(e),
            Ok((status, v)) if (200..300).contains(&status) => Outcome {
                stdout: if self.json {
                    format!("{v}\n")
                } else {
                    human(&v)
                },
                stderr: String::new(),
                ok: true,
            },
            Ok((status, v)) => {
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed");
                let code = v
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Outcome {
                    stdout: if self.json {
                        format!("{v}\n")
                    } else {
                        String::new()
                    },
                    stderr: format!("warden ctl: {status} {code}: {msg}\n"),
                    ok: false,
                }
            }
        }
    }

    pub fn switch_list(&self) -> Outcome {
        self.run("GET", "/admin/switches", None, human_switches)
    }

    pub fn status(&self) -> Outcome {
        self.run("GET", "/admin/status", None, |v| {
            format!(
                "ready: {}  draining: {}  pack: {}  state file: {}\n{}",
                v["ready"],
                v["draining"],
                v["pack_version"].as_str().unwrap_or("-"),
                v["state_file"].as_str().unwrap_or("(memory only)"),
                human_switches(v) + &human_throttles(v)
            )
        })
    }

    pub fn audit_tail(&self) -> Outcome {
        self.run("GET", "/admin/audit", None, |v| {
            let mut out = String::new();
            for a in v["actions"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}  {} ({})  {}  {}  {}\n",
                    a["at"],
                    a["actor"].as_str().unwrap_or("-"),
                    a["role"].as_str().unwrap_or("-"),
                    a["action"].as_str().unwrap_or("-"),
                    a["target"].as_str().unwrap_or("-"),
                    a["reason"].as_str().unwrap_or("")
                ));
            }
            if out.is_empty() {
                out.push_str("no admin actions since this process started\n");
            }
            out
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn switch_set(
        &self,
        scope: &str,
        state: &str,
        params: &[String],
        reason: &str,
        ttl: Option<&str>,
        cut_streams: bool,
    ) -> Outcome {
        let mut p = serde_json::Map::new();
        for kv in params {
            let Some((k, v)) = kv.split_once('=') else {
                return Outcome::fail(format!("--param {kv:?}: expected KEY=VALUE"));
            };
            p.insert(k.to_string(), Value::String(v.to_string()));
        }
        let body = json!({
            "scope": scope, "state": state, "reason": reason, "ttl": ttl,
            "cut_streams": cut_streams,
            "params": if p.is_empty() { Value::Null } else { Value::Object(p) },
        });
        self.run("POST", "/admin/switches", Some(&body), |v| {
            match v.get("switch").filter(|s| !s.is_null()) {
                Some(s) => format!("set {} (board version {})\n", line(s), v["version"]),
                None => format!("cleared (board version {})\n", v["version"]),
            }
        })
    }

    pub fn throttle_list(&self) -> Outcome {
        self.run("GET", "/admin/throttles", None, human_throttles)
    }

    pub fn throttle_set(
        &self,
        scope: &str,
        rpm: Option<u32>,
        tpm: Option<u64>,
        ttl: &str,
        reason: &str,
    ) -> Outcome {
        let body = json!({"scope": scope, "rpm": rpm, "tpm": tpm, "ttl": ttl, "reason": reason});
        self.run("POST", "/admin/throttles", Some(&body), |v| {
            format!(
                "set {} (board version {})\n",
                throttle_line(&v["throttle"]),
                v["version"]
            )
        })
    }

    pub fn throttle_clear(&self, scope: &str, reason: Option<&str>) -> Outcome {
        let body = json!({"scope": scope, "reason": reason});
        self.run("POST", "/admin/throttles/clear", Some(&body), |v| {
            match v.get("cleared").filter(|s| !s.is_null()) {
                Some(t) => format!(
                    "cleared {} (board version {})\n",
                    throttle_line(t),
                    v["version"]
                ),
                None => format!("no throttle there (board version {})\n", v["version"]),
            }
        })
    }

    /// `warden ctl alerts`: the runbooks' alerts, newest first.
    pub fn alerts(&self) -> Outcome {
        self.run("GET", "/admin/alerts", None, |v| {
            let mut out = String::new();
            for a in v["alerts"].as_array().into_iter().flatten() {
                out.push_str(&alert_line(a));
            }
            if out.is_empty() {
                out.push_str("no alerts since this process started\n");
            }
            out
        })
    }

    /// `warden ctl approve ID --reason "..."`.
    pub fn approve(&self, id: u64, reason: &str) -> Outcome {
        let body = json!({"id": id, "reason": reason});
        self.run("POST", "/admin/alerts/approve", Some(&body), |v| {
            format!("approved: {}", alert_line(&v["alert"]))
        })
    }

    pub fn switch_clear(&self, scope: &str, reason: &str) -> Outcome {
        let body = json!({"scope": scope, "reason": reason});
        self.run("POST", "/admin/switches/clear", Some(&body), |v| {
            match v.get("cleared").filter(|s| !s.is_null()) {
                Some(s) => format!("cleared {} (board version {})\n", line(s), v["version"]),
                None => format!("nothing was set there (board version {})\n", v["version"]),
            }
        })
    }
}

fn alert_line(a: &Value) -> String {
    let actions: Vec<&str> = a["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "#{}  {}  {}  {} on {}: {:.4} vs baseline {:.4} ({:.1}x)  actions: {}  page: {}\n",
        a["id"],
        a["status"].as_str().unwrap_or("-"),
        a["runbook"].as_str().unwrap_or("-"),
        a["detector"].as_str().unwrap_or("-"),
        a["scope"].as_str().unwrap_or("-"),
        a["observed"].as_f64().unwrap_or(0.0),
        a["baseline"].as_f64().unwrap_or(0.0),
        a["shift"].as_f64().unwrap_or(0.0),
        actions.join(", "),
        a["runbook_page"].as_str().unwrap_or("-"),
    )
}

fn line(s: &Value) -> String {
    let params = s
        .get("params")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!(" {k}={v}"))
                .collect::<String>()
        })
        .unwrap_or_default();
    let expires = s
        .get("expires_at")
        .and_then(Value::as_u64)
        .map(|e| format!(" until {e}"))
        .unwrap_or_default();
    format!(
        "{} {}{params}{expires} by {}: {}",
        s["scope"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?"),
        s["actor"].as_str().unwrap_or("?"),
        s["reason"].as_str().unwrap_or("")
    )
}

fn throttle_line(t: &Value) -> String {
    let limit = |k: &str, unit: &str| {
        t.get(k)
            .and_then(Value::as_u64)
            .map(|n| format!(" {n} {unit}/min"))
            .unwrap_or_default()
    };
    format!(
        "{}{}{} until {} by {}: {}",
        t["scope"].as_str().unwrap_or("?"),
        limit("rpm", "requests"),
        limit("tpm", "tokens"),
        t["expires_at"],
        t["actor"].as_str().unwrap_or("?"),
        t["reason"].as_str().unwrap_or("")
    )
}

fn human_throttles(v: &Value) -> String {
    let list = v["throttles"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no throttles in force\n".into();
    }
    list.iter()
        .map(|t| format!("{}\n", throttle_line(t)))
        .collect()
}

fn human_switches(v: &Value) -> String {
    let list = v["switches"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no switches in force: everything is on\n".into();
    }
    list.iter().map(|s| format!("{}\n", line(s))).collect()
}
