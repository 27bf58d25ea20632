"""Rollout sampling seeds: a function of (run seed, iteration), so resume repeats them and a
seed sweep does not."""

from __future__ import annotations

from types import SimpleNamespace

from rlhf_lightning.modules.online import OnlineRLModule


def _seed(run_seed: int, iteration: int, tag: str = "ppo") -> int:
    group_size = 1 if tag == "ppo" else 4  # the tag follows the algorithm's group size
    algorithm = SimpleNamespace(group_size=group_size)
    state = SimpleNamespace(seed=run_seed, iteration=iteration, algorithm=algorithm)
    return OnlineRLModule.rollout_seed(state, iteration)  # type: ignore[arg-type]


def test_rollout_seed_follows_run_seed_and_iteration():
    assert _seed(0, 5) == _seed(0, 5)  # a resumed run draws what the straight run drew
    assert len({_seed(s, 5) for s in range(50)}) == 50  # seeds of a sweep sample apart
    assert len({_seed(0, i) for i in range(50)}) == 50  # each iteration its own draw
    assert _seed(0, 5, "ppo") != _seed(0, 5, "group")
    assert all(0 <= _seed(s, i) < 2**31 for s in range(5) for i in range(5))
