"""vLLM as a rollout backend: an engine in its own virtualenv, spoken to over HTTP.

- ``python -m rlhf_lightning.rollout.vllm.setup`` creates the virtualenv (``venv.py``).
- :class:`VLLMServer` starts ``server_main.py`` (an in-process ``vllm.LLM``) in that venv.
- :class:`VLLMBackend` samples :class:`~rlhf_lightning.rollout.batch.RolloutBatch` es from it
  and syncs full weights or a LoRA adapter into it.
- :class:`VLLMRollout` is the online-RL stages' backend (``rollout=vllm``) built on it.

Nothing here imports vLLM: the project's environment keeps its own transformers.
"""

from rlhf_lightning.errors import RolloutError
from rlhf_lightning.rollout.vllm.backend import VLLMBackend, row_seed
from rlhf_lightning.rollout.vllm.process import ServerOptions, VLLMServer
from rlhf_lightning.rollout.vllm.rollout import VLLMRollout
from rlhf_lightning.rollout.vllm.venv import create_venv, require_venv, venv_dir, venv_ready

__all__ = [
    "RolloutError",
    "ServerOptions",
    "VLLMBackend",
    "VLLMRollout",
    "VLLMServer",
    "create_venv",
    "require_venv",
    "row_seed",
    "venv_dir",
    "venv_ready",
]
