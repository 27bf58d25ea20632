#!/usr/bin/env bash
# Make the two TRL virtualenvs the benchmarks compare against:
#   benchmarks/.venv-trl      the current TRL release (SFT, reward, DPO, KTO, ORPO, CPO/SimPO,
#                             GRPO, RLOO, online DPO)
#   benchmarks/.venv-trl-ppo  the last TRL release that still ships a PPO trainer
#                             (trl.experimental.ppo.PPOTrainer; removed in 1.13.0)
#   benchmarks/.venv-trl-ppo-classic  the last TRL with the classic value-head PPOTrainer
#                             (`step(queries, responses, scores)`, 0.11.4), which needs a
#                             transformers 4.x (4.46.3: the last 4.x release before TRL 0.12)
# torch is installed first, pinned to the version this project uses (2.13.0, the CPU build
# where the local wheel is available), and held there with a constraints file so that
# resolving TRL's requirements can never replace it (e.g. with a CUDA build).
#
# peft (pinned to the version this project runs) and vaderSentiment go into the two current
# venvs for the realistic workload's LoRA adapter and reward (realistic_trl.py).
#
# Usage: bash benchmarks/setup_trl.sh [--force]     (PYTHON=python3.11 to pick the interpreter;
#        VENVS="trl trl-ppo" to make only some of them: trl, trl-ppo, trl-ppo-classic)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TRL_CURRENT="${TRL_CURRENT:-1.16.0}"
TRL_PPO="${TRL_PPO:-1.12.0}"
TRL_PPO_CLASSIC="${TRL_PPO_CLASSIC:-0.11.4}"
PEFT_VERSION="${PEFT_VERSION:-0.21.2}"
VENVS="${VENVS:-trl trl-ppo trl-ppo-classic}"
FORCE="${1:-}"

make_venv() {
    local dir="$1" trl_version="$2"
    shift 2
    local extra=("$@")  # further requirements, e.g. a transformers pin
    if [[ -x "$dir/bin/python" && "$FORCE" != "--force" ]] &&
        "$dir/bin/python" -c "import trl, torch; assert trl.__version__ == '$trl_version'" 2>/dev/null; then
        echo "ok: $dir already has trl==$trl_version"
        return
    fi
    echo "making $dir (trl==$trl_version, torch==$TORCH_VERSION)"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    local constraints="$dir/constraints.txt"
    echo "torch==$TORCH_VERSION" >"$constraints"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q "torch==$TORCH_VERSION"
    # No extras: no vllm, deepspeed, liger, wandb.
    "$dir/bin/python" -m pip install -q -c "$constraints" "trl==$trl_version" ${extra[@]+"${extra[@]}"}
    "$dir/bin/python" - <<PY
import importlib.util, torch, transformers, trl, accelerate, datasets
peft = importlib.util.find_spec("peft") and __import__("peft")
print(f"  trl {trl.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, datasets {datasets.__version__}, torch {torch.__version__}, "
      f"peft {peft.__version__ if peft else '-'}")
assert torch.__version__.split("+")[0] == "$TORCH_VERSION", torch.__version__
PY
    "$dir/bin/python" -m pip freeze >"$dir/freeze.txt"
}

wanted() { [[ " $VENVS " == *" $1 "* ]]; }
# vaderSentiment: the realistic workload's reward (this project's reward=sentiment)
wanted trl && make_venv "$HERE/.venv-trl" "$TRL_CURRENT" "peft==$PEFT_VERSION" vaderSentiment==3.3.2
wanted trl-ppo && make_venv "$HERE/.venv-trl-ppo" "$TRL_PPO" "peft==$PEFT_VERSION" vaderSentiment==3.3.2
# rich: imported by trl 0.11's trainer utilities without being declared
if wanted trl-ppo-classic; then
    make_venv "$HERE/.venv-trl-ppo-classic" "$TRL_PPO_CLASSIC" "transformers==4.46.3" rich
fi
