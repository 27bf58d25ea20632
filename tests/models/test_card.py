"""Model cards: every export writes a README.md in the Hugging Face format; a run's says what
trained it, on what, with which settings and final metrics, and how to run it again."""

from __future__ import annotations

import json

from datasets import Dataset
from huggingface_hub import ModelCard as HubCard
from transformers import AutoConfig, AutoModelForSequenceClassification

from rlhf_lightning import api
from rlhf_lightning.models import ModelCard, card_for_model, write_model_card
from rlhf_lightning.rundir import redact_override

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "report=false"]


def test_card_header_is_hub_metadata_and_body_has_the_facts(tmp_path):
    card = ModelCard(
        base_model="HuggingFaceTB/SmolLM2-135M",
        stage="dpo",
        trained_by="DPOModule",
        datasets=["trl-lib/ultrafeedback_binarized", str(tmp_path)],
        config={"stage.beta": 0.1},
        metrics={"val/accuracy": 0.75},
        command="python -m rlhf_lightning stage=dpo",
    )
    loaded = HubCard.load(write_model_card(tmp_path, card, "dpo: run"))
    assert loaded.data.base_model == "HuggingFaceTB/SmolLM2-135M"
    assert loaded.data.library_name == "transformers"
    assert loaded.data.pipeline_tag == "text-generation"
    assert loaded.data.tags == ["rlhf_lightning", "dpo"]
    # a local path is no Hub dataset: named in the body only
    assert loaded.data.datasets == ["trl-lib/ultrafeedback_binarized"]
    assert str(tmp_path) in loaded.text
    for fact in (
        "# dpo: run",
        "`DPOModule`",
        "| `stage.beta` | `0.1` |",
        "| `val/accuracy` | 0.75 |",
    ):
        assert fact in loaded.text, fact
    assert "```bash\npython -m rlhf_lightning stage=dpo\n```" in loaded.text


def test_a_local_base_model_stays_out_of_the_header(tmp_path):
    header = ModelCard(base_model=str(tmp_path)).header()
    assert "base_model" not in header and header["library_name"] == "transformers"


def test_card_for_a_reward_model_object():
    config = AutoConfig.for_model("gpt2", n_layer=1, n_head=2, n_embd=16, num_labels=1)
    card = card_for_model(AutoModelForSequenceClassification.from_config(config))
    assert card.kind == "reward" and card.header()["pipeline_tag"] == "text-classification"
    assert "ModelReward.from_pretrained" in card.render()


def test_credentials_in_overrides_never_reach_the_card():
    assert redact_override("reward.api_key=s3cret") == "reward.api_key=***"
    assert redact_override("+reward.headers.Authorization=Bearer x") == (
        "+reward.headers.Authorization=***"
    )
    assert redact_override("data.max_length=64") == "data.max_length=64"


def test_lora_sft_run_writes_full_cards_and_samples_from_its_data(tmp_path):
    ds = Dataset.from_dict(
        {"question": [f"What is {i}+{i}?" for i in range(40)], "answer": [" ok"] * 40}
    )
    result = api.sft(
        "tiny",
        ds,
        prompt_field="question",
        completion_field="answer",
        max_steps=2,
        lora=True,
        output_dir=tmp_path / "run",
        overrides=[*QUIET, "model.lora.r=4", "model.lora.merge_on_export=true"],
    )
    text = (result.model_dir / "README.md").read_text()
    # peft's empty template is replaced
    assert "More Information Needed" not in text
    card = HubCard.load(result.model_dir / "README.md")
    assert card.data.library_name == "peft" and card.data.tags == ["rlhf_lightning", "sft", "lora"]
    assert "trained with the `sft` stage (`SFTModule`)" in text
    assert "randomly initialised weights (gpt2" in text and "in-memory `datasets.Dataset`" in text
    assert "| `model.lora.r` | `4` |" in text and "| `trainer.max_steps` | `2` |" in text
    assert f"| `val/loss` | {result.metrics['val/loss']:.4g} |" in text
    assert "python -m rlhf_lightning stage=sft model=tiny data.columns.prompt=question" in text
    merged = (result.model_dir / "merged" / "README.md").read_text()
    assert "library_name: transformers" in merged and "merged into these full weights" in merged
    # the samples after training answer the data's own prompts, not the demo's openings
    rows = [
        json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()
    ]
    assert rows and all(row["prompt"] in ds["question"] for row in rows)
