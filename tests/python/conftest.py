"""Fixtures that boot the real binaries: the fake upstream and `warden serve`, on loopback."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

KEY = "sk-test-0123456789abcdef"
LIMITED_KEY = "sk-test-limited-0123456789"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path(__file__).resolve().parents[2] / "target")) / "debug"


def _bin(env_name, name):
    path = Path(os.environ.get(env_name, TARGET / name))
    if not path.exists():
        raise RuntimeError(f"{path} not found: build with `cargo build --workspace --bins` first")
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_hash(key):
    out = subprocess.run([_bin("WARDEN_BIN", "warden"), "keys", "hash"], input=key.encode(),
                         capture_output=True, check=True)
    return out.stdout.decode().strip()


def start_warden(tmp, config, admin):
    """Write `config` to tmp/warden.toml, start `warden serve` (log in tmp/warden.log) and wait
    until the admin listener on port `admin` says ready. Returns the process and the open log."""
    (tmp / "warden.toml").write_text(config)
    log = open(tmp / "warden.log", "wb")
    env = dict(os.environ, HOME=str(tmp))
    proc = subprocess.Popen([_bin("WARDEN_BIN", "warden"), "serve", "--config", str(tmp / "warden.toml")],
                            stderr=log, stdout=subprocess.DEVNULL, env=env)
    deadline = time.time() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, log
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("warden did not become ready:\n" + (tmp / "warden.log").read_text())
        time.sleep(0.05)


@pytest.fixture(scope="session")
def upstream():
    proc = subprocess.Popen([_bin("FAKE_UPSTREAM_BIN", "fake-upstream"), "--listen", "127.0.0.1:0",
                             "--model", "test-model"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    yield line.removeprefix("listening on ")
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def warden(upstream):
    tmp = Path(tempfile.mkdtemp(prefix="warden-sdk-"))
    proxy, admin = free_port(), free_port()
    config = f"""
[server]
listen = "127.0.0.1:{proxy}"
grace_period_s = 5

[admin]
listen = "127.0.0.1:{admin}"

[[upstreams]]
name = "fake"
address = "{upstream}"
models = ["test-model"]
health_interval_ms = 200

[[tenants]]
name = "sdk"
api_keys = ["{key_hash(KEY)}"]
max_tokens = 32

[[tenants]]
name = "limited"
api_keys = ["{key_hash(LIMITED_KEY)}"]
requests_per_minute = 1
"""
    proc, log = start_warden(tmp, config, admin)
    yield {"base_url": f"http://127.0.0.1:{proxy}/v1", "admin": f"http://127.0.0.1:{admin}", "log": tmp / "warden.log"}
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    log.close()
