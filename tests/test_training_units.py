"""The training loop's parts, with expectations computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from records.errors import InterpError
from trainers.training.batching import Tokenized, epoch_order, make_batch, pad
from trainers.training.evaluate import gold_ranks, mrr, top_k
from trainers.training.loop import TrainConfig, contrastive_loss
from trainers.training.runs import check_run_name


def tokenized(n: int) -> Tokenized:
    return Tokenized([[0, 5] for _ in range(n)], [[0] + [7] * (1 + i % 9) for i in range(n)], pad_id=1)


def test_pad_pads_to_longest_and_masks():
    ids, mask = pad([[0, 5, 2], [0, 2]], pad_id=1)
    assert ids.tolist() == [[0, 5, 2], [0, 2, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    ids, _ = pad([[0, 2]], pad_id=1, to=4)
    assert ids.tolist() == [[0, 2, 1, 1]]


@pytest.mark.parametrize("n, batch", [(100, 16), (37, 4), (16, 16)])
def test_epoch_order_is_a_deterministic_partition(n, batch):
    tok = tokenized(n)
    order = epoch_order(tok, batch, seed=3, epoch=1)
    assert order == epoch_order(tok, batch, seed=3, epoch=1)
    assert order != epoch_order(tok, batch, seed=3, epoch=2) or n == batch
    flat = [i for b in order for i in b]
    assert len(flat) == len(set(flat)) == (n // batch) * batch
    assert all(len(b) == batch for b in order)


@pytest.mark.parametrize("batching", ["random", "bucketed"])
def test_random_and_bucketed_pad_less_than_codexglue(batching):
    tok = tokenized(400)
    padded = lambda batching: sum(make_batch(tok, b, batching, max_len=16).code.padded_tokens  # noqa: E731
                                  for b in epoch_order(tok, 8, 0, 0, batching))
    assert padded(batching) < padded("codexglue")


@pytest.mark.parametrize("ties, expected", [("codexglue", [2, 3, 1]), ("optimistic", [2, 2, 1])])
def test_gold_ranks_by_hand(ties, expected):
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    # scores: q0 -> [1, 2, 0] gold 1 -> rank 2; q2 -> [1, 2, 3] gold 3 -> rank 1;
    # q1 -> [0, 0, 3] gold 0, tied with code 1: rank 3 counting ties against the query (CodeXGLUE), 2 for it
    ranks = gold_ranks(q, c, chunk=2, ties=ties)
    assert ranks.tolist() == expected
    assert mrr(ranks) == pytest.approx(sum(1 / r for r in expected) / 3)
    best = top_k(q, c, 2)
    assert best[:, 0].tolist() == [1, 2, 2]  # q1's second place is a tie
    assert best[0, 1] == 0 and best[2, 1] == 1


def test_contrastive_loss_matches_eq_4_1():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    c = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # logits = [[3, 1], [0, 2]]; loss = mean(-log softmax row i at i)
    expected = (-(3 - math.log(math.exp(3) + math.exp(1))) - (2 - math.log(1 + math.exp(2)))) / 2
    assert contrastive_loss(q, c).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"batch_size": 1}, "batch_size"), ({"lr": 0}, "lr"), ({"warmup_frac": 1.0}, "warmup_frac"),
     ({"epochs": 0}, "epochs"), ({"max_steps": 0}, "max_steps"), ({"evals_per_epoch": 0}, "evals_per_epoch")],
)
def test_train_config_names_the_bad_field(kwargs, field):
    with pytest.raises(InterpError, match=field):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "size, kwargs, expected",
    [(160, {"batch_size": 16, "epochs": 2, "evals_per_epoch": 10}, (10, 20, 1)),
     (1600, {"batch_size": 16, "epochs": 2, "evals_per_epoch": 10}, (100, 200, 10)),
     (1600, {"batch_size": 16, "epochs": 2, "evals_per_epoch": 10, "max_steps": 30}, (100, 30, 3))],
)
def test_schedule(size, kwargs, expected):
    assert TrainConfig(**kwargs).schedule(size) == expected


@pytest.mark.parametrize("name", ["lora64", "loFF_9-12", "a.b+c"])
def test_run_names_allowed(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", "", "-x", "base", "data"])
def test_run_names_refused(name):
    with pytest.raises(InterpError):
        check_run_name(name)
