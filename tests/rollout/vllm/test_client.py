"""VLLMBackend against stand-in servers (no vLLM needed): layout, errors, timeouts, versions."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rlhf_lightning.errors import ConfigError, RolloutError
from rlhf_lightning.rollout import SamplingConfig
from rlhf_lightning.rollout.vllm import VLLMBackend, VLLMRollout, row_seed
from rlhf_lightning.rollout.vllm.venv import require_venv

PAD, EOS = 0, 2


class FakeServer:
    """Speaks server_main.py's protocol with canned answers; records what it was sent."""

    def __init__(self, answer: dict | None = None, status: int = 200) -> None:
        self.answer, self.status, self.requests = answer or {}, status, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"status": "ok", "weights_version": 0})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body))
                if self.path == "/load_weights":
                    self._send(200, {"weights_version": body["version"], "seconds": 0.0})
                else:
                    self._send(fake.status, fake.answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(answer: dict | None = None, status: int = 200) -> FakeServer:
        servers.append(FakeServer(answer, status))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_batch_layout_cut_and_logprobs(fake, demo_tokenizer):
    # Row 0 stops at EOS and (a server without stop ids) goes on: the tail becomes pad.
    server = fake(
        {
            "token_ids": [[5, EOS, 7], [5, 6]],
            "logprobs": [[-0.5, -0.25, -3.0], [-1.0, -2.0]],
            "weights_version": 3,
            "adapter_version": None,
        }
    )
    backend = VLLMBackend(demo_tokenizer, url=server.url)
    batch = backend.generate(
        [[1, 9, 9], [1]], SamplingConfig(max_new_tokens=3), seed=7, pad_id=PAD, stop_ids=[EOS]
    )
    assert batch.query_ids.tolist() == [[1, 9, 9], [PAD, PAD, 1]]
    assert batch.query_mask.tolist() == [[True] * 3, [False, False, True]]
    assert batch.response_ids.tolist() == [[5, EOS, PAD], [5, 6, PAD]]
    assert batch.response_mask.tolist() == [[True, True, False], [True, True, False]]
    assert batch.contains_stop.tolist() == [True, False]
    assert batch.logprobs.tolist() == [[-0.5, -0.25, 0.0], [-1.0, -2.0, 0.0]]
    assert backend.rollout_versions == {"weights_version": 3, "adapter_version": None}
    route, sent = server.requests[-1]
    assert route == "/generate"
    assert sent["seeds"] == [row_seed(7, 0), row_seed(7, 1)]
    assert sent["stop_token_ids"] == [EOS] and sent["banned_token_ids"] == [PAD]
    assert sent["greedy"] is False and sent["max_tokens"] == 3


def test_row_seeds_follow_keys_and_pad_stop_is_not_banned(fake, demo_tokenizer):
    server = fake({"token_ids": [[EOS]], "logprobs": [[-0.1]]})
    backend = VLLMBackend(demo_tokenizer, url=server.url)
    config = SamplingConfig(max_new_tokens=2, do_sample=False)
    backend.generate([[1]], config, seed=3, pad_id=EOS, stop_ids=[EOS], row_keys=[41])
    sent = server.requests[-1][1]
    assert sent["seeds"] == [row_seed(3, 41)] and sent["banned_token_ids"] == []
    assert sent["greedy"] is True
    # Distinct (seed, key) pairs give distinct engine seeds.
    assert len({row_seed(s, k) for s in range(20) for k in range(50)}) == 1000


def test_sync_weights_from_directory_records_version(fake, demo_tokenizer, tmp_path):
    server = fake()
    backend = VLLMBackend(demo_tokenizer, url=server.url)
    assert backend.sync_weights(tmp_path, version=5) == 5
    assert backend.policy_version == 5
    assert server.requests[-1] == ("/load_weights", {"path": str(tmp_path), "version": 5})


def test_server_error_is_reported(fake, demo_tokenizer):
    server = fake({"error": "RuntimeError: engine exploded"}, status=500)
    backend = VLLMBackend(demo_tokenizer, url=server.url)
    with pytest.raises(RolloutError, match="500.*engine exploded.*server log"):
        backend.generate([[1]], SamplingConfig(), seed=0, pad_id=PAD, stop_ids=[EOS])


def test_dead_server_fails_fast(demo_tokenizer):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = VLLMBackend(demo_tokenizer, url=f"http://127.0.0.1:{port}", request_timeout=5)
    start = time.monotonic()
    with pytest.raises(RolloutError, match="cannot reach it for generate.*start the server"):
        backend.generate([[1]], SamplingConfig(), seed=0, pad_id=PAD, stop_ids=[EOS])
    assert time.monotonic() - start < 5


def test_hung_server_times_out(demo_tokenizer):
    # Accepts connections (the kernel's backlog) but never answers: a hung engine.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        backend = VLLMBackend(demo_tokenizer, url=url, request_timeout=1.0)
        start = time.monotonic()
        with pytest.raises(RolloutError, match=r"no answer to generate within 1 s \(hung"):
            backend.generate([[1]], SamplingConfig(), seed=0, pad_id=PAD, stop_ids=[EOS])
        assert time.monotonic() - start < 3


def test_bad_arguments(demo_tokenizer, fake):
    with pytest.raises(RolloutError, match="exactly one of model"):
        VLLMBackend(demo_tokenizer)
    backend = VLLMBackend(demo_tokenizer, url=fake().url)
    with pytest.raises(RolloutError, match="stop_ids is empty"):
        backend.generate([[1]], SamplingConfig(), seed=0, pad_id=PAD, stop_ids=[])
    with pytest.raises(RolloutError, match="sync_adapter needs a peft model"):
        backend.sync_adapter(torch.nn.Linear(2, 2), version=1)


def test_missing_venv_says_how_to_create_it(tmp_path):
    with pytest.raises(RolloutError, match="python -m rlhf_lightning.rollout.vllm.setup"):
        require_venv(tmp_path / "nowhere")


@pytest.mark.filterwarnings("ignore::rlhf_lightning.rollout.sampling.OffPolicySamplingWarning")
def test_engine_logprobs_are_reused_only_under_plain_sampling(fake, demo_tokenizer):
    """reuse_logprobs hands the engine's log-probs on as the policy's (no recomputing forward)
    only where they are softmax(logits / T)'s: top-k/top-p and a minimum length change them."""
    server = fake({"token_ids": [[5, EOS]], "logprobs": [[-0.5, -0.25]]})
    keys = torch.arange(1)

    def sample(config: SamplingConfig, reuse: bool = True):
        rollout = VLLMRollout(url=server.url, reuse_logprobs=reuse)
        rollout.backend = VLLMBackend(demo_tokenizer, url=server.url)
        return rollout.generate(None, demo_tokenizer, ["hi"], config, seed=0, row_keys=keys)

    batch = sample(SamplingConfig(max_new_tokens=2, temperature=0.7))
    assert batch.policy_logprobs.tolist() == [[-0.5, -0.25]]
    assert batch.logprobs.tolist() == [[-0.5, -0.25]]
    assert sample(SamplingConfig(max_new_tokens=2), reuse=False).policy_logprobs is None
    for changed in ({"top_k": 5}, {"top_p": 0.9}, {"min_new_tokens": 1}):
        assert sample(SamplingConfig(max_new_tokens=2, **changed)).policy_logprobs is None


def test_engine_threads_auto_follows_the_trainer_and_the_overlap():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        rollout = VLLMRollout(url="http://unused", options={"threads": "auto"})
        assert rollout.engine_threads() == 2  # the trainer waits: the engine takes its cores
        rollout.expect_overlap(True)
        assert rollout.engine_threads() == 1  # both run: one core each
        torch.set_num_threads(1)
        assert rollout.engine_threads() == 1  # never fewer than one
        assert VLLMRollout(url="http://unused", options={"threads": 3}).engine_threads() == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads"):
        VLLMRollout(url="http://unused", options={"threads": "many"})
