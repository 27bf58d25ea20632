"""HTTPReward against a local ThreadingHTTPServer (see conftest.reward_server): no network."""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np
import pytest
import torch

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards import HTTPReward

SECRET = "Bearer s3cr3t-t0ken-value"
PROMPTS = ["p1", "p2", "p3"]
COMPLETIONS = ["a", "bb", "ccc"]


def answer(body, status=200, delay=0.0):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda payload, n: (status, raw, delay)


def client(url, **kwargs):
    kwargs = {"timeout": 0.5, "retries": 0, "backoff": 0.01, **kwargs}
    return HTTPReward(url, headers={"Authorization": SECRET}, **kwargs)


def test_rewards_object_and_the_request_it_answers(reward_server):
    scores = client(reward_server.url)(PROMPTS, COMPLETIONS, reference=["x", "y", "z"])
    assert scores.dtype == torch.float32
    assert scores.tolist() == [1.0, 2.0, 3.0]  # the server scores len(completion)
    (request,) = reward_server.requests
    assert request["payload"] == {
        "prompts": PROMPTS,
        "completions": COMPLETIONS,
        "reference": ["x", "y", "z"],
    }
    assert request["headers"]["Authorization"] == SECRET
    assert request["headers"]["Content-Type"] == "application/json"


def test_bare_list_answer(reward_server):
    reward_server.respond = answer([0.5, -1, 2])
    assert client(reward_server.url)(PROMPTS, COMPLETIONS).tolist() == [0.5, -1.0, 2.0]


def test_tensor_and_array_columns_travel_as_json(reward_server):
    client(reward_server.url)(PROMPTS, COMPLETIONS, ids=torch.tensor([1, 2, 3]), w=np.ones(3), k=7)
    payload = reward_server.requests[0]["payload"]
    assert payload["ids"] == [1, 2, 3] and payload["w"] == [1.0, 1.0, 1.0] and payload["k"] == 7


def test_client_side_batching_splits_requests_in_order(reward_server):
    scores = client(reward_server.url, batch_size=2)(PROMPTS, COMPLETIONS, ref=["x", "y", "z"])
    assert scores.tolist() == [1.0, 2.0, 3.0]
    sent = [r["payload"] for r in reward_server.requests]
    assert [p["completions"] for p in sent] == [["a", "bb"], ["ccc"]]
    assert [p["ref"] for p in sent] == [["x", "y"], ["z"]]


def test_a_500_is_retried_then_succeeds(reward_server, caplog):
    def flaky(payload, n):
        if n == 1:
            return 500, b"overloaded", 0.0
        return 200, json.dumps({"rewards": [1, 2, 3]}).encode(), 0.0

    reward_server.respond = flaky
    with caplog.at_level(logging.WARNING):
        scores = client(reward_server.url, retries=2)(PROMPTS, COMPLETIONS)
    assert scores.tolist() == [1.0, 2.0, 3.0]
    assert len(reward_server.requests) == 2
    assert "attempt 1/3 failed (HTTP 500" in caplog.text
    assert SECRET not in caplog.text


def test_a_500_every_time_gives_up_after_the_retries(reward_server):
    reward_server.respond = answer(b"down", status=503)
    with pytest.raises(RewardError, match=r"no answer after 3 attempt\(s\).*HTTP 503") as err:
        client(reward_server.url, retries=2)(PROMPTS, COMPLETIONS)
    assert len(reward_server.requests) == 3
    assert SECRET not in str(err.value)


def test_a_4xx_is_not_retried_and_secrets_in_the_body_are_masked(reward_server):
    reward_server.respond = answer(f"bad token {SECRET}".encode(), status=401)
    with pytest.raises(RewardError, match=r"answered 401 Unauthorized \(bad token \*\*\*\)") as err:
        client(reward_server.url, retries=2)(PROMPTS, COMPLETIONS)
    assert len(reward_server.requests) == 1
    assert SECRET not in str(err.value)


