"""A Python function as a reward source, named in a config as ``package.module:function``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import check_inputs, check_scores

_FIX_NAME = "Fix: name it as package.module:function, with the module importable (on PYTHONPATH)."


class CallableReward:
    """Scores with ``function(prompts, completions, **columns, **kwargs)``.

    The function gets the prompts and completions as lists of B strings, the extra dataset
    columns of the batch as keyword arguments (e.g. ``reference=[...]``, each of length B), and
    the fixed ``kwargs`` given here. It returns B numbers (list, numpy array or tensor).

    Columns the function does not name are not passed to it, unless it takes ``**kwargs``; so a
    dataset may carry columns that only some reward functions read.

    A function with a parameter named ``completions`` gets everything by name, as TRL calls its
    reward functions: ``def reward_len(completions, **kwargs)`` works unchanged (``prompts``
    too when it names it or takes ``**kwargs``).

    Args:
        function: A callable, or its import path ``"package.module:function"``
            (``"package.module:Class.method"`` also works).
        **kwargs: Fixed keyword arguments for every call, e.g. ``target=20``.

    Example:
        >>> reward = CallableReward("rlhf_lightning.rewards.examples:length_penalty", target=5)
        >>> reward(["Say hi"], ["hi there"]).shape
        torch.Size([1])
    """

    def __init__(self, function: str | Callable[..., Any], **kwargs: Any) -> None:
        self.function = resolve_function(function) if isinstance(function, str) else function
        if not callable(self.function):
            raise RewardError(
                f"reward function {function!r} is a {type(function).__name__}, not callable. "
                "Fix: pass a function or its name as package.module:function."
            )
        self.name = function if isinstance(function, str) else function_name(self.function)
        self.kwargs = kwargs
        names = _parameter_names(self.function)
        self._by_name = "completions" in names
        self._accepts_any, self._params = _parameters(self.function, self._by_name)
        self._takes_prompts = "prompts" in names or self._accepts_any

    @property
    def source(self) -> str:
        """How error messages name this source."""
        return f"reward function '{self.name}'"

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch. Shapes: ``prompts``/``completions`` length B; returns (B,) float32."""
        batch = check_inputs(prompts, completions, columns, self.source)
        arguments = self._arguments(columns)
        try:
            if self._by_name:
                texts = {"completions": list(completions)}
                if self._takes_prompts:
                    texts["prompts"] = list(prompts)
                scores = self.function(**texts, **arguments)
            else:
                scores = self.function(list(prompts), list(completions), **arguments)
        except RewardError:
            raise
        except Exception as err:
            raise RewardError(
                f"{self.source} raised {type(err).__name__}: {err}. Fix: make the function "
                "handle this batch (the original exception is chained as the cause)."
            ) from err
        return check_scores(scores, batch, self.source, prompts=prompts)

    def _arguments(self, columns: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(columns) & set(self.kwargs))
        if clash:
            raise RewardError(
                f"{self.source}: column(s) {clash} are also given as fixed keyword arguments. "
                "Fix: rename the column (data.columns) or drop the fixed argument."
            )
        passed = (
            columns if self._accepts_any else {k: columns[k] for k in columns if k in self._params}
        )
        arguments = {**passed, **self.kwargs}
        missing = [
            name for name, required in self._params.items() if required and name not in arguments
        ]
        if missing:
            raise RewardError(
                f"{self.source} needs the argument(s) {missing}, but the batch has columns "
                f"{sorted(columns)} and the fixed arguments are {sorted(self.kwargs)}. Fix: add "
                "the column to the dataset (or map it with data.columns), or give a fixed value."
            )
        return arguments

    def __repr__(self) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in self.kwargs.items())
        return f"{type(self).__name__}({self.name!r}{extra})"


def resolve_function(path: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (or ``"package.module:Class.method"``).

    Raises:
        RewardError: If the name is malformed, the module cannot be imported, the attribute is
            missing, or it is not callable.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise RewardError(
            f"reward function '{path}': expected 'package.module:function'. {_FIX_NAME}"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise RewardError(
                f"reward function '{path}': no module named '{err.name}'. {_FIX_NAME}"
            ) from err
        raise RewardError(
            f"reward function '{path}': importing '{module_name}' failed ({err}). Fix: install "
            "the missing package that module needs."
        ) from err
    except Exception as err:
        raise RewardError(
            f"reward function '{path}': importing '{module_name}' raised "
            f"{type(err).__name__}: {err}. Fix: repair the module so that it imports."
        ) from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(target) if not n.startswith("_"))[:20]
            raise RewardError(
                f"reward function '{path}': '{getattr(target, '__name__', module_name)}' has no "
                f"attribute '{part}' (it has: {', '.join(public)}). Fix: check the spelling after "
                "the ':'."
            )
        target = getattr(target, part)
    if not callable(target):
        raise RewardError(
            f"reward function '{path}' is a {type(target).__name__}, not callable. Fix: point it "
            "at a function that takes (prompts, completions, **columns)."
        )
    return target


def function_name(function: Callable[..., Any]) -> str:
    """``module:qualname`` of a callable, for messages."""
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}:{qualname}"


def _parameter_names(function: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _parameters(
    function: Callable[..., Any], by_name: bool = False
) -> tuple[bool, dict[str, bool]]:
    """(takes **kwargs, {keyword parameter other than the texts': required}).

    The texts' parameters are the first two positional ones, or with `by_name` those named
    ``prompts`` and ``completions``. A signature Python cannot inspect (some builtins) is
    treated as accepting everything.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True, {}
    params = list(signature.parameters.values())
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    skipped = {"prompts", "completions"} if by_name else {p.name for p in positional[:2]}
    named = {p.name: p.default is p.empty for p in keyword if p.name not in skipped}
    return accepts_any, named
