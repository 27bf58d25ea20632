"""Multi-turn environments for online RL (``env=``): the policy acts over several turns, an
environment (or a tool) answers between them, and rewards flow into the usual estimators.

* :class:`Environment` (``reset(row) -> messages``, ``step(text) -> StepResult``) and
  :class:`StepResult`: the interface (``envs/base.py``);
* :func:`play_episodes` and :class:`TurnLimits`: multi-turn rollouts on token ids only, with
  the policy's sampled tokens kept exactly (``envs/rollout_loop.py``, ``envs/chat.py``);
* :class:`EnvEvaluator`: held-out ``eval/success_rate``;
* built in: :class:`GuessNumber`.
"""

from rlhf_lightning.envs.base import Environment, Message, StepResult
from rlhf_lightning.envs.evaluation import EnvEvaluator
from rlhf_lightning.envs.guess_number import GuessNumber
from rlhf_lightning.envs.rollout_loop import EnvRollout, TurnLimits, play_episodes

__all__ = [
    "EnvEvaluator",
    "EnvRollout",
    "Environment",
    "GuessNumber",
    "Message",
    "StepResult",
    "TurnLimits",
    "play_episodes",
]
