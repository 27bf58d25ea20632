"""Trainer presets and `build_strategy`: every preset composes, each strategy mapping becomes the
Lightning strategy object with the right wrap policy, and each mistake gives its message.

All of this runs on CPU. FSDP and DeepSpeed cannot run on CPU (Lightning refuses them; the test
at the end pins what Lightning says, docs/scaling.md quotes it), so their GPU runs are not here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from torch import nn
from torch.distributed.fsdp import ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from rlhf_lightning import strategies
from rlhf_lightning.config import compose_stage as compose_config  # built-in names unresolved
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import CausalLMWithValueHead, LoraSpec, apply_lora
from rlhf_lightning.paths import config_dir
from rlhf_lightning.strategies import build_strategy, strategy_name
from rlhf_lightning.strategy_layers import decoder_layer_classes

PRESETS = sorted(p.stem for p in (config_dir() / "trainer").glob("*.yaml"))
STAGES = sorted(p.stem for p in (config_dir() / "stage").glob("*.yaml"))

# preset -> (strategy it builds: a name passed through, or the Lightning class; num_nodes)
EXPECTED: dict[str, tuple[str | type, int]] = {
    "default": ("auto", 1),
    "cpu": ("auto", 1),
    "gpu": ("auto", 1),
    "ddp_cpu": ("ddp", 1),
    "ddp_gpu": ("ddp", 1),
    "fsdp": (FSDPStrategy, 1),
    "deepspeed_zero2": (DeepSpeedStrategy, 1),
    "deepspeed_zero3": (DeepSpeedStrategy, 1),
    "multinode": ("ddp", 2),
}


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0)
    )


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=64,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def wrapped_classes(strategy: FSDPStrategy) -> set[type]:
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy)
    return set(policy._module_classes)


FSDP = {"name": "fsdp", "wrap": "decoder_layers"}


# ---------------------------------------------------------------------------------- presets


def test_the_presets_the_docs_describe_exist():
    assert set(EXPECTED) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds_its_strategy(preset):
    cfg = compose_config("sft", [f"trainer={preset}"])
    assert cfg.trainer.max_steps > 0  # the defaults it extends are there
    expected, num_nodes = EXPECTED.get(preset, (None, cfg.trainer.num_nodes))
    assert cfg.trainer.num_nodes == num_nodes
    if cfg.trainer.accelerator == "gpu":
        assert cfg.trainer.precision == "bf16-mixed"
    if expected is DeepSpeedStrategy and not strategies.deepspeed_available():
        with pytest.raises(ConfigError, match="pip install deepspeed"):
            build_strategy(cfg.trainer.strategy, tiny_gpt2())
        return
    built = build_strategy(cfg.trainer.strategy, tiny_gpt2())
    if expected is None:  # a preset added later: it builds something Lightning takes
        assert isinstance(built, (str, FSDPStrategy, DeepSpeedStrategy, DDPStrategy))
    elif isinstance(expected, str):
        assert built == expected
    else:
        assert isinstance(built, expected)


@pytest.mark.parametrize("stage", STAGES)
def test_every_preset_composes_with_every_stage(stage):
    for preset in PRESETS:
        cfg = compose_config(stage, [f"trainer={preset}"])
        assert strategy_name(cfg.trainer.strategy) in {"auto", "ddp", "fsdp", "deepspeed"}, preset


def test_fsdp_preset_settings_reach_the_strategy():
    cfg = compose_config("sft", ["trainer=fsdp"])
    built = build_strategy(cfg.trainer.strategy, tiny_gpt2(), accelerator="gpu")
    assert isinstance(built, FSDPStrategy)
    assert wrapped_classes(built) == {GPT2Block}
    assert built.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert built._state_dict_type == "sharded"
    assert built.cpu_offload.offload_params is False
    assert built._activation_checkpointing_kwargs == {}
    assert built.kwargs["use_orig_params"] is True  # LoRA: frozen and trainable in one unit
    assert strategy_name(cfg.trainer.strategy) == "fsdp"


def test_preset_values_can_be_overridden_from_the_command_line():
    cfg = compose_config(
        "sft",
        [
            "trainer=fsdp",
            "trainer.strategy.sharding_strategy=SHARD_GRAD_OP",
            "trainer.strategy.state_dict_type=full",
            "trainer.strategy.activation_checkpointing=true",
            "trainer.num_nodes=2",
        ],
    )
    built = build_strategy(cfg.trainer.strategy, tiny_llama())
    assert built.sharding_strategy == ShardingStrategy.SHARD_GRAD_OP
    assert built._state_dict_type == "full"
    checkpointed = built._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert set(checkpointed._module_classes) == {LlamaDecoderLayer}
    assert cfg.trainer.num_nodes == 2
    # a preset's mapping can be replaced by a plain name
    plain = compose_config("sft", ["trainer=fsdp", "trainer.strategy=ddp"])
    assert build_strategy(plain.trainer.strategy) == "ddp"


def test_multinode_preset_gives_lightning_num_nodes_times_devices_processes():
    cfg = compose_config("sft", ["trainer=multinode"])
    trainer = L.Trainer(
        accelerator="cpu",  # the preset says gpu; the node arithmetic is the same
        devices=1,
        num_nodes=cfg.trainer.num_nodes,
        strategy=build_strategy(cfg.trainer.strategy, accelerator="cpu"),
        logger=False,
        enable_checkpointing=False,
    )
    assert trainer.num_nodes == 2
    assert trainer.world_size == 2
    assert isinstance(trainer.strategy, DDPStrategy)


# ------------------------------------------------------------------------ decoder layers


@pytest.mark.parametrize(
    ("build", "layer"), [(tiny_gpt2, GPT2Block), (tiny_llama, LlamaDecoderLayer)]
)
def test_decoder_layers_of_plain_lora_and_value_head_models(build, layer):
    plain = build()
    lora = apply_lora(build(), LoraSpec(r=4))
    with_head = CausalLMWithValueHead(build())
    lora_with_head = CausalLMWithValueHead(apply_lora(build(), LoraSpec(r=4)))
    # a stage's LightningModule holds the model (and maybe a reference copy) as submodules
    module_like = nn.ModuleDict({"policy": lora_with_head, "reference": build()})
    for model in (plain, lora, with_head, lora_with_head, module_like):
        assert decoder_layer_classes(model) == {layer}, type(model).__name__
        built = build_strategy(FSDP, model, accelerator="gpu")
        assert isinstance(built, FSDPStrategy)
        assert wrapped_classes(built) == {layer}


def test_two_architectures_in_one_module_wrap_both():
    both = nn.ModuleDict({"policy": tiny_llama(), "reward": tiny_gpt2()})
    assert wrapped_classes(build_strategy(FSDP, both)) == {GPT2Block, LlamaDecoderLayer}


def test_explicit_class_names_with_and_without_a_model():
    model = tiny_llama()
    built = build_strategy({"name": "fsdp", "wrap": ["LlamaDecoderLayer"]}, model)
    assert wrapped_classes(built) == {LlamaDecoderLayer}
    # without a model, among the transformers classes imported so far
    built = build_strategy({"name": "fsdp", "wrap": ["GPT2Block", "LlamaDecoderLayer"]})
    assert wrapped_classes(built) == {GPT2Block, LlamaDecoderLayer}


def test_wrap_null_shards_the_model_as_one_unit():
    built = build_strategy({"name": "fsdp", "wrap": None})
    assert "auto_wrap_policy" not in built.kwargs


# ----------------------------------------------------------------------------- deepspeed


@pytest.mark.skipif(not strategies.deepspeed_available(), reason="deepspeed is not installed")
@pytest.mark.parametrize("preset", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_presets_build_the_zero_stage(preset):
    cfg = compose_config("sft", [f"trainer={preset}"])
    built = build_strategy(cfg.trainer.strategy, accelerator="gpu")
    assert isinstance(built, DeepSpeedStrategy)
    assert built.config["zero_optimization"]["stage"] == cfg.trainer.strategy.stage
    offloaded = build_strategy({"name": "deepspeed", "stage": 3, "offload_optimizer": True})
    assert offloaded.config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_ddp_mapping_passes_its_arguments():
    built = build_strategy({"name": "ddp", "find_unused_parameters": True})
    assert isinstance(built, DDPStrategy)
    assert built._ddp_kwargs["find_unused_parameters"] is True


@pytest.mark.parametrize("name", ["auto", "ddp", "ddp_spawn", "DDP", "fsdp", None])
def test_plain_strings_pass_through(name):
    assert build_strategy(name) == (name or "auto")


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("cfg", "model", "message"),
    [
        ("ddpp", None, r"trainer.strategy=ddpp: unknown strategy\. Fix: one of auto, ddp"),
        ({"name": "megatron"}, None, r"name='megatron'.*one of fsdp, deepspeed, ddp"),
        ({"stage": 2}, None, r"has no `name` key"),
        (42, None, r"expected a strategy name or a mapping"),
        (
            FSDP,
            nn.Sequential(nn.Linear(2, 2)),
            r"wrap=decoder_layers: no decoder layer classes found in Sequential: it contains "
            r"no transformers PreTrainedModel\. Fix: .*trainer.strategy.wrap=\[",
        ),
        (
            FSDP,
            None,
            r"decoder_layers needs the model.*build_strategy\(cfg.trainer.strategy, model",
        ),
        (
            {"name": "fsdp", "wrap": ["GPT2Blok"]},
            tiny_gpt2(),
            r"no module class named GPT2Blok in the model \(GPT2LMHeadModel\); its decoder "
            r"layers are \['GPT2Block'\]",
        ),
        ({**FSDP, "shard": 1}, tiny_gpt2(), r"\(fsdp\): unknown key\(s\) shard\. Fix: remove"),
        (
            {**FSDP, "sharding_strategy": "FULL"},
            tiny_gpt2(),
            r"sharding_strategy='FULL' is unknown",
        ),
        ({**FSDP, "state_dict_type": "local"}, tiny_gpt2(), r"state_dict_type='local' is unknown"),
        ({**FSDP, "auto_wrap_policy": "x"}, tiny_gpt2(), r"set trainer.strategy.wrap instead"),
        (
            {"name": "fsdp", "wrap": None, "activation_checkpointing": True},
            None,
            r"activation_checkpointing=true checkpoints the wrapped layers",
        ),
        ({"name": "ddp", "bucket": 1}, None, r"\(ddp\): unknown key\(s\) bucket"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(cfg, model, message):
    with pytest.raises(ConfigError, match=message):
        build_strategy(cfg, model)


def test_decoder_layers_listed_but_absent():
    model = tiny_gpt2()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module._no_split_modules = ["NoSuchBlock"]
    with pytest.raises(ConfigError, match=r"list \['NoSuchBlock'\] in _no_split_modules"):
        build_strategy(FSDP, model)


@pytest.mark.parametrize(
    "cfg", [{"name": "deepspeed", "stage": 2}, "deepspeed_stage_2", "deepspeed_stage_3_offload"]
)
def test_deepspeed_without_the_package(monkeypatch, cfg):
    monkeypatch.setattr(strategies, "deepspeed_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"`deepspeed` package is not installed\. Fix: pip install deepspeed"
    ):
        build_strategy(cfg)


def test_deepspeed_stage_and_keys_are_checked(monkeypatch):
    monkeypatch.setattr(strategies, "deepspeed_available", lambda: True)
    with pytest.raises(ConfigError, match=r"stage=4: DeepSpeed ZeRO stages are 0, 1, 2 and 3"):
        build_strategy({"name": "deepspeed", "stage": 4})
    with pytest.raises(ConfigError, match=r"\(deepspeed\): unknown key\(s\) offload"):
        build_strategy({"name": "deepspeed", "stage": 2, "offload": True})


@pytest.mark.parametrize(
    ("cfg", "accelerator", "message"),
    [
        (
            FSDP,
            "cpu",
            r"trainer.strategy=fsdp with trainer.accelerator=cpu: Lightning's FSDPStrategy requires a CUDA",
        ),
        ("fsdp", "cpu", r"Fix: run it on a machine with CUDA GPUs .* trainer=ddp_cpu"),
        ({"name": "deepspeed"}, "cpu", r"DeepSpeedStrategy runs on CUDA GPUs only"),
        ("deepspeed_stage_3", "mps", r"trainer.accelerator=mps"),
        (FSDP, "auto", r"trainer.accelerator=auto and no CUDA GPU is visible"),
    ],
)
def test_fsdp_and_deepspeed_on_cpu_are_refused_with_the_fix(monkeypatch, cfg, accelerator, message):
    monkeypatch.setattr(strategies, "deepspeed_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=message):
        build_strategy(cfg, tiny_gpt2(), accelerator=accelerator)


def test_gpu_accelerators_are_not_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for accelerator in ("gpu", "cuda", "auto"):
        assert isinstance(build_strategy(FSDP, tiny_gpt2(), accelerator=accelerator), FSDPStrategy)


def test_lightning_still_refuses_fsdp_on_cpu():
    """What docs/scaling.md quotes; if Lightning starts to allow it, revisit the CPU check."""
    with pytest.raises(ValueError, match="The strategy `fsdp` requires a GPU accelerator"):
        L.Trainer(accelerator="cpu", devices=2, strategy=FSDPStrategy(), logger=False)


# ----------------------------------------------- multi-node on one CPU machine (slow, gloo)

RANK_SCRIPT = """
import sys, torch, lightning as L
from rlhf_lightning.config import compose_stage as compose_config  # built-in names unresolved
from rlhf_lightning.strategies import build_strategy

