"""HTTPEnv against a local guess-the-number server (no network): episodes played through the
rollout loop, and the HTTP reward's timeouts and clear errors."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch

from rlhf_lightning.envs import GuessNumber, HTTPEnv, TurnLimits, play_episodes
from rlhf_lightning.envs.chat import turn_end_ids
from rlhf_lightning.errors import EnvError
from rlhf_lightning.rollout import SamplingConfig

SECRET = "Bearer s3cr3t-t0ken-value"


class GameServer:
    """Plays GuessNumber games by episode id; ``answer`` overrides what it sends back."""

    def __init__(self) -> None:
        self.games: dict[str, GuessNumber] = {}
        self.answer: Any = None
        self.delay = 0.0
        self.url = ""

    def handle(self, payload: dict[str, Any]) -> Any:
        if self.answer is not None:
            return self.answer
        if payload["action"] == "reset":
            episode = str(len(self.games))
            self.games[episode] = GuessNumber()
            return {"episode": episode, "messages": self.games[episode].reset(payload["row"])}
        messages, reward, done, info = self.games[payload["episode"]].step(
            payload["assistant_text"]
        )
        return {"messages": messages, "reward": reward, "done": done, "info": info}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left: the broken pipe is expected


@pytest.fixture
def game_server() -> Iterator[GameServer]:
    state = GameServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(state.delay)
            body = json.dumps(state.handle(payload)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = _QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/env"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _env(url: str, **kwargs: Any) -> HTTPEnv:
    kwargs = {"timeout": 0.5, "retries": 0, "backoff": 0.01, **kwargs}
    return HTTPEnv(url, headers={"Authorization": SECRET}, **kwargs)


ROWS = [{"prompt": "Guess 1 to 8.", "secret": s, "high": 8, "max_guesses": 4} for s in (2, 7)]


def test_episodes_are_played_on_the_server(game_server, templated, scripted):
    tokenizer = templated["chatml"]
    sampler = scripted(tokenizer, turn_end_ids(tokenizer)[0])
    out = play_episodes(
        sampler, None, tokenizer, _env(game_server.url), ROWS, SamplingConfig(max_new_tokens=8),
        TurnLimits(max_turns=4, max_total_tokens=300), seed=0, row_keys=torch.arange(2),
    )  # fmt: skip
    assert len(game_server.games) == 2  # one server-side episode per trajectory
    assert (out.turns > 1).any()
    for conversation in out.conversations:
        replies = [m["content"] for m in conversation[2::2]]
        assert all(r in ("Higher.", "Lower.") or r.startswith("No.") for r in replies)


def test_each_trajectory_copy_keeps_its_own_episode(game_server):
    prototype = _env(game_server.url)
    a, b = copy.deepcopy(prototype), copy.deepcopy(prototype)
    a.reset(ROWS[0])
    b.reset(ROWS[1])
    assert a.step("7").messages[0]["content"] == "Lower."  # secret 2
    assert b.step("7").info["success"]  # secret 7


def test_a_slow_server_times_out_with_the_fix(game_server):
    game_server.delay = 1.0
    with pytest.raises(EnvError, match=r"HTTP environment .*no answer after 2 attempt") as err:
        _env(game_server.url, timeout=0.2, retries=1).reset(ROWS[0])
    assert "stage.env.timeout" in str(err.value) and SECRET not in str(err.value)


def test_a_closed_port_is_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EnvError, match=r"refused") as err:
        _env(f"http://127.0.0.1:{port}/env").reset(ROWS[0])
    assert "environment server is running" in str(err.value)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ([1, 2], "not a JSON object"),
        ({"messages": "Higher."}, "not a list of"),
        ({"messages": None, "reward": "high", "done": True}, "reward as a finite number"),
    ],
)
def test_bad_answers_are_one_clear_error(game_server, answer, match):
    env = _env(game_server.url)
    game_server.answer = answer
    with pytest.raises(EnvError, match=match):
        env.reset(ROWS[0]) if "reward" not in answer else env.step("3")


def test_bad_settings_are_refused():
    with pytest.raises(EnvError, match="not an http"):
        HTTPEnv("ftp://host/env")