def test_a_401_echoing_the_bare_token_is_masked(reward_server, caplog):
    bare = SECRET.split()[-1]  # the token without its "Bearer " scheme
    reward_server.respond = answer(f"unknown token {bare}".encode(), status=401)
    with pytest.raises(RewardError, match=r"\(unknown token \*\*\*\)") as err:
        client(reward_server.url)(PROMPTS, COMPLETIONS)
    assert bare not in str(err.value) and bare not in caplog.text


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>Internal page</html>", r"the answer is not JSON: '<html>Internal page</html>'"),
        ({"scores": [1, 2, 3]}, r"JSON answer has no 'rewards' \(got \['scores'\]\)"),
        ("just a string", r"JSON answer has no 'rewards' \(got str\)"),
        ({"rewards": [1, 2]}, r"returned rewards of shape \(2,\) for 3 completions"),
        ({"rewards": [1, None, 3]}, r"reward at index 1 \(prompt 'p2'\) is None"),
        ([1, "NaN", 3], r"index 1 .* is 'NaN' \(str\), not a number"),
    ],
    ids=["garbage", "no rewards key", "json string", "wrong length", "null", "string nan"],
)
def test_bad_answers_name_the_url_and_the_fix(reward_server, body, match):
    reward_server.respond = answer(body)
    with pytest.raises(RewardError, match=match) as err:
        client(reward_server.url)(PROMPTS, COMPLETIONS)
    message = str(err.value)
    assert message.startswith(f"HTTP reward {reward_server.url}")
    assert "Fix:" in message and SECRET not in message


def test_a_nan_reward_from_the_server_is_refused(reward_server):
    reward_server.respond = answer(b'{"rewards": [1.0, NaN, 2.0]}')  # Python's json accepts NaN
    with pytest.raises(RewardError, match=r"at index 1 \(prompt 'p2'\) is not finite"):
        client(reward_server.url)(PROMPTS, COMPLETIONS)


def test_index_in_a_later_client_batch_is_global(reward_server):
    reward_server.respond = lambda payload, n: (200, b"[1.0, NaN]" if n == 2 else b"[1.0, 2.0]", 0)
    with pytest.raises(RewardError, match=r"at index 3 \(prompt 'p4'\)"):
        client(reward_server.url, batch_size=2)(["p1", "p2", "p3", "p4"], ["a", "b", "c", "d"])


def test_a_slow_server_times_out(reward_server):
    reward_server.respond = answer({"rewards": [1, 2, 3]}, delay=1.0)
    reward = client(reward_server.url, timeout=0.2, retries=1)
    with pytest.raises(RewardError, match=r"no answer after 2 attempt\(s\).*timed out") as err:
        reward(PROMPTS, COMPLETIONS)
    assert "Fix:" in str(err.value) and SECRET not in str(err.value)


def test_a_trickling_server_is_cut_off_at_the_timeout(reward_server):
    reward_server.trickle_s = 0.2  # a byte every 0.2 s: 30 bytes take 6 s
    reward = client(reward_server.url, timeout=1.0)
    start = time.monotonic()
    with pytest.raises(RewardError, match=r"no answer after 1 attempt\(s\).*within 1 s") as err:
        reward(PROMPTS, COMPLETIONS)
    assert time.monotonic() - start < 3
    assert SECRET not in str(err.value)


def test_an_answer_over_the_size_cap_is_refused(reward_server):
    reward_server.respond = answer({"rewards": [1, 2, 3], "junk": "x" * 200_000})
    reward = client(reward_server.url, max_response_bytes=100_000, retries=2)
    with pytest.raises(RewardError, match=r"larger than reward.max_response_bytes=100000"):
        reward(PROMPTS, COMPLETIONS)
    assert len(reward_server.requests) == 1  # not retried: the same question gets the same answer


def test_a_closed_port_is_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reward = client(f"http://127.0.0.1:{port}/score", retries=2)
    with pytest.raises(RewardError, match=r"no answer after 3 attempt\(s\).*refused") as err:
        reward(PROMPTS, COMPLETIONS)
    assert "Fix: check that the reward server is running" in str(err.value)
    assert SECRET not in str(err.value)


def test_repr_masks_headers_and_url_secrets():
    reward = HTTPReward("http://example.invalid:8080/score?api_key=k3y", headers={"X-Key": SECRET})
    text = repr(reward) + str(reward)
    assert SECRET not in text and "k3y" not in text
    assert "'X-Key': '***'" in text and "http://example.invalid:8080/score?***" in text


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("ftp://host/x", {}, "is not an http\\(s\\) URL"),
        ("localhost:8000", {}, "is not an http\\(s\\) URL"),
        ("http://user:pw@host/x", {}, "credentials in the URL are not sent"),
        ("http://host/x", {"timeout": 0}, "timeout=0"),
        ("http://host/x", {"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_settings_are_refused(url, kwargs, match):
    with pytest.raises(RewardError, match=match) as err:
        HTTPReward(url, **kwargs)
    assert "pw" not in str(err.value)


def test_empty_batch_sends_nothing(reward_server):
    assert client(reward_server.url)([], []).shape == (0,)
    assert reward_server.requests == []
