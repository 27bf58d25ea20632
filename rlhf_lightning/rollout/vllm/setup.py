"""``python -m rlhf_lightning.rollout.vllm.setup``: create the vLLM virtualenv (idempotent)."""

from __future__ import annotations

import sys

from rlhf_lightning.rollout.vllm.venv import main

if __name__ == "__main__":
    sys.exit(main())
