"""Multi-turn rollouts: the policy and an environment take turns, on token ids only.

One call plays one episode per dataset row (rows already repeated for groups), all rows
advancing turn by turn together:

1. each row's environment copy is reset; its first messages are rendered with the generation
   prompt and tokenised once: the row's query;
2. the rollout backend samples the next assistant turn of every live row from the row's ids
   so far (``query_ids``: nothing is re-tokenised), stopping at the template's end-of-turn
   token; the sampled ids and their log-probs are kept exactly as sampled;
3. the turn's text (decoded, for the environment only) goes to ``env.step``; its reward is
   placed on the turn's last token; the messages that follow are appended as the tokens the
   chat template adds after the turn (``envs/chat.py``), never as a re-rendering of the
   conversation;
4. a row ends when the environment says so, or is cut (``contains_stop`` False) when a turn
   does not stop within ``sampling.max_new_tokens``, when ``max_total_tokens`` is reached or
   the next messages would not fit, or after ``max_turns`` turns.

The result is one :class:`~rlhf_lightning.rollout.RolloutBatch`: the first prompt is the
query; everything after it is the response (``response_mask`` True on every real token,
environment messages included, so attention sees them), ``action_mask`` True on the sampled
tokens only (what is trained), ``turn_rewards`` on each turn's last token.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.envs.base import Environment, Message, checked_messages, checked_step, spawn
from rlhf_lightning.envs.chat import delta_after_turn, prompt_ids, turn_end_ids
from rlhf_lightning.errors import ConfigError, EnvError
from rlhf_lightning.rollout import RolloutBackend, RolloutBatch, SamplingConfig, left_pad
from rlhf_lightning.rollout.queries import pad_token_id


@dataclass
class TurnLimits:
    """How long a trajectory may run (``stage.turns``) and what happens at the limits.

    Attributes:
        max_turns: Assistant turns at most; a trajectory still going after them is cut.
        max_total_tokens: First prompt + every turn + every message between turns, in tokens.
            A turn is sampled with at most the tokens left; a trajectory that reaches the limit,
            or whose next messages would leave no room for another turn, is cut.
        on_template_rewrite: When the chat template would render earlier turns differently
            once later messages follow (e.g. it strips earlier ``<think>`` blocks): ``keep``
            the sampled tokens and append the new messages after them (the policy is trained
            on exactly what it conditioned on), or ``drop`` the trajectory (it ends there and
            takes no part in the loss). Either way it is counted (``env/template_rewrites``).
        unfinished_turns: A turn that reaches ``sampling.max_new_tokens`` without its
            end-of-turn token: ``cut`` the trajectory there, or ``close`` the turn with that
            token, appended as an environment token (not sampled, so not trained), and show
            the text to the environment as the turn (``env/closed_turns`` counts them).
    """

    max_turns: int = 4
    max_total_tokens: int = 256
    on_template_rewrite: Literal["keep", "drop"] = "keep"
    unfinished_turns: Literal["cut", "close"] = "cut"

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_total_tokens < 2:
            raise ConfigError(
                f"stage.turns.max_turns={self.max_turns}, max_total_tokens="
                f"{self.max_total_tokens}: need at least 1 turn and 2 tokens."
            )
        if self.on_template_rewrite not in ("keep", "drop"):
            raise ConfigError(
                f"stage.turns.on_template_rewrite={self.on_template_rewrite!r}. Fix: keep or drop."
            )
        if self.unfinished_turns not in ("cut", "close"):
            raise ConfigError(
                f"stage.turns.unfinished_turns={self.unfinished_turns!r}. Fix: cut or close."
            )


@dataclass
class EnvRollout:
    """What a multi-turn rollout gives besides its batch: the readable conversations and how
    each episode ended. Shapes (B,)."""

    batch: RolloutBatch
    conversations: list[list[Message]]
    success: Tensor  # bool: the last step's info["success"]
    turns: Tensor  # long: assistant turns taken
    counts: dict[str, int] = field(default_factory=dict)  # template_rewrites, dropped, cut

    def metrics(self, prefix: str = "env") -> dict[str, float]:
        """``<prefix>/success_rate``, ``/turns``, ``/reward_mean``, and the counts."""
        rewards = self.batch.turn_rewards
        total = rewards.sum(1) if rewards is not None else torch.zeros(len(self.turns))
        out = {
            f"{prefix}/success_rate": self.success.float().mean().item(),
            f"{prefix}/turns": self.turns.float().mean().item(),
            f"{prefix}/reward_mean": total.float().mean().item(),
        }
        return out | {f"{prefix}/{name}": float(n) for name, n in self.counts.items()}


class _Episode:
    """One row's trajectory while it is played."""

    def __init__(self, env: Environment, prompt: list[int], messages: list[Message]) -> None:
        self.env = env
        self.prompt = prompt
        self.messages = messages
        self.first = len(messages)  # messages before the first assistant turn
        self.ids: list[int] = []
        self.action: list[bool] = []
        self.policy_logprobs: list[float] = []
        self.sampler_logprobs: list[float] = []
        self.rewards: dict[int, float] = {}  # response position -> the reward earned there
        self.info: dict[str, Any] = {}
        self.turns = 0
        self.done = self.cut = self.dropped = self.rewritten = False

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.ids)

    def append(self, ids: list[int], action: bool, policy: list[float], sampler: list[float]):
        self.ids += ids
        self.action += [action] * len(ids)
        self.policy_logprobs += policy or [0.0] * len(ids)
        self.sampler_logprobs += sampler or [0.0] * len(ids)

    def end(self, cut: bool = False, dropped: bool = False) -> None:
        self.done, self.cut, self.dropped = True, cut, dropped


