import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import EmptyEvaluationSetError
from lca_core.backend_kit.base import BackendBase
from lca_core.backend_kit.evaluation_data import (
    check_evaluation_data,
    check_finite_inputs,
    infer_num_classes,
    pad_chunks,
)
from lca_core.errors import EvaluationDataError


@given(st.integers(1, 60), st.integers(1, 16), st.integers(1, 5), st.integers(0, 10**6))
def test_padded_chunks_hold_every_example_once_with_weight_one_over_n(n, batch, groups, seed):
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.float64)[:, None]
    y = rng.integers(0, groups, size=n)
    chunks = pad_chunks(x, y, batch, y, groups)
    assert chunks.xs.shape[1] == batch and chunks.ws.shape == chunks.xs.shape[:2]
    assert chunks.ws.sum() == pytest.approx(1.0, rel=1e-6)
    real = chunks.ws > 0
    np.testing.assert_array_equal(np.sort(chunks.xs[real][:, 0]), x[:, 0])  # each once
    for xs, ys, g in zip(chunks.xs, chunks.ys, chunks.group, strict=True):
        assert np.all(ys == g)  # class-pure chunks: per-class gradients in one pass
        assert np.isin(xs[:, 0], x[y == g, 0]).all()


def test_checks_and_class_inference():
    with pytest.raises(EmptyEvaluationSetError, match="validation set is empty"):
        check_evaluation_data((np.zeros((0, 2)), np.zeros(0)), "validation")
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        check_evaluation_data((np.zeros((3, 2)), np.zeros(2)))
    assert infer_num_classes(np.array([0, 4, 2])) == 5
    assert infer_num_classes(np.array([0.5, 1.0])) is None
    assert infer_num_classes(np.eye(3, dtype=int)) is None


class _Held(BackendBase):
    """The kit alone, over array sets: what JAX and Keras backends stream from."""

    def __init__(self, x, y, resident_bytes):
        self.hold_sets({"train": (x, y)}, y)
        self.resident_bytes = resident_bytes


@given(
    n=st.integers(1, 90),
    batch=st.integers(1, 16),
    per_class=st.booleans(),
    budget_chunks=st.integers(0, 5),
    seed=st.integers(0, 99),
)
def test_streamed_blocks_are_the_held_chunks_in_bounded_pieces(
    n, batch, per_class, budget_chunks, seed
):
    """Concatenated, the blocks are exactly the chunks of the held set (same examples,
    padding, weights 1/N and groups); each block is at most the budget (or one chunk)."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 4, n)
    example = x[:1].nbytes + y[:1].nbytes
    kit = _Held(x, y, resident_bytes=budget_chunks * batch * example)
    held = kit.padded("train", per_class, batch)
    blocks = list(kit.blocks("train", per_class, batch))
    assert kit.streamed("train") == (x.nbytes + y.nbytes > kit.resident_bytes)
    for name in ("xs", "ys", "ws", "group"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(b, name) for b in blocks]), getattr(held, name)
        )
    chunk = held.xs.shape[1]
    most = max(1, budget_chunks * batch // chunk) if budget_chunks else 1
    assert all(len(b.xs) <= most for b in blocks)


def test_a_memory_map_is_checked_for_nan_in_bounded_pieces(tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(50, 4))
    x[:] = 1.0
    x[37, 2] = np.nan
    with pytest.raises(EvaluationDataError, match="1 examples, the first at index 37"):
        check_finite_inputs(x, rows=8)
