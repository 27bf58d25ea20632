"""VLLMBackend against the real vLLM engine on CPU (fp32), SmolLM2-135M-Instruct as policy.

One engine for the module; the tests run in file order and the last one kills it. The oracle
everywhere is transformers on the same weights (``generate_rollout``, ``score_tokens``).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

import rlhf_lightning
from rlhf_lightning.errors import RolloutError
from rlhf_lightning.models.lora import LoraSpec, apply_lora
from rlhf_lightning.rollout import (
    SamplingConfig,
    encode_prompts,
    generate_rollout,
    score_tokens,
)
from rlhf_lightning.rollout.queries import pad_token_id
from rlhf_lightning.rollout.vllm import ServerOptions, VLLMBackend, VLLMServer

pytestmark = pytest.mark.vllm

NEW_TOKENS = 24
PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colours are",
    "def fibonacci(n):",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]
# fp32 engine vs fp32 transformers: different kernels (fused attention, matmul order), so
# log-probs agree to rounding, not bit for bit.
LOGPROB_ATOL = 2e-3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The transformers oracle on one thread: with two, OpenMP threads spin against the
    engine process (and anything else on a 2-core machine) and a forward pass gets ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return AutoTokenizer.from_pretrained(smollm2)


@pytest.fixture(scope="module")
def hf_model(smollm2):
    return AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def backend(smollm2, tokenizer, vllm_venv):
    options = ServerOptions(
        dtype="float32",
        enable_lora=True,
        max_lora_rank=8,
        threads=1,
        max_model_len=512,
        max_num_seqs=16,
        # torch.compile spends minutes on the first batch of each new shape (and again for
        # LoRA); eager decoding is slower but these batches are tiny.
        enforce_eager=True,
    )
    with VLLMBackend(
        tokenizer, smollm2, options=options, startup_timeout=900, venv=vllm_venv
    ) as backend:
        yield backend


@pytest.fixture(scope="module")
def rows(tokenizer):
    return encode_prompts(tokenizer, PROMPTS)


def _greedy(backend, tokenizer, rows, **kwargs):
    config = SamplingConfig(max_new_tokens=NEW_TOKENS, do_sample=False)
    stop = [tokenizer.eos_token_id]
    return backend.generate(rows, config, 0, pad_token_id(tokenizer), stop, **kwargs)


def _hf_greedy(model, tokenizer, rows):
    config = SamplingConfig(
        max_new_tokens=NEW_TOKENS, do_sample=False, stop_token_ids=[tokenizer.eos_token_id]
    )
    return generate_rollout(model, tokenizer, query_ids=rows, config=config)


def _responses(batch) -> list[list[int]]:
    return [
        row[mask].tolist()
        for row, mask in zip(batch.response_ids, batch.response_mask, strict=True)
    ]


def _first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def test_greedy_matches_transformers(backend, hf_model, tokenizer, rows):
    got = _greedy(backend, tokenizer, rows)
    want = _hf_greedy(hf_model, tokenizer, rows)
    divergences = {
        i: _first_divergence(a, b)
        for i, (a, b) in enumerate(zip(_responses(got), _responses(want), strict=True))
    }
    assert all(d is None for d in divergences.values()), f"first differing token: {divergences}"
    assert got.completions == want.completions
    assert got.query_ids.tolist() == want.query_ids.tolist()
    assert backend.rollout_versions == {"weights_version": 0, "adapter_version": None}


def test_sampling_logprobs_match_transformers(backend, hf_model, tokenizer, rows):
    config = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=0.8)
    batch = backend.generate(rows, config, 1, pad_token_id(tokenizer), [tokenizer.eos_token_id])
    with torch.no_grad():
        want = score_tokens(
            hf_model,
            batch.input_ids,
            batch.attention_mask,
            batch.context_length,
            temperature=0.8,
        ).logprobs
    mask = batch.response_mask
    gap = (batch.logprobs - want).abs()[mask]
    assert gap.max().item() < LOGPROB_ATOL, f"max |vLLM - transformers| = {gap.max():.2e}"
    assert (batch.logprobs[~mask] == 0).all()
    assert (batch.logprobs[mask] < 0).all()


def test_seeded_rows_do_not_depend_on_the_batch(backend, tokenizer, rows):
    config = SamplingConfig(max_new_tokens=12)
    stop, pad = [tokenizer.eos_token_id], pad_token_id(tokenizer)
    both = backend.generate(rows[:2], config, 5, pad, stop, row_keys=[10, 11])
    alone = backend.generate(rows[1:2], config, 5, pad, stop, row_keys=[11])
    again = backend.generate(rows[:2], config, 5, pad, stop, row_keys=[10, 11])
    other_seed = backend.generate(rows[:2], config, 6, pad, stop, row_keys=[10, 11])
    assert _responses(both)[1] == _responses(alone)[0]
    assert _responses(both) == _responses(again)
    assert _responses(both) != _responses(other_seed)


def test_weight_sync_changes_samples_and_syncing_back_restores(
    backend, hf_model, tokenizer, rows, smollm2
):
    before = _responses(_greedy(backend, tokenizer, rows))
    perturbed = copy.deepcopy(hf_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in perturbed.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    start = time.monotonic()
    assert backend.sync_weights(perturbed, version=1) == 1
    sync_s = time.monotonic() - start
    after = _greedy(backend, tokenizer, rows)
    assert _responses(after) != before
    assert backend.rollout_versions["weights_version"] == 1
    # The engine now serves exactly the perturbed weights.
    assert _responses(after) == _responses(_hf_greedy(perturbed, tokenizer, rows))
    backend.sync_weights(smollm2, version=2)  # a directory works too
    assert _responses(_greedy(backend, tokenizer, rows)) == before
    assert backend.policy_version == 2
    print(f"full weight sync (save + reload, 135M fp32): {sync_s:.2f} s")


def test_lora_sync_serves_the_adapter_on_the_base(backend, hf_model, tokenizer, rows):
    base = _responses(_greedy(backend, tokenizer, rows))
    spec = LoraSpec(enabled=True, r=8, alpha=16, target_modules=["q_proj", "v_proj"])
    peft_model = apply_lora(copy.deepcopy(hf_model), spec).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: the adapter would be a no-op
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    start = time.monotonic()
    assert backend.sync_adapter(peft_model, version=3) == 3
    sync_s = time.monotonic() - start
    adapted = _greedy(backend, tokenizer, rows)
    assert _responses(adapted) != base
    assert _responses(adapted) == _responses(_hf_greedy(peft_model, tokenizer, rows))
    assert backend.rollout_versions == {"weights_version": 2, "adapter_version": 3}
    # The base weights stayed: without the adapter the engine answers as before.
    assert _responses(_greedy(backend, tokenizer, rows, adapter=False)) == base
    # A second sync replaces the adapter in place.
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(-1.0)
    backend.sync_adapter(peft_model, version=4)
    flipped = _greedy(backend, tokenizer, rows)
    assert _responses(flipped) == _responses(_hf_greedy(peft_model, tokenizer, rows))
    print(f"LoRA sync (save + load in place, r=8 q/v): {sync_s:.2f} s")


def test_every_in_place_adapter_sync_serves_the_newest_adapter(backend, hf_model, tokenizer, rows):
    """The stage's adapter (every linear layer, so vLLM's packed qkv and gate_up projections
    too) synced after each of several updates: the engine samples the newest version, never the
    one before (a stale adapter would show as the previous version's log-probs)."""
    spec = LoraSpec(enabled=True, r=8, alpha=16, target_modules=None)  # all-linear
    peft_model = apply_lora(copy.deepcopy(hf_model), spec).eval()
    config = SamplingConfig(max_new_tokens=NEW_TOKENS)
    generator = torch.Generator().manual_seed(1)
    previous = None
    for version in (5, 6, 7):
        with torch.no_grad():  # an update of every adapter weight, B included
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.01)
        backend.sync_adapter(peft_model, version=version)
        batch = backend.generate(
            rows, config, version, pad_token_id(tokenizer), [tokenizer.eos_token_id]
        )
        assert backend.rollout_versions == {"weights_version": 2, "adapter_version": version}
        mask = batch.response_mask
        with torch.no_grad():
            now = score_tokens(
                peft_model, batch.input_ids, batch.attention_mask, batch.context_length
            ).logprobs
        gap = (batch.logprobs - now).abs()[mask]
        assert gap.max().item() < LOGPROB_ATOL, f"v{version}: max gap {gap.max():.2e}"
        if previous is not None:
            current = copy.deepcopy(peft_model.state_dict())
            peft_model.load_state_dict(previous)
            with torch.no_grad():
                before = score_tokens(
                    peft_model, batch.input_ids, batch.attention_mask, batch.context_length
                ).logprobs
            peft_model.load_state_dict(current)
            # One update moves the log-probs ~100x more than the kernels differ.
            assert (batch.logprobs - before).abs()[mask].mean().item() > 50 * gap.mean().item()
        previous = copy.deepcopy(peft_model.state_dict())


