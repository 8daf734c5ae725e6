"""The OpenAI Python SDK against `warden up`: the bundled worker with the proxy in front."""

import os
import re
import select
import signal
import subprocess
import urllib.request
import tempfile
import time
from pathlib import Path

import openai
import pytest

from conftest import _bin, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack():
    data = Path(tempfile.mkdtemp(prefix="warden-up-"))
    proxy, admin, worker = free_port(), free_port(), free_port()
    env = dict(os.environ, ORT_DYLIB_PATH=str(ROOT / "inference/.ort/libonnxruntime.so.1.31.1"))
    proc = subprocess.Popen(
        [_bin("WARDEN_BIN", "warden"), "up", "--listen", f"127.0.0.1:{proxy}", "--admin", f"127.0.0.1:{admin}",
         "--worker", f"127.0.0.1:{worker}", "--data-dir", str(data), "--model", str(ROOT / "inference/model")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    out, key, deadline = [], None, time.time() + 90
    while key is None:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("warden up exited:\n" + "".join(out))
        out.append(line)
        m = re.search(r"API key:\s+(sk-\S+)", line)
        if m:
            key = m.group(1)
        if time.time() > deadline:
            raise RuntimeError("warden up did not report ready:\n" + "".join(out))
    yield {"base_url": f"http://127.0.0.1:{proxy}/v1", "key": key, "data": data, "proc": proc, "worker": worker,
           "admin": admin}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert "stopped." in proc.stdout.read()


def test_chat_through_warden_up(stack):
    client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["key"], max_retries=0, timeout=60)
    r = client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "Tell me a story."}],
                                       max_tokens=24, temperature=0)
    assert r.choices[0].message.content
    assert 0 < r.usage.completion_tokens <= 24
    chunks = list(client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "Tell me a story."}],
                                                 max_tokens=24, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == r.choices[0].message.content
    assert [m.id for m in client.models.list()] == ["warden-tiny"]
    # No max_tokens: Warden sets the tenant cap, which must fit the model's context.
    r = client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "Hello"}], seed=1)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_kill_switches_with_warden_ctl(stack):
    """`warden up` writes an admin key and a state file: `warden ctl` flips a switch on the
    running stack, the SDK sees switched_off, the state file holds it, clearing it serves again."""
    ctl = [_bin("WARDEN_BIN", "warden"), "ctl", "--admin", f"http://127.0.0.1:{stack['admin']}",
           "--token-file", str(stack["data"] / "admin-key")]
    key_file = stack["data"] / "admin-key"
    assert key_file.stat().st_mode & 0o077 == 0
    out = subprocess.run(ctl + ["switch", "set", "model:warden-tiny", "off", "--reason", "test", "--ttl", "5m"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "model:warden-tiny" in (stack["data"] / "switches.json").read_text()
    client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["key"], max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert e.value.status_code == 503
    assert e.value.body["code"] == "switched_off"
    assert int(e.value.response.headers["retry-after"]) > 200
    out = subprocess.run(ctl + ["switch", "clear", "model:warden-tiny", "--reason", "done"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert r.choices


def test_the_demo_key_is_kept_private(stack):
    key_file = stack["data"] / "demo-api-key"
    assert key_file.read_text().strip() == stack["key"]
    assert key_file.stat().st_mode & 0o077 == 0
    assert stack["key"] not in (stack["data"] / "warden.toml").read_text()


def test_a_dead_worker_is_restarted_and_the_proxy_answers_503_meanwhile(stack):
    """Supervision (issue 16): kill -9 the worker; requests get 503 upstream_unavailable at once
    instead of hanging, `warden up` says it restarts the worker, and the stack serves again."""
    pids = subprocess.run(["pgrep", "-f", f"worker .*--listen 127.0.0.1:{stack['worker']}"],
                          capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, pids
    os.kill(int(pids[0]), signal.SIGKILL)
    client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["key"], max_retries=0, timeout=10)
    t = time.time()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert e.value.status_code == 503
    assert e.value.body["code"] == "upstream_unavailable"
    assert e.value.response.headers.get("retry-after")
    assert time.time() - t < 5

    proc, said, deadline = stack["proc"], "", time.time() + 30
    while "restarting" not in said and time.time() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            said += proc.stdout.readline()
    assert "restart 1" in said, said

    deadline = time.time() + 90
    while True:
        try:
            r = client.chat.completions.create(model="warden-tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            break
        except openai.APIStatusError as err:
            assert err.status_code == 503, err
            assert time.time() < deadline, "the restarted worker never served"
            time.sleep(0.5)
    assert r.choices[0].message.content is not None
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack['worker']}/metrics", timeout=5).read().decode()
    assert "warden_worker_restarts 1" in metrics
