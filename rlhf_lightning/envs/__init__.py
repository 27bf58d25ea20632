"""Multi-turn environments for online RL (``env=``): the policy acts over several turns, an
environment (or a tool) answers between them, and rewards flow into the usual estimators.

* :class:`Environment` (``reset(row) -> messages``, ``step(text) -> StepResult``) and
  :class:`StepResult`: the interface (``envs/base.py``);
* :func:`play_episodes` and :class:`TurnLimits`: multi-turn rollouts on token ids only, with
  the policy's sampled tokens kept exactly (``envs/rollout_loop.py``, ``envs/chat.py``);
* :class:`EnvEvaluator`: held-out ``eval/success_rate``;
* tools (``envs/tools.py``): :class:`ToolEnv`, :class:`Calculator`, :class:`PythonTool`
  (in the sandbox), tool calls parsed from the assistant's turn;
* :class:`HTTPEnv`: an environment served over HTTP (the HTTP reward's timeouts and errors);
* built in: :class:`GuessNumber`, :class:`ToolArithmetic`, :class:`Codebreaker`.
"""

from rlhf_lightning.envs.base import Environment, Message, StepResult
from rlhf_lightning.envs.codebreaker import Codebreaker
from rlhf_lightning.envs.evaluation import EnvEvaluator
from rlhf_lightning.envs.guess_number import GuessNumber
from rlhf_lightning.envs.http import HTTPEnv
from rlhf_lightning.envs.rollout_loop import EnvRollout, TurnLimits, play_episodes
from rlhf_lightning.envs.tools import (
    Calculator,
    PythonTool,
    Tool,
    ToolArithmetic,
    ToolEnv,
    parse_tool_call,
)

__all__ = [
    "Calculator",
    "Codebreaker",
    "EnvEvaluator",
    "EnvRollout",
    "Environment",
    "GuessNumber",
    "HTTPEnv",
    "Message",
    "PythonTool",
    "StepResult",
    "Tool",
    "ToolArithmetic",
    "ToolEnv",
    "TurnLimits",
    "parse_tool_call",
    "play_episodes",
]
