"""A working directory with a tiny local model and small data files, and a fake Hub endpoint."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@pytest.fixture
def trl_workdir(tmp_path, monkeypatch, demo_tokenizer) -> Path:
    """`tiny-gpt2` (a 2-layer GPT-2 with the demo tokenizer) and the data files the migration
    page names, in a fresh current directory."""
    from rlhf_lightning.models import ModelSpec, load_model_and_tokenizer

    arch = {"type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128}
    model, tokenizer = load_model_and_tokenizer(
        ModelSpec(tokenizer=demo_tokenizer.name_or_path, arch=arch)
    )
    model.save_pretrained(tmp_path / "tiny-gpt2")
    tokenizer.save_pretrained(tmp_path / "tiny-gpt2")
    rows = {
        "imdb_sample.jsonl": [{"text": f"This movie was {w} and I {v} it."} for w, v in _pairs(40)],
        "prefs.jsonl": [
            {"prompt": f"Review {i}:", "chosen": " great fun", "rejected": " dull"}
            for i in range(32)
        ],
        "deepmath_sample.jsonl": [
            {"prompt": f"What is {i} + {i}? Put the answer in \\boxed{{}}.", "solution": str(2 * i)}
            for i in range(16)
        ],
        "prompts.jsonl": [{"prompt": p} for p in ["Hello", "The sky", "A cat", "Why"] * 4],
    }
    for name, items in rows.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pairs(n: int) -> list[tuple[str, str]]:
    words = ["great", "boring", "long", "fun"]
    verbs = ["loved", "hated", "liked"]
    return [(words[i % 4], verbs[i % 3]) for i in range(n)]


class FakeHub:
    """Records what huggingface_hub uploads: repositories created, files committed."""

    def __init__(self) -> None:
        self.repos: list[str] = []
        self.files: dict[str, dict[str, bytes]] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                base = f"http://{self.headers['Host']}"
                if self.path == "/api/repos/create":
                    repo = json.loads(body)
                    repo_id = f"{repo['organization']}/{repo['name']}"
                    hub.repos.append(repo_id)
                    return self._json({"url": f"{base}/{repo_id}"})
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    # "regular": the file's bytes travel inside the commit itself (no LFS)
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                    return self._json({"files": modes})
                if "/commit/" in self.path:
                    repo_id = self.path.split("/api/models/")[1].split("/commit/")[0]
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            content = base64.b64decode(item["value"]["content"])
                            hub.files.setdefault(repo_id, {})[item["value"]["path"]] = content
                    return self._json(
                        {"commitUrl": f"{base}/{repo_id}/commit/{'0' * 40}", "commitOid": "0" * 40}
                    )
                return self._json({})  # e.g. the model card's YAML check

            def _json(self, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_hub(monkeypatch):
    """A local Hub endpoint; huggingface_hub's default endpoint and token point at it."""
    import huggingface_hub.constants

    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    yield hub
    hub.server.shutdown()