cfg = compose_config("sft", ["trainer=multinode", *sys.argv[1:]])
t = cfg.trainer


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, i):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


trainer = L.Trainer(
    accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, precision=t.precision,
    strategy=build_strategy(t.strategy, accelerator=t.accelerator), max_steps=2, logger=False,
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=2)
trainer.fit(Tiny(), data)
env = type(trainer.strategy.cluster_environment).__name__
print(f"RANKCHECK {trainer.global_rank} {trainer.node_rank} {trainer.world_size} {env}", flush=True)
"""

# The multinode preset on CPU: one process per "node", the node arithmetic unchanged.
CPU_NODE = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_nodes(commands: list[list[str]], envs: list[dict], cwd) -> list[str]:
    """Start one process per node at once; wait for all; their combined stdout+stderr."""
    procs = [
        subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for command, env in zip(commands, envs, strict=True)
    ]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        outputs.append(out)
    return outputs


def _torchrun(port: int, run_id: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-id={run_id}",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        *args,
    ]


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **extra}


def _rank_lines(outputs: list[str]) -> list[str]:
    lines = [ln for out in outputs for ln in out.splitlines() if ln.startswith("RANKCHECK")]
    return sorted(lines)


@pytest.mark.slow
def test_multinode_preset_under_torchrun_two_nodes_on_cpu(tmp_path):
    """`torchrun --nnodes 2` as on two machines: Lightning reads the ranks from TorchElastic."""
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    port = _free_port()
    command = _torchrun(port, "ranks", str(script), *CPU_NODE)
    outputs = _run_nodes([command, command], [_env(), _env()], cwd=tmp_path)
    assert _rank_lines(outputs) == [
        "RANKCHECK 0 0 2 TorchElasticEnvironment",
        "RANKCHECK 1 1 2 TorchElasticEnvironment",
    ]


@pytest.mark.slow
def test_multinode_preset_under_simulated_srun_on_cpu(tmp_path):
    """The variables `srun --nodes=2 --ntasks-per-node=1` sets: Lightning picks SLURMEnvironment."""
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    port = str(_free_port())
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "2",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "rlhf",
        "SLURM_NODELIST": "localhost",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }
    envs = [_env(**slurm, SLURM_PROCID=str(i), SLURM_NODEID=str(i)) for i in range(2)]
    command = [sys.executable, str(script), *CPU_NODE]
    outputs = _run_nodes([command, command], envs, cwd=tmp_path)
    assert _rank_lines(outputs) == [
        "RANKCHECK 0 0 2 SLURMEnvironment",
        "RANKCHECK 1 1 2 SLURMEnvironment",
    ]


@pytest.mark.slow
def test_sft_smoke_with_the_multinode_preset_under_torchrun_on_cpu(tmp_path):
    """The documented command, `torchrun ... -m rlhf_lightning ... trainer=multinode`, on CPU."""
    out = tmp_path / "run"
    port = _free_port()
    command = _torchrun(
        port,
        "sft",
        "-m",
        "rlhf_lightning",
        "stage=sft",
        "experiment=smoke",
        "trainer=multinode",
        "trainer.num_nodes=2",
        *CPU_NODE,
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={out}",
    )
    _run_nodes([command, command], [_env(), _env()], cwd=tmp_path)
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 4
    assert (out / "checkpoints" / "last.ckpt").is_file()
