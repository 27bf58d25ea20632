"""`stage=eval`: a model on held-out problems with a verifier, no training.

The runner builds this module like any stage and, because it does not train (``trains =
False``), runs one validation pass instead of a fit: Lightning places the model (device,
precision, processes) and the loggers write ``eval/*`` to metrics.csv, while the evaluation
itself is the one the RL stages run every few iterations (``modules/evaluation.py``).
``finish()`` writes ``eval.json``, ``eval_samples.jsonl`` and the ``eval.md`` page.

With an environment (``env=guess_number`` ...: ``stage.env``, ``stage.turns``,
``stage.env_eval``), the model plays the held-out games instead, exactly as the RL stages'
``eval/success_rate`` does (``envs/evaluation.py``): the same games, seed and sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.prompts import PromptDataModule
from rlhf_lightning.envs import Environment, TurnLimits
from rlhf_lightning.envs.evaluation import EnvEvaluator
from rlhf_lightning.envs.rollout_loop import transcript
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import export_model
from rlhf_lightning.modules.evaluation import EvalResult, Evaluator, write_eval_summary
from rlhf_lightning.modules.online.environment import episodes_result
from rlhf_lightning.modules.online.records import append_rows
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import SamplingConfig
from rlhf_lightning.rollout.backends import HFBackend


class EvalModule(L.LightningModule):
    """Evaluate `model` on the datamodule's evaluation split (``data.eval_split``).

    Args:
        model: the causal LM to evaluate (any model directory, or a run directory's model/).
        tokenizer: its tokenizer.
        evaluator: what is measured (greedy accuracy, pass@k from sampled answers, ...).
        reward: the verifier that scores answers (``reward=math|countdown|code|...``).
        max_new_tokens: the answer budget when ``evaluator.max_new_tokens`` is unset.
        output_dir: where ``eval.json``, ``eval_samples.jsonl`` and ``eval.md`` go.
        about: extra fields for ``eval.json`` (the model and data evaluated).
        env: an environment: play its held-out games (``eval/success_rate``) instead of
            answering problems; `evaluator` and `reward` are then unused.
        turns: the episodes' limits (``stage.turns``).
        env_eval: which games, how often each, greedy or sampled (``stage.env_eval``).
        sampling: one turn's sampling (``stage.sampling``: at least ``max_new_tokens``).
    """

    model_head = "causal_lm"
    datamodule_class = PromptDataModule
    # The runner validates this module once instead of fitting it.
    trains = False

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        evaluator: Evaluator,
        reward: RewardSource | None,
        max_new_tokens: int = 32,
        output_dir: str | Path | None = None,
        about: dict[str, Any] | None = None,
        env: Environment | None = None,
        turns: TurnLimits | None = None,
        env_eval: EnvEvaluator | None = None,
        sampling: SamplingConfig | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.policy = model
        self.tokenizer = tokenizer
        self.evaluator = evaluator
        self.reward = reward
        self.max_new_tokens = max_new_tokens
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.about = dict(about or {})
        self.env = env
        self.turns = turns or TurnLimits()
        self.env_eval = env_eval or EnvEvaluator()
        if isinstance(sampling, dict):  # the environment's few keys, e.g. a turn's budget
            sampling = SamplingConfig(**sampling)
        self.sampling = sampling or SamplingConfig(max_new_tokens=max_new_tokens)
        self.result: EvalResult | None = None

    def validation_step(self, batch: dict[str, list], batch_idx: int) -> None:
        """The batch is the whole evaluation split; every process takes its share."""
        if self.env is not None:
            self.result = self._play_held_out_games()
        else:
            if self.reward is None:
                raise ConfigError("stage=eval needs a verifier. Fix: reward=math (or another).")
            self.result = self.evaluator.evaluate(
                self.policy, self.tokenizer, batch, self.reward, self.max_new_tokens
            )
        # Already summed over processes: every rank logs the same values.
        metrics = {f"eval/{key}": value for key, value in self.result.metrics.items()}
        self.log_dict(metrics, batch_size=1)

    def _play_held_out_games(self) -> EvalResult:
        """``eval/success_rate``, ``eval/reward_mean``, ``eval/turns`` on the split's games."""
        assert self.env is not None
        rows = self.env_eval.rows(self.trainer.datamodule.path)
        metrics, played = self.env_eval.evaluate(
            HFBackend(), self.policy, self.tokenizer, self.env, rows, self.sampling, self.turns
        )
        result = episodes_result(metrics, played, self.env_eval.sample_rows)
        for row in result.rows:  # the page's columns: the episode as text, and its success
            row["completion"] = transcript(row["conversation"][1:])
            row["correct"] = row["success"]
        result.metrics["num_problems"] = float(len(rows))
        return result

    def finish(self) -> EvalResult | None:
        """After the pass (rank 0): eval.json, eval_samples.jsonl, eval.md."""
        if self.result is not None and self.output_dir is not None:
            write_eval_summary(self.output_dir, self.result, step=0, about=self.about)
            append_rows(self.output_dir / "eval_samples.jsonl", self.result.rows, step=0)
        return self.result

    def export(self, out_dir: Path, merge_lora: bool = False) -> None:
        """The evaluated model, unchanged (``export.enabled=true`` only; off by default)."""
        export_model(self.policy, self.tokenizer, out_dir, merge_lora=merge_lora)