def turn_seed(seed: int, turn: int) -> int:
    """Turn `turn`'s sampling seed: a pure function of (rollout seed, turn)."""
    return zlib.crc32(f"{seed}:turn:{turn}".encode()) % (2**31)


@torch.no_grad()
def play_episodes(
    backend: RolloutBackend,
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    env: Environment,
    rows: list[dict[str, Any]],
    sampling: SamplingConfig,
    limits: TurnLimits,
    *,
    seed: int,
    row_keys: Tensor,
) -> EnvRollout:
    """Play one episode per row (see the module docstring).

    Args:
        backend: Samples each turn from token ids (``query_ids``).
        policy: The policy the backend samples.
        tokenizer: The policy's tokenizer and chat template.
        env: The configured environment; each row plays a fresh copy of it.
        rows: B dataset rows (``prompt`` and the other columns), groups already repeated.
        sampling: Per-turn sampling (``max_new_tokens`` is a turn's budget); turns stop at the
            template's end-of-turn token unless ``stop_token_ids`` is set.
        limits: Turns and tokens at most, and what a rewriting template does.
        seed: This rollout's seed; turn t samples with ``turn_seed(seed, t)``.
        row_keys: Each row's key for row-keyed sampling. Shape (B,).

    Returns:
        :class:`EnvRollout`.
    """
    tools = getattr(env, "tools", None)
    stops = sampling.stop_token_ids or turn_end_ids(tokenizer)
    episodes = [_start(env, row, tokenizer, tools, limits) for row in rows]
    counts = {"template_rewrites": 0, "dropped": 0, "cut": 0, "closed_turns": 0}
    recorded = {"policy_logprobs": True, "logprobs": True}  # by the backend at every turn
    for turn in range(limits.max_turns):
        live = [i for i, episode in enumerate(episodes) if not episode.done]
        if not live:
            break
        left = [limits.max_total_tokens - episodes[i].length for i in live]
        config = dataclasses.replace(
            sampling,
            max_new_tokens=min(sampling.max_new_tokens, max(left)),
            min_new_tokens=min(sampling.min_new_tokens, max(left)),
            stop_token_ids=list(stops),
        )
        batch = backend.generate(
            policy, tokenizer, [], config, seed=turn_seed(seed, turn),
            row_keys=row_keys[live], query_ids=[episodes[i].prompt + episodes[i].ids for i in live],
        )  # fmt: skip
        for name in recorded:
            recorded[name] &= getattr(batch, name) is not None
        for j, i in enumerate(live):
            _take_turn(episodes[i], batch, j, left[j], stops[0], tokenizer, tools, limits, counts)
    for episode in episodes:
        if not episode.done:  # out of turns
            episode.end(cut=True)
    counts["cut"] = sum(e.cut for e in episodes)
    counts["dropped"] = sum(e.dropped for e in episodes)
    return _assemble(episodes, tokenizer, rows, counts, recorded)


def _start(
    env: Environment, row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, tools, limits
) -> _Episode:
    copy = spawn(env)
    messages = checked_messages(copy.reset(dict(row)), copy, "reset")
    if not messages:
        raise EnvError(
            f"env {type(env).__name__}: reset returned no messages. Fix: return the "
            'conversation\'s first messages, e.g. [{"role": "user", "content": row["prompt"]}].'
        )
    ids = prompt_ids(tokenizer, messages, tools)
    if len(ids) >= limits.max_total_tokens:
        raise ConfigError(
            f"env {type(env).__name__}: a first prompt is {len(ids)} tokens, stage.turns."
            f"max_total_tokens={limits.max_total_tokens} leaves no room for a turn. Fix: raise "
            "stage.turns.max_total_tokens (within the model's context)."
        )
    return _Episode(copy, ids, messages)


