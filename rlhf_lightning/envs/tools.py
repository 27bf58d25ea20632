"""Tools a policy calls through its chat template, and an environment that runs them.

A tool call is written the way Hermes/Qwen-style chat templates describe tools to the model:
``<tool_call>{"name": "calculator", "arguments": {"expression": "347 * 89"}}</tool_call>``
anywhere in an assistant turn. :class:`ToolEnv` runs the call and answers with a ``tool``
message holding the result (the rollout appends it as the template's tokens, like any
environment message); a turn without a call is the final answer, which the subclass scores
(:meth:`ToolEnv.final`). The tools' JSON schemas are ``env.tools``: the rollout passes them
to ``apply_chat_template(tools=...)`` for templates that list them.

Built in: :class:`Calculator` (arithmetic, parsed, never ``eval``-ed) and :class:`PythonTool`
(code run in the sandbox of the code reward, ``rewards/sandbox.py``).
"""

from __future__ import annotations

import ast
import json
import operator
import re
from typing import Any, Protocol

from rlhf_lightning.envs.base import Message, StepResult
from rlhf_lightning.rewards.sandbox import Sandbox, SandboxLimits

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class Tool(Protocol):
    """A callable with a name and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the keyword arguments

    def __call__(self, **arguments: Any) -> str: ...


def schema(tool: Tool) -> dict[str, Any]:
    """The OpenAI-style function schema chat templates render (``tools=[...]``)."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def parse_tool_call(text: str) -> tuple[str, dict[str, Any]] | str | None:
    """The first ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in ``text``.

    Returns:
        ``(name, arguments)``; a message saying what is wrong with a malformed call (the
        model gets it back as the tool's answer); None when the text calls no tool.
    """
    found = _CALL.search(text)
    if found is None:
        return None
    try:
        call = json.loads(found.group(1))
    except json.JSONDecodeError as err:
        return f"Error: the tool call is not JSON ({err.msg})."
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return 'Error: a tool call is {"name": ..., "arguments": {...}}.'
    arguments = call.get("arguments") or {}
    if not isinstance(arguments, dict):
        return "Error: the tool call's arguments must be an object."
    return call["name"], arguments


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


class Calculator:
    """Evaluates an arithmetic expression: numbers, ``+ - * / // % **`` and parentheses.

    The expression is parsed and walked, never passed to ``eval``; powers are bounded so a
    call cannot stall the trainer (``9**9**9``).
    """

    name = "calculator"
    description = "Evaluate an arithmetic expression, e.g. 347 * 89."
    parameters = {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    }

    def __init__(self, max_exponent: int = 64) -> None:
        self.max_exponent = max_exponent

    def __call__(self, expression: str = "", **_: Any) -> str:
        try:
            value = self._eval(ast.parse(str(expression), mode="eval").body)
        except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError) as err:
            return f"Error: {type(err).__name__}: {err}"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)

    def _eval(self, node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](self._eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > self.max_exponent:
                raise ValueError(f"exponent {right} is above {self.max_exponent}")
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"not arithmetic: {ast.unparse(node)[:40]!r}")


class PythonTool:
    """Runs Python code in the sandbox (no network, bounded time, memory and output) and
    answers with what it printed, or the error it raised."""

    name = "python"
    description = "Run Python code and return what it prints."
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
    }

    def __init__(self, timeout_s: float = 5.0, max_chars: int = 500) -> None:
        self.limits = SandboxLimits(timeout_s=timeout_s)
        self.max_chars = max_chars
        self._sandbox: Sandbox | None = None  # built on first call (it probes the machine)

    def __call__(self, code: str = "", **_: Any) -> str:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.limits)
        result = self._sandbox.run(str(code))
        if result.status != "ok":
            return f"Error ({result.status}): {result.detail or result.stderr}"[: self.max_chars]
        return result.stdout[: self.max_chars]

    def __deepcopy__(self, memo: dict) -> PythonTool:
        return self  # stateless between calls: every trajectory shares one sandbox


class ToolEnv:
    """An episode in which the assistant may call tools before its final answer.

    Args:
        tools: The tools the assistant may call.
        max_tool_calls: Calls at most; the next turn after them is taken as the answer.
        tool_role: The role of a tool's answer (``tool``; ``user`` for templates without one).
    """

    def __init__(self, tools: list[Tool], max_tool_calls: int = 2, tool_role: str = "tool") -> None:
        self.by_name = {tool.name: tool for tool in tools}
        self.tools = [schema(tool) for tool in tools]
        self.max_tool_calls = max_tool_calls
        self.tool_role = tool_role
        self.calls = 0

    def reset(self, row: dict[str, Any]) -> list[Message]:
        self.calls = 0
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, assistant_text: str) -> StepResult:
        call = parse_tool_call(assistant_text)
        if call is None or self.calls >= self.max_tool_calls:
            reward, info = self.final(assistant_text)
            return StepResult(None, reward, True, {"tool_calls": self.calls, **info})
        self.calls += 1
        if isinstance(call, str):
            answer = call
        elif call[0] not in self.by_name:
            answer = f"Error: no tool {call[0]!r}; tools: {', '.join(self.by_name)}."
        else:
            answer = self.by_name[call[0]](**call[1])
        return StepResult([{"role": self.tool_role, "content": answer}], 0.0, False, {})

    def final(self, answer: str) -> tuple[float, dict[str, Any]]:
        """The reward of the final answer and its ``info`` (``success``)."""
        raise NotImplementedError


class ToolArithmetic(ToolEnv):
    """``env=tool_arithmetic``: answer a hard product (``data.path=tool_arithmetic``), with a
    calculator (and, with ``python=True``, the Python tool) at hand. Reward 1 when the last
    number of the final answer is the product."""

    def __init__(self, python: bool = False, max_tool_calls: int = 2, tool_role: str = "tool"):
        tools: list[Tool] = [Calculator(), *([PythonTool()] if python else [])]
        super().__init__(tools, max_tool_calls, tool_role)
        self.answer = ""

    def reset(self, row: dict[str, Any]) -> list[Message]:
        self.answer = str(row["answer"])
        return super().reset(row)

    def final(self, answer: str) -> tuple[float, dict[str, Any]]:
        numbers = re.findall(r"-?\d+", answer.replace(",", ""))
        success = bool(numbers) and numbers[-1] == self.answer
        return float(success), {"success": success}
