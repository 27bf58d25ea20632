"""What the command line says besides running: `--help`, and one `error:` line per mistake.

The help is built from ``conf/`` (stages, config groups and their options, the defaults), so it
lists what this installation can actually run. Errors found by Hydra (an unknown option, a key
not in the config, an unparsable override) and by the project (``RLHFError``) end the same
way: one ``error:`` message naming the problem and the fix, exit code 2.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import yaml

from rlhf_lightning.paths import config_dir

USER_ERROR_EXIT = 2

# One line per built-in stage; a stage added later without a line here is described by the
# first sentence of its config file's header comment.
_STAGE_SUMMARY = {
    "sft": "supervised fine-tuning on text, prompt/completion or chat messages",
    "reward": "a reward model: pairwise ranking on chosen/rejected pairs",
    "ppo": "PPO: value head, KL penalty to a frozen reference, GAE",
    "dpo": "DPO on preference pairs (sigmoid, hinge or IPO loss)",
    "grpo": "GRPO: G samples per prompt, group-normalised advantages",
    "rloo": "RLOO: k samples per prompt, leave-one-out baseline",
    "reinforce_pp": "REINFORCE++: batch-normalised returns, no critic",
    "gspo": "GSPO: one length-normalised ratio per sequence",
    "kto": "KTO: desirable / undesirable rows against a frozen reference",
    "orpo": "ORPO: SFT plus an odds-ratio preference term, no reference",
    "simpo": "SimPO: length-averaged log-probs with a target margin, no reference",
    "online_dpo": "online DPO: two sampled answers ranked by a reward source",
    "pipeline": "SFT -> reward model -> PPO in one run directory",
    "eval": "evaluate a model on held-out problems: accuracy, pass@k, no training",
}
# Groups in the order a user meets them; any other group directory follows.
_GROUP_ORDER = ["model", "data", "trainer", "logger", "callbacks", "reward", "rollout"]
_ALGORITHM_PARTS = ["advantage", "policy_loss", "aggregation", "kl"]

_EXAMPLES = """\
  # the whole demo (SFT -> reward model -> PPO) on the embedded offline data
  python -m rlhf_lightning stage=pipeline
  # your model and data
  python -m rlhf_lightning stage=sft model=pretrained model.name_or_path=/models/gpt2 \\
      data.path=train.jsonl trainer.max_steps=2000
  # DPO from an SFT run's export, on your preference pairs
  python -m rlhf_lightning stage=dpo model=pretrained \\
      model.name_or_path=outputs/sft/<time>/model data.path=prefs.jsonl stage.beta=0.1
  # GRPO with a Python reward function (package.module:function on PYTHONPATH)
  python -m rlhf_lightning stage=grpo reward=callable reward.function=my_rewards:score \\
      data.path=prompts.jsonl
  # a sweep: one run directory per combination, under multirun/
  python -m rlhf_lightning -m stage=ppo optim.lr=1e-5,3e-5 stage.algorithm.kl_coef=0.05,0.1"""

_OUTPUTS = """\
  outputs/<stage>/<date>_<time>/ (choose with hydra.run.dir=DIR; sweeps: multirun/...):
    .hydra/config.yaml     the resolved config          metrics.csv   every logged scalar
    metrics.json           last value of each metric    samples.jsonl sampled completions
    checkpoints/last.ckpt  resume with ckpt_path=       report/       plots and samples
    model/                 Hugging Face export with a model card (README.md)"""


def help_text(conf: Path | None = None) -> str:
    """The `--help` page of `python -m rlhf_lightning`."""
    conf = conf or config_dir()
    defaults = _root_defaults(conf)
    found = _options(conf / "stage")
    stages = [s for s in _STAGE_SUMMARY if s in found] + [
        s for s in found if s not in _STAGE_SUMMARY
    ]
    width = max(len(name) for name in stages) + 2
    stage_lines = [
        f"  {name:<{width}}{_STAGE_SUMMARY.get(name) or _header_sentence(conf / 'stage' / f'{name}.yaml')}"
        for name in stages
    ]
    groups = [g for g in _GROUP_ORDER if (conf / g).is_dir()]
    groups += sorted(
        p.name
        for p in conf.iterdir()
        # tuning: chosen by the model and the stage (conf/tuning/<model>_<stage>.yaml), not by hand
        if p.is_dir()
        and p.name not in {*groups, *_ALGORITHM_PARTS, "stage", "experiment", "tuning"}
    )
    group_lines = [_group_line(conf, g, defaults.get(g)) for g in groups]
    group_lines.append(
        "  algorithm parts of the online-RL stages (docs/algorithms.md):\n"
        + "\n".join(_group_line(conf, g, None, indent=4) for g in _ALGORITHM_PARTS)
    )
    return "\n".join(
        [
            "usage: python -m rlhf_lightning [stage=<stage>] [group=option ...] [key=value ...]",
            "       python -m rlhf_lightning -m [key=a,b ...]     a sweep, one run per combination",
            "",
            "Post-train a language model: each stage is a Lightning module, its config composed",
            "by Hydra from conf/ (the defaults are marked *). Runs offline on embedded demo data.",
            "",
            f"stages (stage=..., default {defaults.get('stage', 'sft')}):",
            *stage_lines,
            "",
            "config groups (group=option; experiment=<name> is a pinned recipe):",
            *group_lines,
            _wrap(f"{'experiment:':<14}" + ", ".join(_options(conf / "experiment")), 2, 16),
            "",
            "keys you will want (key=value; +key=value adds a new one):",
            "  model.name_or_path=<hub id or directory>   data.path=<file, directory or hub name>",
            "  trainer.max_steps=N   optim.lr=X   seed=N   model.lora.enabled=true",
            "  ckpt_path=<run>/checkpoints/last.ckpt (resume)   hydra.run.dir=<dir>",
            "",
            "examples:",
            _EXAMPLES,
            "",
            "outputs:",
            _OUTPUTS,
            "",
            "--cfg job prints the composed config without running; --hydra-help lists Hydra's flags.",
            "exit codes: 0 done; 2 a mistake in the command or its inputs (one error: line names it",
            "and the fix); 130/143 interrupted by Ctrl+C/SIGTERM (resume with ckpt_path=).",
        ]
    )


def _root_defaults(conf: Path) -> dict[str, str]:
    """Group -> default option, from the root config's defaults list."""
    entries = yaml.safe_load((conf / "config.yaml").read_text()).get("defaults", [])
    return {
        key: str(value)
        for entry in entries
        if isinstance(entry, dict)
        for key, value in entry.items()
        if value is not None
    }


