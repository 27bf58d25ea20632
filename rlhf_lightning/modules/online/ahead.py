"""Rollouts generated ahead of their iteration: bounded-staleness asynchronous RL.

With ``max_staleness = k > 0`` the rollout of iteration ``i + k`` is generated in a background
thread while iteration ``i`` optimises, by the weights the sampler held before that
optimisation: a rollout is at most ``k`` policy versions old when it is trained on. The
sampler must hold its own weights (``rollout=vllm``, or ``rollout=hf rollout.own_copy=true``),
which the stage refreshes only once the generation in flight has finished. PPO's clipped ratio
corrects for the lag: taken against the sampler's own log-probs where they are the old ones
(the HF sampler's, the engine's with ``rollout.reuse_logprobs``), or with
``algorithm.importance_cap`` the recomputed ones weighed against the sampler's.
``k = 0`` generates every rollout in its own iteration (the synchronous run, exactly).

Rollouts generated ahead are part of the training state: checkpoints hold them, so a resumed
run trains on exactly the rollouts the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rollout import RolloutBatch


class RolloutsAhead:
    """Up to `max_staleness` future iterations' rollouts, generated one at a time in a thread.

    Args:
        max_staleness: how many iterations ahead rollouts are generated (0: none).
        generate: ``iteration -> RolloutBatch`` (that iteration's prompts, seed and row keys).
    """

    def __init__(self, max_staleness: int, generate: Callable[[int], RolloutBatch]) -> None:
        if max_staleness < 0:
            raise ConfigError(f"stage.max_staleness={max_staleness}: must be >= 0.")
        self.max_staleness = max_staleness
        self.generate = generate
        self.ready: dict[int, RolloutBatch] = {}
        self.running: dict[int, Future[RolloutBatch]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def take(self, iteration: int) -> RolloutBatch | None:
        """The rollout generated ahead for `iteration`, or None (generate it now)."""
        if iteration in self.running:
            self.ready[iteration] = self.running.pop(iteration).result()
        return self.ready.pop(iteration, None)

    def start(self, iteration: int, last: int) -> None:
        """Start generating for the iterations up to ``iteration + max_staleness`` (< `last`)."""
        for ahead in range(iteration + 1, min(iteration + self.max_staleness, last - 1) + 1):
            if ahead not in self.ready and ahead not in self.running:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="rollouts-ahead")
                self.running[ahead] = self._pool.submit(self.generate, ahead)

    def finish(self) -> None:
        """Wait for the generation in flight (before the sampler's weights change)."""
        for iteration in sorted(self.running):
            self.ready[iteration] = self.running.pop(iteration).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def state_dict(self) -> dict[str, Any]:
        self.finish()
        return {str(i): dataclasses.asdict(rollout) for i, rollout in self.ready.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ready = {int(i): RolloutBatch(**fields) for i, fields in state.items()}
