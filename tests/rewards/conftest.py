"""Fixtures for the reward tests: a local JSON reward server and tiny reward models, all offline."""

from __future__ import annotations

import json
import string
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
)

# (status, body, seconds to wait before answering) for a request payload and its 1-based number.
Responder = Callable[[dict[str, Any], int], tuple[int, bytes, float]]


def char_lengths(payload: dict[str, Any], _: int) -> tuple[int, bytes, float]:
    """The default answer: {"rewards": [len(completion), ...]}."""
    rewards = [float(len(c)) for c in payload["completions"]]
    return 200, json.dumps({"rewards": rewards}).encode(), 0.0


@dataclass
class RewardServer:
    url: str
    respond: Responder = char_lengths
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Seconds between the bytes of the answer's body (0: all at once): a trickling server.
    trickle_s: float = 0.0


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping at teardown does not block it

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout tests) breaks the pipe; that is expected here."""


@pytest.fixture
def reward_server() -> Iterator[RewardServer]:
    """A JSON reward server on 127.0.0.1 (free port) in a daemon thread, shut down afterwards."""
    state = RewardServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"payload": payload, "headers": dict(self.headers)})
            status, body, delay = state.respond(payload, len(state.requests))
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not state.trickle_s:
                self.wfile.write(body)
            for byte in body if state.trickle_s else b"":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(state.trickle_s)

        def log_message(self, *args: Any) -> None:
            pass

    server = _QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/score"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def gpt2_reward_model(demo_tokenizer) -> Callable[..., GPT2ForSequenceClassification]:
    """Build a random 1-layer GPT-2 reward model (num_labels=1) sized to the demo tokenizer."""

    def build(seed: int = 0) -> GPT2ForSequenceClassification:
        config = GPT2Config(
            vocab_size=len(demo_tokenizer),
            n_layer=1,
            n_head=2,
            n_embd=32,
            n_positions=128,
            num_labels=1,
            bos_token_id=demo_tokenizer.bos_token_id,
            eos_token_id=demo_tokenizer.eos_token_id,
            pad_token_id=demo_tokenizer.pad_token_id,
            initializer_range=0.2,  # scores of order 1, so invariance checks are not trivial
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return GPT2ForSequenceClassification(config)

    return build


BERT_WORDS = "i you it this that movie film day love hate good bad great awful so very not the a"


@pytest.fixture
def bert_tokenizer() -> BertTokenizer:
    """A WordPiece tokenizer over a tiny vocabulary (letters, punctuation, a few words)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase)
    vocab = [
        *specials,
        *letters,
        *string.punctuation,
        *BERT_WORDS.split(),
        *("##" + c for c in letters),
    ]
    return BertTokenizer(vocab={token: i for i, token in enumerate(dict.fromkeys(vocab))})


@pytest.fixture
def bert_reward_model(bert_tokenizer) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=len(bert_tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
        pad_token_id=bert_tokenizer.pad_token_id,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return BertForSequenceClassification(config)
