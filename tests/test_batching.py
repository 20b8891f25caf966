"""How training batches are drawn and encoded: random negatives, length-sorted micro-batches, one gradient.

The negatives are decided by which pairs share a loss; the micro-batches only decide which
share a forward pass. So a random batch encoded in micro-batches must give the loss and the
gradient of one padded pass over the whole batch (checked in fp32 with dropout off), while its
codes keep the spread of lengths that random sampling gives (bucketed batches do not).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from trainers import methods
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.training.batching import (
    BATCHINGS, Tokenized, code_length_ranges, embed_side, epoch_order, make_batch, median_code_length_range, micro_batches,
    shard_groups,
)
from trainers.training.loop import contrastive_loss
from trainers.training.splits import tokenize_examples


def padded_cost(lengths, groups, call_cost):
    return sum(len(g) * max(lengths[i] for i in g) + call_cost for g in groups)


def brute_force(lengths, call_cost=0, groups=None):
    """The cheapest cut of the length-sorted positions, trying every set of cut points."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n, best = len(order), None
    for k in range(1, n + 1) if groups is None else [groups]:
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = [0, *cuts, n]
            cut = [order[a:b] for a, b in zip(bounds, bounds[1:])]
            if best is None or padded_cost(lengths, cut, call_cost) < padded_cost(lengths, best, call_cost):
                best = cut
    return best


@pytest.mark.parametrize(
    "lengths, call_cost, groups, expected",
    [
        ([5, 100, 7, 120, 9, 6, 250, 30], 256, None, [[0, 5, 2, 4, 7], [1, 3], [6]]),  # short, long, longest
        ([5, 100, 7, 120, 9, 6, 250, 30], 10**6, None, [[0, 5, 2, 4, 7, 1, 3, 6]]),  # calls dear: one pass
        ([5, 100, 7, 120, 9, 6, 250, 30], 0, 2, [[0, 5, 2, 4, 7], [1, 3, 6]]),  # 5 x 30 + 3 x 250
        ([5, 100, 7, 120, 9, 6, 250, 30], 10**6, 8, [[0], [5], [2], [4], [7], [1], [3], [6]]),
        ([12, 12, 12, 12], 1, None, [[0, 1, 2, 3]]),
        ([3], 256, 1, [[0]]),
    ],
)
def test_micro_batches_by_hand(lengths, call_cost, groups, expected):
    assert micro_batches(lengths, call_cost, groups) == expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("call_cost, groups", [(0, None), (40, None), (300, None), (0, 1), (0, 3)])
def test_micro_batches_are_the_cheapest_cut(seed, call_cost, groups):
    lengths = [int(x) for x in torch.randint(3, 257, (8,), generator=torch.Generator().manual_seed(seed))]
    got = micro_batches(lengths, call_cost, groups)
    assert sorted(i for g in got for i in g) == list(range(8))
    assert padded_cost(lengths, got, call_cost) == padded_cost(lengths, brute_force(lengths, call_cost, groups), call_cost)
    assert groups is None or len(got) == groups


def test_micro_batches_refuse_an_impossible_count():
    with pytest.raises(ValueError, match="`groups` should be in"):
        micro_batches([1, 2], groups=3)


