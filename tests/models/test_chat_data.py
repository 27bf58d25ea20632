"""Chat-formatted data (data.chat=true) on SmolLM2's template, whose turn end is its EOS."""

from __future__ import annotations

import datasets


def test_chat_rows_on_a_template_whose_turn_end_is_eos_end_once(smollm_tokenizer):
    """SmolLM2's EOS is its <|im_end|>: an answer turn ends with it once, not twice."""
    from rlhf_lightning.data import PreferenceDataModule

    rows = datasets.Dataset.from_dict(
        {"prompt": ["2+2?"] * 10, "chosen": ["4"] * 10, "rejected": ["5"] * 10}
    )
    pairs = PreferenceDataModule(smollm_tokenizer, chat=True, dataset=rows, val_fraction=0.0)
    pairs.setup()
    text = smollm_tokenizer.decode(pairs.train_dataset[0]["chosen_input_ids"])
    assert text.endswith("assistant\n4<|im_end|>\n") and text.count("<|im_end|>") == 3


def test_sft_chat_rows_train_on_the_answer_turn_only(smollm_tokenizer):
    from rlhf_lightning.data import SFTDataModule

    rows = datasets.Dataset.from_dict({"prompt": ["2+2?"] * 10, "completion": ["4"] * 10})
    sft = SFTDataModule(smollm_tokenizer, chat=True, dataset=rows, val_fraction=0.0)
    sft.setup()
    row = sft.train_dataset[0]
    targets = [t for t, m in zip(row["input_ids"], row["loss_mask"], strict=True) if m]
    assert smollm_tokenizer.decode(targets).startswith("4<|im_end|>")
    assert "2+2?" in smollm_tokenizer.decode(row["input_ids"])
