"""The official OpenAI Python SDK against Warden in front of the fake upstream."""

import openai
import pytest

from conftest import KEY, LIMITED_KEY


@pytest.fixture
def client(warden):
    return openai.OpenAI(base_url=warden["base_url"], api_key=KEY, max_retries=0, timeout=20)


def expected_text(n):
    return "".join(f"tok{i} " for i in range(n))


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hello there"}],
                                       max_tokens=5)
    assert r.choices[0].message.content == expected_text(5)
    assert r.usage.completion_tokens == 5
    assert r.model == "test-model"


def test_max_tokens_is_clamped_to_the_tenant_cap(client):
    r = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=10_000)
    assert r.usage.completion_tokens == 32


def test_chat_streaming_matches_non_streaming(client):
    stream = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=7, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(7)
    # Warden asks the upstream for usage for its own accounting; the client did not, so it must
    # not see the extra usage-only chunk.
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streaming_usage_when_the_client_asks(client):
    chunks = list(client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hello"}], max_tokens=3, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_completions_and_embeddings_and_models(client):
    r = client.completions.create(model="test-model", prompt="once upon a time", max_tokens=4)
    assert r.choices[0].text == expected_text(4)
    e = client.embeddings.create(model="test-model", input=["a", "b"])
    assert len(e.data) == 2
    assert [m.id for m in client.models.list()] == ["test-model"]


def test_bad_key_is_an_authentication_error(warden):
    bad = openai.OpenAI(base_url=warden["base_url"], api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_rate_limit_is_a_rate_limit_error(warden):
    limited = openai.OpenAI(base_url=warden["base_url"], api_key=LIMITED_KEY, max_retries=0)
    limited.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}], max_tokens=1)
    with pytest.raises(openai.RateLimitError) as e:
        limited.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}], max_tokens=1)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_upstream_dying_mid_stream_raises_in_the_sdk(client):
    stream = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}],
                                            max_tokens=10, stream=True, extra_headers={"x-fault": "drop-mid-stream"})
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            received.append(chunk)
    assert received, "the events sent before the failure must arrive"
    assert "model server" in str(e.value.message)


def test_upstream_500_surfaces_as_server_error(client):
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-fault": "status=500"})


def test_logs_hold_no_key_and_no_prompt(client, warden):
    secret = "PROMPT-SECRET-7f3a9c"
    client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": secret}], max_tokens=1)
    log = warden["log"].read_text()
    assert "request" in log
    assert secret not in log
    assert KEY not in log


# --- The output guard, as SDK users see it ------------------------------------------------------

TOKEN = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
PINNED_KEY = "sk-test-pinned-0123456789"

BLOCK_PACK = '''
[pack]
name = "test-output"
title = "Test output rules"
description = "A protected code name the model must never say."

[[rule]]
id = "TST-9001"
title = "Protected code name"
description = "The code name of a project."
severity = "critical"
paranoia = 1
targets = ["output"]
action = "block"
views = ["folded"]
literals = ["operation nightjar"]
must_match = ["the plan is Operation Nightjar"]
must_not_match = ["a nightjar is a bird"]
'''


@pytest.fixture(scope="module")
def guarded(upstream):
    """A Warden whose packs are the shipped ones plus an output rule that blocks."""
    import shutil
    import tempfile
    from pathlib import Path

    from conftest import free_port, key_hash, start_warden

    tmp = Path(tempfile.mkdtemp(prefix="warden-sdk-output-"))
    rules = tmp / "rules"
    rules.mkdir()
    for pack in (Path(__file__).resolve().parents[2] / "rules").glob("*.toml"):
        shutil.copy(pack, rules / pack.name)
    (rules / "zz-test-output.toml").write_text(BLOCK_PACK)
    proxy, admin = free_port(), free_port()
    config = f"""
[server]
listen = "127.0.0.1:{proxy}"

[admin]
listen = "127.0.0.1:{admin}"

[guard]
rules_dir = "{rules}"

[[upstreams]]
name = "fake"
address = "{upstream}"
models = ["test-model"]

[[tenants]]
name = "sdk"
api_keys = ["{key_hash(KEY)}"]

[[tenants]]
name = "pinned"
api_keys = ["{key_hash(PINNED_KEY)}"]
[tenants.guard]
system_prompt = "You are Aria, the assistant of Northwind Bank. Never discuss rates before the customer is verified."
"""
    proc, log = start_warden(tmp, config, admin)
    yield {"client": openai.OpenAI(base_url=f"http://127.0.0.1:{proxy}/v1", api_key=KEY, max_retries=0, timeout=20),
           "pinned": openai.OpenAI(base_url=f"http://127.0.0.1:{proxy}/v1", api_key=PINNED_KEY, max_retries=0,
                                   timeout=20)}
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    log.close()


def reply(*pieces):
    import json
    return {"x-fake-reply": json.dumps(list(pieces))}


def test_a_streamed_key_arrives_masked(guarded):
    stream = guarded["client"].chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "token?"}], stream=True,
        extra_headers=reply("Your token is ", TOKEN[:10], TOKEN[10:27], TOKEN[27:], "."))
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Your token is [REDACTED:SEC-5003]."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_non_streamed_key_arrives_masked(guarded):
    r = guarded["client"].chat.completions.create(model="test-model", messages=[{"role": "user", "content": "token?"}],
                                        extra_headers=reply("Your token is ", TOKEN, "."))
    assert r.choices[0].message.content == "Your token is [REDACTED:SEC-5003]."


def test_a_blocked_stream_ends_with_content_filter_then_an_error(guarded):
    stream = guarded["client"].chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "plan?"}], stream=True,
        extra_headers=reply("The plan is Operation ", "Night", "jar, starting Monday."))
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            received.append(chunk)
    assert received[-1].choices[0].finish_reason == "content_filter"
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert "nightjar" not in text.lower()
    assert "output guard" in str(e.value.message)
    assert "TST-9001" in str(e.value.message)


def test_a_blocked_reply_is_content_filter(guarded):
    r = guarded["client"].chat.completions.create(model="test-model", messages=[{"role": "user", "content": "plan?"}],
                                        extra_headers=reply("It is Operation Nightjar."))
    assert r.choices[0].finish_reason == "content_filter"
    assert r.choices[0].message.content is None


def test_a_model_repeating_its_system_prompt_ends_with_content_filter(guarded):
    """The fake upstream repeats the system prompt it received (pinned by Warden, with its
    canary): the SDK gets content_filter, then an APIError naming the leak."""
    stream = guarded["pinned"].chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hello"}], stream=True,
        extra_headers={"x-fake-echo-system": "1"})
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            received.append(chunk)
    assert received[-1].choices[0].finish_reason == "content_filter"
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert "wdn-" not in text  # the canary never; the first words of the prompt may have gone out
    assert "leak:" in str(e.value.message)