def _options(group_dir: Path) -> list[str]:
    return sorted(p.stem for p in group_dir.glob("*.yaml"))


def _group_line(conf: Path, group: str, default: str | None, indent: int = 2) -> str:
    names = [f"{n}*" if n == default else n for n in _options(conf / group)]
    return _wrap(f"{group + ':':<14}" + ", ".join(names), indent=indent, hang=indent + 14)


def _wrap(text: str, indent: int, hang: int | None = None) -> str:
    return textwrap.fill(
        text,
        width=96,
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + 4 if hang is None else hang),
        break_on_hyphens=False,
    )


def _header_sentence(path: Path) -> str:
    """The first sentence of a config file's header comment."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    return text.split(". ")[0].rstrip(".")


def report_error(message: str) -> None:
    """Print ``error: <message>`` once on stderr; a run's log file (when Hydra opened one)
    records it too, without a second line on the terminal."""
    print(f"error: {message}", file=sys.stderr)
    record = logging.LogRecord("rlhf_lightning", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def hydra_error_message(err: BaseException) -> str:
    """Hydra's or OmegaConf's message for a mistake in the command line, with the fix."""
    lines = []
    for part in (err, err.__cause__):
        if part is None:
            continue
        for line in str(part).strip().splitlines():
            if line.startswith("Config search path"):
                break  # Hydra's list of search paths: noise for a typo
            noise = line.lstrip().startswith(("full_key:", "object_type="))  # OmegaConf's
            if line.startswith("\t") and lines:  # Hydra lists options one per line
                lines[-1] += (" " if lines[-1].endswith(":") else ", ") + line.strip()
            elif line.strip() and not noise and line.rstrip() not in lines:
                lines.append(line.rstrip())
    text = "\n".join(lines) or type(err).__name__
    return f"{text}\nFix: {_hydra_fix(text)}"


def _hydra_fix(text: str) -> str:
    if "Could not find" in text or "Could not load" in text:
        return "pick one of the options listed (python -m rlhf_lightning --help lists them all)."
    if "To append to your config" in text:
        return "check the key's spelling, or add a new key with a leading +, as shown above."
    if "Missing mandatory value" in text:
        return "set that key on the command line, e.g. model.name_or_path=<directory>."
    if "override" in text.lower() and "grammar" in text.lower() or "no viable" in text:
        return (
            "quote values with special characters, e.g. 'data.path=\"a b.jsonl\"' or "
            "'stage.sample_prompts=[\"Hi\"]'."
        )
    return "correct the override named above (python -m rlhf_lightning --help lists the options)."
