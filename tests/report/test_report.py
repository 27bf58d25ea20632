"""write_report on synthetic SFT, reward and PPO run directories: plots, page, missing files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.report import write_report
from rlhf_lightning.report.samples import before_after

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pages(runs: dict[str, Path]) -> dict[str, Path]:
    return {kind: write_report(run_dir) for kind, run_dir in runs.items()}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize(
    ("kind", "expected", "absent"),
    [
        ("sft", {"losses.png", "perplexity.png"}, {"reward_kl.png", "accuracy.png"}),
        ("reward", {"losses.png", "accuracy.png"}, {"reward_kl.png", "perplexity.png"}),
        (
            "ppo",
            {"losses.png", "reward_kl.png", "response_length.png"},
            {"accuracy.png", "perplexity.png"},
        ),
    ],
)
def test_each_stage_gets_the_figures_of_the_metrics_it_logged(pages, kind, expected, absent):
    report_dir = pages[kind].parent
    written = {p.name for p in report_dir.glob("*.png")}
    assert expected <= written
    assert not (absent & written)
    for name in expected:
        width, height = png_size(report_dir / name)
        # ~150 dpi on a figure several inches wide; a blank canvas compresses to far less.
        assert width >= 900 and height >= 500, (name, width, height)
        assert (report_dir / name).stat().st_size > 20_000, name


def test_page_is_written_beside_the_plots_and_names_them(pages):
    page = pages["ppo"]
    assert page.name == "index.html" and page.parent.name == "report"
    text = page.read_text()
    for name in ("losses.png", "reward_kl.png", "response_length.png"):
        assert f'src="{name}"' in text


def test_page_shows_stage_wall_time_and_final_metrics(pages, runs):
    text = pages["ppo"].read_text()
    assert "Run report: ppo" in text
    assert str(runs["ppo"]) in text
    assert "1:02:05" in text  # wall_s = 3725
    final = json.loads((runs["ppo"] / "metrics.json").read_text())["metrics"]
    assert "<td>rollout/reward_mean</td>" in text
    assert f'<td class="num">{final["rollout/reward_mean"]:.4g}</td>' in text
    assert "<td>train/value_loss</td>" in text


def test_before_after_samples_pair_the_same_prompt_and_are_escaped(pages):
    text = pages["ppo"].read_text()
    assert "<script>" not in text and "<b>hi</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Say &lt;b&gt;hi&lt;/b&gt;" in text
    assert "meh &amp; so on" in text
    # The row of "Rate the film" holds its step-0 and its step-35 completions.
    row = next(r for r in text.split("<tr>") if "Rate the film" in r)
    assert "meh &amp; so on" in row and "eeee excellent" in row and "2.75 (KL 3.5)" in row
    assert "not shown" not in text  # a middle step is neither before nor after
    assert "step 0" in text and "step 35" in text


def test_reference_comparison_is_its_own_table_and_not_a_training_step(pages):
    text = pages["ppo"].read_text()
    assert "Reference vs trained policy" in text
    row = next(r for r in text.split("<tr>") if "Name a colour" in r)
    cells = [c.split(">", 1)[1] for c in row.split("</td>")[:5]]
    # Control characters from the model are replaced: invalid in HTML.
    assert cells == ["Name a colour", "grey", "0.25", "green\ufffd", "0.75"]
    assert "0.25 (reference) → 0.75 (trained)" in text
    # Step 40 holds only comparison rows: the training table still ends at step 35.
    assert "step 40</th>" not in text


def test_sft_and_reward_pages_have_no_sample_section(pages):
    for kind in ("sft", "reward"):
        assert "Samples: before and after" not in pages[kind].read_text()


def test_unmatched_prompts_fall_back_to_first_n_of_each_step():
    samples = [{"step": 1, "prompt": f"a{i}", "completion": "x", "reward": i} for i in range(5)]
    samples += [{"step": 9, "prompt": f"b{i}", "completion": "y", "reward": 1} for i in range(5)]
    ba = before_after(samples, max_rows=3)
    assert not ba.matched
    assert [(p.before["prompt"], p.after["prompt"]) for p in ba.pairs] == [
        ("a0", "b0"),
        ("a1", "b1"),
        ("a2", "b2"),
    ]
    assert ba.mean_reward_first == 2.0 and ba.mean_reward_last == 1.0


def test_groups_of_one_prompt_pair_kth_with_kth_distinct_prompts_first():
    # GRPO logs G completions per prompt; pairs take every prompt's first before any second.
    first = [{"step": 0, "prompt": p, "completion": f"{p}{k}"} for p in "AB" for k in range(2)]
    last = [{"step": 5, "prompt": p, "completion": f"{p}{k}'"} for p in "BA" for k in range(2)]
    ba = before_after(first + last)
    assert ba.matched
    got = [(p.before["completion"], p.after["completion"]) for p in ba.pairs]
    assert got == [("A0", "A0'"), ("B0", "B0'"), ("A1", "A1'"), ("B1", "B1'")]


def test_missing_and_broken_files_are_listed_on_the_page(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("stage:\n  name: grpo\n")
    (run / "metrics.csv").write_text("")
    (run / "samples.jsonl").write_text('{"step": 1, "prompt": "p", "completion": "c"}\nnot json\n')
    (run / "report").mkdir()
    (run / "report" / "losses.png").write_bytes(b"stale")  # from an earlier report
    text = write_report(run).read_text()
    assert "Run report: grpo" in text
    assert "metrics.csv is empty" in text
    assert "metrics.json is missing" in text
    assert "samples.jsonl: 1 line(s) skipped" in text
    assert "No plotted metrics were logged" in text
    assert not list((run / "report").glob("*.png"))


def test_rl_run_without_samples_says_so(tmp_path, make_run):
    # kl_coef alone is not plotted: this test needs no figure drawn.
    run = make_run(tmp_path / "run", "ppo", [{"step": 0, "kl_coef": 0.1}])
    text = write_report(run).read_text()
    assert "samples.jsonl is missing" in text


def test_markdown_page_escapes_table_cells(tmp_path, make_run, ppo_samples):
    ppo_samples[-1]["completion"] = "hello | there\nfriend"  # would split a cell and a row
    rows = [{"step": s, "rollout/reward_mean": 0.1 * s, "rollout/kl": 0.5} for s in range(3)]
    run = make_run(tmp_path / "run", "ppo", rows, samples=ppo_samples)
    page = write_report(run, fmt="md")
    text = page.read_text()
    assert page.name == "index.md"
    assert "![Reward and KL to the reference](reward_kl.png)" in text
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "| rollout/reward_mean" in text
    assert "hello \\| there<br>friend" in text


@pytest.mark.parametrize("make", [lambda p: p / "absent", lambda p: p])
def test_not_a_run_directory_is_a_config_error(tmp_path, make):
    with pytest.raises(ConfigError, match="Fix:"):
        write_report(make(tmp_path))


def test_report_leaves_pyplot_alone(pages):
    # The report runs inside the training process: pyplot-made figures would pile up there.
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []
