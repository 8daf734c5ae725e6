//! The `warden` command line: offline config checking and key hashing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use warden_tests::harness::{key_hash, warden_bin};

fn check_config(text: &str) -> (i32, String, String) {
    let dir =
        std::env::temp_dir().join(format!("warden-cli-{}-{}", std::process::id(), text.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(warden_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_config_checks_ok() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy/warden.example.toml");
    let out = Command::new(warden_bin())
        .arg("check-config")
        .arg(example)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

/// `[guard] classifier = "on"` without a model is a config problem naming the key (on `auto`
/// the layer is off with a warning instead).
#[test]
fn a_classifier_that_must_run_but_is_missing_fails_the_check() {
    let (code, out, err) = check_config(&format!(
        "[guard]\nclassifier = \"on\"\nclassifier_dir = \"/nonexistent/classifier\"\n\n\
         [[upstreams]]\nname = \"w\"\naddress = \"127.0.0.1:8081\"\nmodels = [\"m\"]\n\n\
         [[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\n",
        key_hash("sk-test-classifier-0123456789")
    ));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("guard.classifier"), "{err}");
}

#[test]
fn bad_config_lists_every_problem_with_path_and_line_and_exits_1() {
    let (code, _, err) = check_config(
        r#"[server]
listen = "nowhere"
max_body_bytes = "big"

[admin]
listen = "127.0.0.1:9090"
token = "x"

[[upstreams]]
name = "w"
address = "127.0.0.1:8081"
models = []

[[tenants]]
name = "t"
api_keys = ["sk-raw-key"]
models = ["missing"]
"#,
    );
    assert_eq!(code, 1);
    for expected in [
        "line 2: server.listen",
        "line 3: server.max_body_bytes",
        "line 7: admin.token: unknown key",
        "upstreams[0].models",
        "line 16: tenants[0].api_keys[0]",
        "line 17: tenants[0].models[0]",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("6 problem(s)"), "{err}");
}

#[test]
fn unreadable_and_unparsable_configs_exit_1() {
    let out = Command::new(warden_bin())
        .args(["check-config", "/nonexistent/warden.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (code, _, err) = check_config("[server\n");
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn keys_hash_and_generate() {
    let h = key_hash("sk-abc");
    assert!(h.starts_with("blake3:") && h.len() == 7 + 64, "{h}");
    assert_eq!(
        h,
        key_hash("sk-abc\n"),
        "a trailing newline (echo without -n) is ignored"
    );
    assert_ne!(h, key_hash("sk-abd"));

    let out = Command::new(warden_bin())
        .args(["keys", "generate"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let (key, hash) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(key.starts_with("sk-warden-"));
    assert_eq!(key_hash(key), hash);

    let mut child = Command::new(warden_bin())
        .args(["keys", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "an empty key is refused");
}

/// `check-config` runs what `serve` checks before it starts, not only the TOML: a lake setting
/// the lake refuses (`retention_days = 0`), a key file that does not exist, and a switchboard
/// state file that does not parse are each named with their key, and the exit is 1.
#[test]
fn check_config_runs_the_checks_serve_runs() {
    let dir = std::env::temp_dir().join(format!("warden-cli-preflight-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("switches.json");
    std::fs::write(&state, "{not json").unwrap();
    let text = format!(
        r#"
[telemetry]
dir = {lake:?}
key_file = {key:?}
retention_days = 0

[switchboard]
state_file = {state:?}

[[upstreams]]
name = "w"
address = "127.0.0.1:8081"
models = ["m"]

[[tenants]]
name = "t"
api_keys = ["{hash}"]
"#,
        lake = dir.join("lake").display().to_string(),
        key = dir.join("no-such.key").display().to_string(),
        state = state.display().to_string(),
        hash = key_hash("sk-test-preflight-0123456789"),
    );
    let (code, stdout, stderr) = check_config(&text);
    assert_eq!(code, 1, "{stdout}{stderr}");
    for want in [
        "telemetry.retention_days",
        "telemetry.key_file",
        "switchboard.state_file",
    ] {
        assert!(stderr.contains(want), "missing {want}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