@pytest.mark.parametrize("world", [2, 4])
def test_every_process_makes_the_same_number_of_calls(world):
    """Under DDP a forward call is a collective: processes with short and long slices still cut alike."""
    lengths = [4] * 8 + [50, 90, 130, 170, 210, 250, 256, 256]  # process 0 short only, the last long only
    cuts = [shard_groups(lengths, rank, world, call_cost=20) for rank in range(world)]
    assert len({len(c) for c in cuts}) == 1
    assert len(cuts[0]) == max(len(micro_batches(lengths[r * 16 // world : (r + 1) * 16 // world], 20)) for r in range(world))
    for c in cuts:
        assert sorted(i for g in c for i in g) == list(range(16 // world))


def tokenized(code_lengths: list[int]) -> Tokenized:
    return Tokenized([[0] + [5] * (1 + i % 3) + [2] for i in range(len(code_lengths))], [[0] + [7] * (n - 2) + [2] for n in code_lengths], pad_id=1)


def test_a_random_batch_comes_back_in_batch_order():
    tok = tokenized([40, 3, 250, 12, 90, 5, 180, 7])
    index = [6, 0, 3, 7, 2, 5, 1, 4]
    batch = make_batch(tok, index, "random", call_cost=16)
    assert len(batch.code.parts) > 1  # it was cut
    for side, ids in ((batch.query, tok.query_ids), (batch.code, tok.code_ids)):
        rows = [[t for t, m in zip(r, mr) if m] for part, mask in side.parts for r, mr in zip(part.tolist(), mask.tolist())]
        assert [rows[r] for r in side.restore.tolist()] == [ids[i] for i in index]  # row restore[p] holds pair p
        for part, mask in side.parts:
            assert mask.sum(1).max() == part.shape[1]  # each part padded only to its own longest
    assert make_batch(tok, index, "codexglue", max_len=256).code.parts[0][0].shape == (8, 256)
    assert len(make_batch(tok, index, "bucketed").code.parts) == 1


def test_random_and_codexglue_draw_the_same_batches_bucketed_others():
    tok = tokenized([3 + (i * 37) % 250 for i in range(200)])
    assert epoch_order(tok, 8, 1, 0, "random") == epoch_order(tok, 8, 1, 0, "codexglue")
    assert epoch_order(tok, 8, 1, 0, "random") != epoch_order(tok, 8, 1, 0, "bucketed")
    assert set(BATCHINGS) == {"random", "bucketed", "codexglue"}
    with pytest.raises(ValueError, match="`batching` should be one of"):
        epoch_order(tok, 8, 1, 0, "sorted")


@pytest.fixture(scope="module")
def mined_train(mined_data, tiny_roberta_dir) -> Tokenized:
    return tokenize_examples(load_encoder(str(tiny_roberta_dir)), load_split(mined_data, "train"), 128)


def test_random_batches_mix_code_lengths_bucketed_ones_match_them(mined_train):
    """Real mined pairs: the issue's measure of batch composition (default data, 8,000 pairs: 237 vs 3 tokens)."""
    random_ = median_code_length_range(mined_train, epoch_order(mined_train, 16, 0, 0, "random"))
    bucketed = median_code_length_range(mined_train, epoch_order(mined_train, 16, 0, 0, "bucketed"))
    assert bucketed <= 0.2 * random_
    assert random_ >= 40
    assert code_length_ranges(mined_train, [[0, 1]]) == [abs(len(mined_train.code_ids[0]) - len(mined_train.code_ids[1]))]


def test_micro_batches_give_the_gradient_of_one_padded_pass(mined_data):
    """fp32, dropout off: the loss and every gradient of a micro-batched random batch equal those of one pass
    padded to the batch's longest, within 1e-5 (MiniLM, every weight trained: gradients up to about 0.5).

    The real MiniLM, not the tiny random RoBERTa: its near-identical embeddings give a near-uniform
    softmax whose gradient is a cancellation, so float noise would be most of it.
    """
    encoder = load_encoder()  # a fresh one: the method goes into the model
    train = tokenize_examples(encoder, load_split(mined_data, "train"), 128)
    model = methods.apply_method(encoder, methods.FullConfig())
    model.eval()  # dropout off; gradients still flow
    index = epoch_order(train, 16, 0, 0, "random")[0]

    def loss_and_grads(batching):
        batch = make_batch(train, index, batching, max_len=128, call_cost=16)
        embed = lambda ids, mask: encoder.embed(ids, mask, model=model)  # noqa: E731
        model.zero_grad(set_to_none=True)
        loss = contrastive_loss(embed_side(embed, batch.query), embed_side(embed, batch.code))
        loss.backward()
        return batch, loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    micro, loss_micro, grads_micro = loss_and_grads("random")
    one, loss_one, grads_one = loss_and_grads("bucketed")  # the same pairs in one pass per side
    assert len(micro.code.parts) > 1 and len(one.code.parts) == 1
    assert micro.code.padded_tokens < one.code.padded_tokens
    assert loss_micro == pytest.approx(loss_one, abs=1e-5)
    assert grads_micro.keys() == grads_one.keys() and len(grads_one) > 50
    for name, grad in grads_one.items():
        torch.testing.assert_close(grads_micro[name], grad, rtol=0, atol=1e-5, msg=name)
    assert max(g.abs().max().item() for g in grads_one.values()) > 1e-2  # the comparison is not of near-zeros