def test_hung_server_times_out_and_recovers(backend, tokenizer, rows):
    process = backend.server.process
    timeout, backend.request_timeout = backend.request_timeout, 3.0
    os.kill(process.pid, signal.SIGSTOP)  # the engine stops answering; the socket stays open
    try:
        start = time.monotonic()
        with pytest.raises(RolloutError, match=r"no answer to generate within 3 s \(hung"):
            _greedy(backend, tokenizer, rows)
        assert time.monotonic() - start < 6
    finally:
        os.kill(process.pid, signal.SIGCONT)
        backend.request_timeout = timeout
    assert backend.health()["status"] == "ok"


def test_dead_server_gives_a_clear_error_and_leaves_no_process(backend, tokenizer, rows):
    process = backend.server.process
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    start = time.monotonic()
    with pytest.raises(RolloutError, match=r"(?s)cannot reach it.*exited with code -9"):
        _greedy(backend, tokenizer, rows)
    assert time.monotonic() - start < 5
    backend.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


@pytest.fixture(scope="module")
def tiny_llama(tokenizer, tmp_path_factory):
    """A random 2-layer Llama, head size 32, on SmolLM2's tokenizer: the CPU backend's smallest
    head size, and an engine that starts in seconds."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    path = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model


TINY_OPTIONS = ServerOptions(threads=1, max_model_len=256, max_num_seqs=4, enforce_eager=True)


def test_tiny_random_llama_serves_and_stops_cleanly(tokenizer, tiny_llama, vllm_venv):
    """The tiny Llama matches transformers; close() ends the server (exit 0, no group left)."""
    path, model = tiny_llama
    backend = VLLMBackend(
        tokenizer, path, options=TINY_OPTIONS, startup_timeout=600, venv=vllm_venv
    )
    with backend:
        process = backend.server.process
        rows = [[tokenizer.bos_token_id, 42, 43], [tokenizer.bos_token_id]]
        got = _greedy(backend, tokenizer, rows)
        assert _responses(got) == _responses(_hf_greedy(model, tokenizer, rows))
        print(f"tiny Llama engine start: {backend.server.startup_seconds:.1f} s")
    assert process.returncode == 0  # SIGTERM: the server stopped its engine and exited
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def test_killed_trainer_leaves_no_server(tiny_llama, vllm_venv, tmp_path):
    """SIGKILL the process that started the server: the server sees its parent go and exits."""
    pid_file = tmp_path / "server.pid"
    script = tmp_path / "trainer.py"
    script.write_text(
        "import time\n"
        "from pathlib import Path\n"
        "from rlhf_lightning.rollout.vllm import ServerOptions, VLLMServer\n"
        f"options = ServerOptions(threads=1, max_model_len=256, max_num_seqs=4, enforce_eager=True)\n"
        f"server = VLLMServer({str(tiny_llama[0])!r}, options, venv=Path({str(vllm_venv)!r}))\n"
        "server.start()\n"
        f"Path({str(pid_file)!r}).write_text(str(server.process.pid))\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(rlhf_lightning.__file__).resolve().parents[1]))
    trainer = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.monotonic() + 300
        while not pid_file.is_file():
            assert trainer.poll() is None, "the trainer process died before the server started"
            assert time.monotonic() < deadline, "the server did not start in 300 s"
            time.sleep(0.5)
        server_pid = int(pid_file.read_text())
    finally:
        trainer.kill()
        trainer.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(server_pid):
        assert time.monotonic() < deadline, f"server {server_pid} outlived its parent by 30 s"
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    """Running, or stopped but not yet exited (a zombie waiting for its reaper has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_unloadable_model_fails_with_the_server_log(smollm2, tmp_path, vllm_venv):
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((smollm2 / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"architectures": ["NoSuchLM"]}))
    server = VLLMServer(broken, ServerOptions(threads=1), startup_timeout=300, venv=vllm_venv)
    with pytest.raises(RolloutError, match=r"(?s)exited \(code 1\).*NoSuchLM"):
        server.start()
    assert server.process is None
    server.close()