def _take_turn(
    episode: _Episode,
    batch: RolloutBatch,
    j: int,
    left: int,
    stop: int,
    tokenizer: PreTrainedTokenizerBase,
    tools,
    limits: TurnLimits,
    counts: dict[str, int],
) -> None:
    """Row `j` of a turn's batch: keep the sampled ids, step the environment, append what
    follows (or end the episode)."""
    n = int(batch.response_mask[j].sum())
    keep = min(n, left)
    ids = batch.response_ids[j, :keep].tolist()
    recorded = [
        [] if lp is None else lp[j, :keep].tolist()
        for lp in (batch.policy_logprobs, batch.logprobs)
    ]
    episode.append(ids, True, *recorded)
    episode.turns += 1
    last_sampled = len(episode.ids) - 1  # where the turn's reward goes
    if bool(batch.contains_stop[j]) and keep == n:
        said = ids[:-1]
    elif _closes(episode, batch, j, keep, limits):
        episode.append([stop], False, [], [])  # the template's end of turn, not sampled
        counts["closed_turns"] += 1
        said = ids
    else:
        episode.end(cut=True)  # the turn did not end: nothing to show the environment
        return
    text = tokenizer.decode(said, skip_special_tokens=True)  # for the environment only
    episode.messages.append({"role": "assistant", "content": text})
    result = checked_step(episode.env.step(text), episode.env)
    episode.rewards[last_sampled] = result.reward
    episode.info = result.info
    if result.done or not result.messages:
        episode.messages += result.messages or []
        episode.end()
        return
    stop_text = tokenizer.decode([episode.ids[-1]])
    delta = delta_after_turn(tokenizer, episode.messages, result.messages, stop_text, tools)
    episode.messages += result.messages
    if not delta.prefix_stable:
        counts["template_rewrites"] += 1
        episode.rewritten = True
        if limits.on_template_rewrite == "drop":
            episode.end(dropped=True)
            return
    if delta.ids is None:  # stopped on a token the template does not end turns with
        episode.end(dropped=True)
        return
    if episode.length + len(delta.ids) >= limits.max_total_tokens:
        episode.end(cut=True)  # no room for another turn
        return
    episode.append(delta.ids, False, [], [])


def _closes(episode: _Episode, batch: RolloutBatch, j: int, keep: int, limits: TurnLimits) -> bool:
    """Whether an unfinished turn is closed with the end-of-turn token (``unfinished_turns``):
    it ran out of ``max_new_tokens`` (not of the trajectory's token budget) and the token fits."""
    whole = keep == int(batch.response_mask[j].sum())
    room = episode.length + 1 < limits.max_total_tokens
    return limits.unfinished_turns == "close" and whole and room


def _assemble(
    episodes: list[_Episode],
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    counts: dict[str, int],
    recorded: dict[str, bool],
) -> EnvRollout:
    """The episodes as one rollout batch: left-padded first prompts, right-padded the rest."""
    pad = pad_token_id(tokenizer)
    query_ids, query_mask = left_pad([e.prompt for e in episodes], pad)
    batch, width = len(episodes), max(len(e.ids) for e in episodes)
    response_ids = torch.full((batch, width), pad, dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.bool)
    action_mask = torch.zeros((batch, width), dtype=torch.bool)
    turn_rewards = torch.zeros((batch, width))
    policy_logprobs, sampler_logprobs = torch.zeros((batch, width)), torch.zeros((batch, width))
    for i, e in enumerate(episodes):
        n = len(e.ids)
        response_ids[i, :n] = torch.tensor(e.ids, dtype=torch.long)
        response_mask[i, :n] = True
        action_mask[i, :n] = torch.tensor(e.action) & (not e.dropped)
        policy_logprobs[i, :n] = torch.tensor(e.policy_logprobs)
        sampler_logprobs[i, :n] = torch.tensor(e.sampler_logprobs)
        for position, reward in e.rewards.items():
            turn_rewards[i, position] = reward
    rollout = RolloutBatch(
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        contains_stop=torch.tensor([not e.cut for e in episodes]),
        prompts=[
            str(row.get("prompt", e.messages[0]["content"]))
            for row, e in zip(rows, episodes, strict=False)
        ],
        completions=[transcript(e.messages[e.first :]) for e in episodes],
        logprobs=sampler_logprobs if recorded["logprobs"] else None,
        policy_logprobs=policy_logprobs if recorded["policy_logprobs"] else None,
        action_mask=action_mask,
        turn_rewards=turn_rewards,
    )
    return EnvRollout(
        rollout,
        [e.messages for e in episodes],
        torch.tensor([bool(e.info.get("success", False)) for e in episodes]),
        torch.tensor([e.turns for e in episodes]),
        counts,
    )


def transcript(messages: list[Message]) -> str:
    """Messages as readable text, one ``role: content`` block per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
