import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import EmptyEvaluationSetError
from lca_core.evaluation_data import check_evaluation_data, infer_num_classes, pad_chunks


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
