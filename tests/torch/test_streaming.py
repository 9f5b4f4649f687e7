"""An evaluation set larger than ``resident_bytes`` is streamed at every pass: the same LCA
as when it is held on the device, with at most a chunk or two alive at any time."""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np
import pytest
import torch
from lca_torch import TorchBackend, Tracker
from lca_torch.evaluation_sets import Streamed
from torch import nn

N, BATCH = 512, 64


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(6, 12), bn=nn.BatchNorm1d(12), relu=nn.ReLU(), fc2=nn.Linear(12, 3)
        )
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _train(data, **options) -> list:
    """Six SGD steps with a tracker; the per-step results."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    tracker = Tracker(model, nn.CrossEntropyLoss(), data, batch_size=BATCH, **options)
    x, y = _data()
    results = []
    for step in range(6):
        idx = slice(step * 32, step * 32 + 32)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        with tracker.step():
            opt.step()
        results.append(tracker.last)
    tracker.close()
    return [tracker.backend, *results]


def test_tensors_already_on_the_device_are_held_as_views_whatever_their_size():
    x, y = _data()
    backend = TorchBackend(_model(), nn.CrossEntropyLoss(), (x, y), resident_bytes=1)
    assert not isinstance(backend.sets["train"], Streamed)
    assert backend.sets["train"][0][0].data_ptr() == x.data_ptr()  # no copy


def test_a_streamed_set_gives_the_lca_of_the_resident_one():
    x, y = _data()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    held, *expected = _train(data)
    streamed, *got = _train(data, resident_bytes=N * 6 * 4 // 3)  # a third of the inputs fits
    assert isinstance(list(held.sets["train"]), list) and not isinstance(
        held.sets["train"], Streamed
    )
    assert isinstance(streamed.sets["train"], Streamed)
    assert streamed.policy()["streamed"] and not held.policy()["streamed"]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a.lca, b.lca)  # the same chunks: bit-identical
        assert a.residual == b.residual and a.panels == b.panels


class _Generated(torch.utils.data.Dataset):
    """Examples made on demand: the whole set never exists at once."""

    def __len__(self) -> int:
        return 20 * BATCH

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(6, generator=torch.Generator().manual_seed(i))
        return x, (x[0] > 0).long()


def test_a_streamed_pass_holds_a_bounded_number_of_chunks():
    alive: list[weakref.ref] = []
    peak = [0]

    def collate(batch):
        xs, ys = torch.utils.data.default_collate(batch)
        peak[0] = max(peak[0], sum(r() is not None for r in alive) + 1)
        alive.append(weakref.ref(xs))
        return xs, ys

    loader = torch.utils.data.DataLoader(_Generated(), batch_size=BATCH, collate_fn=collate)
    backend = TorchBackend(_model(), nn.CrossEntropyLoss(), loader, resident_bytes=4 * BATCH * 6)
    assert isinstance(backend.sets["train"], Streamed) and backend.sets["train"].total == 20 * BATCH
    alive.clear()
    peak[0] = 0
    theta = backend.snapshot().theta
    backend.evaluate([theta, theta * 0.5])
    assert len(alive) == 2 * 20  # every chunk read at each of the two points
    assert peak[0] <= 3  # the chunk in use, the next one, and the first (kept for the trial)


def test_what_a_streamed_set_cannot_do_yet_is_refused_clearly():
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    with pytest.raises(ValueError, match=r"streamed \(it is larger than resident_bytes\)"):
        _train(loader, resident_bytes=1, per_class=True)
    with pytest.raises(ValueError, match="eval_subset needs the evaluation set on the device"):
        _train(loader, resident_bytes=1, eval_subset=0.5)


@pytest.mark.parametrize("hint", [None, 4, 9, 20])
def test_labels_are_collected_in_order_whatever_the_length_hint(hint):
    from lca_torch.evaluation_sets import _Labels

    labels = _Labels(hint)
    parts = [torch.arange(0, 3), torch.arange(3, 7), torch.arange(7, 9)]
    for y in parts:
        labels.add(y)
    np.testing.assert_array_equal(labels.array(), np.arange(9))
