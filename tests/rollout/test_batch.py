"""RolloutBatch layout and methods, stop-token truncation and query padding on literal tensors."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.rollout import RolloutBatch, encode_prompts, left_pad, truncate_at_stop

T, F = True, False


def make_batch() -> RolloutBatch:
    # Row b has query tokens 10b.. and response tokens 100b..; row 1 stopped at 2 (stop id).
    return RolloutBatch(
        query_ids=torch.tensor([[0, 10, 11], [9, 9, 20], [9, 30, 31]]),
        query_mask=torch.tensor([[T, T, T], [F, F, T], [F, T, T]]),
        response_ids=torch.tensor([[100, 101], [2, 9], [300, 301]]),
        response_mask=torch.tensor([[T, T], [T, F], [T, T]]),
        contains_stop=torch.tensor([F, T, F]),
        prompts=["p0", "p1", "p2"],
        completions=["c0", "c1", "c2"],
    )


def test_full_sequence_properties():
    batch = make_batch()
    assert batch.context_length == 3
    assert len(batch) == 3
    assert batch.input_ids.tolist()[1] == [9, 9, 20, 2, 9]
    assert batch.attention_mask.tolist()[1] == [F, F, T, T, F]
    assert batch.attention_mask.dtype == torch.bool
    assert batch.response_lengths.tolist() == [2, 1, 2]


def test_select_keeps_rows_aligned():
    picked = make_batch().select([2, 0])
    assert picked.prompts == ["p2", "p0"]
    assert picked.completions == ["c2", "c0"]
    assert picked.query_ids[:, -1].tolist() == [31, 11]
    assert picked.response_ids[:, 0].tolist() == [300, 100]
    assert picked.contains_stop.tolist() == [F, F]
    by_mask = make_batch().select(torch.tensor([F, T, F]))
    assert by_mask.prompts == ["p1"] and by_mask.contains_stop.tolist() == [T]


def test_repeat_interleave_is_prompt_major():
    batch = make_batch()
    batch.logprobs = torch.tensor([[-1.0, -2.0], [-3.0, 0.0], [-5.0, -6.0]])
    grouped = batch.repeat_interleave(2)
    # ALGORITHMS.md §4 GRPO / §5.10: copies of one query are contiguous.
    assert grouped.prompts == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert grouped.query_ids[:, -1].tolist() == [11, 11, 20, 20, 31, 31]
    assert grouped.logprobs[:, 0].tolist() == [-1.0, -1.0, -3.0, -3.0, -5.0, -5.0]
    assert grouped.response_mask.sum(1).tolist() == [2, 2, 1, 1, 2, 2]


def test_split_into_minibatches():
    parts = make_batch().split(2)
    assert [p.prompts for p in parts] == [["p0", "p1"], ["p2"]]
    assert parts[1].query_ids.tolist() == [[9, 30, 31]]


def test_to_returns_a_copy_on_the_device():
    batch = make_batch()
    moved = batch.to("cpu")
    assert moved is not batch
    assert torch.equal(moved.input_ids, batch.input_ids)
    moved.prompts[0] = "changed"
    assert batch.prompts[0] == "p0"


def test_rejects_int_masks_and_mismatched_rows():
    fields = make_batch().__dict__
    with pytest.raises(TypeError, match="bool"):
        RolloutBatch(**{**fields, "response_mask": fields["response_mask"].long()})
    with pytest.raises(ValueError, match="B entries"):
        RolloutBatch(**{**fields, "prompts": ["p0"]})


def test_truncate_keeps_the_first_stop_and_pads_the_rest():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [3, 6, 4, 4], [2, 2, 2, 2]])
    cut = truncate_at_stop(ids, stop_token_ids=[2, 3], pad_token_id=0)
    assert cut.response_ids.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [3, 0, 0, 0], [2, 0, 0, 0]]
    assert cut.response_mask.tolist() == [[T, T, F, F], [T, T, T, T], [T, F, F, F], [T, F, F, F]]
    assert cut.contains_stop.tolist() == [T, F, T, T]


def test_truncate_with_pad_equal_to_stop():
    # pad == eos (§5.6): the mask comes from the stop position, so the EOS stays in the mask.
    cut = truncate_at_stop(torch.tensor([[4, 0, 0, 9]]), stop_token_ids=[0], pad_token_id=0)
    assert cut.response_ids.tolist() == [[4, 0, 0, 0]]
    assert cut.response_mask.tolist() == [[T, T, F, F]]


def test_left_pad():
    ids, mask = left_pad([[7, 8, 9], [5]], pad_id=1)
    assert ids.tolist() == [[7, 8, 9], [1, 1, 5]]
    assert mask.tolist() == [[T, T, T], [F, F, T]]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[7], []], pad_id=1)


def test_encode_prompts_prepends_bos_once(demo_tokenizer):
    bos = demo_tokenizer.bos_token_id
    plain = demo_tokenizer("Great", add_special_tokens=False)["input_ids"]
    with_bos = demo_tokenizer.decode([bos]) + "Great"
    rows = encode_prompts(demo_tokenizer, ["Great", "", with_bos])
    assert rows == [[bos, *plain], [bos], [bos, *plain]]
    assert encode_prompts(demo_tokenizer, ["Great", ""], prepend_bos=False) == [plain, [bos]]
