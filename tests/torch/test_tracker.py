import copy

import numpy as np
import pytest
import torch
from lca_torch import TorchBackend, Tracker
from torch import nn

from lca_core import (
    EmptyEvaluationSetError,
    open_run,
)
from lca_core.arrays import to_host
from tests.checks import assert_every_step_within_tol
from tests.torch.conftest import mlp, small_cnn, train

ce = nn.CrossEntropyLoss()


def state_of(model, opt=None):
    """Everything training could have changed, cloned."""
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out.update(
        {f"grad:{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    )
    out["training"] = [m.training for m in model.modules()]
    if opt is not None:
        out["opt"] = copy.deepcopy(opt.state_dict())
    return out


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif k == "opt":
            for i, sa in a[k]["state"].items():
                for name, v in sa.items():
                    assert torch.equal(v, b[k]["state"][i][name]), (i, name)
        else:
            assert a[k] == b[k], k


def test_mlp_training_residuals_within_tol_and_budget(digits, tmp_path):
    x, y, xv, yv = digits
    model = mlp()
    tracker = Tracker(
        model, ce, (x, y), tmp_path / "run", val_data=(xv, yv), per_class=True, store_params=True
    )
    train(model, tracker, x, y, steps=40)
    summary = tracker.close()
    run = open_run(tmp_path / "run")
    assert_every_step_within_tol(run)
    assert summary.budget_used < 0.01 and summary.loss_change < -0.3
    # per-class per-layer LCA adds up to the layer LCA
    np.testing.assert_allclose(run.array("class_layer_lca").sum(1), run.layer_lca, atol=1e-9)
    assert run.layers == ["fc1", "fc2", "fc3"]
    assert run.param_lca("fc1.weight").shape == (40, 32, 64)
    assert np.abs(run.array("val_residuals")).max() <= 1e-3


@pytest.mark.parametrize("bn_policy", ["batch", "running"])
def test_cnn_with_batchnorm(digits, tmp_path, bn_policy):
    x, y, _, _ = digits
    model = small_cnn()
    tracker = Tracker(model, ce, (x, y), tmp_path / "run", bn_policy=bn_policy, batch_size=200)
    train(model, tracker, x, y, steps=25, lr=0.05)
    summary = tracker.close()
    run = open_run(tmp_path / "run")
    assert_every_step_within_tol(run)  # ΔL = Σ LCA + residual + drift (buffers' share)
    assert summary.budget_used < 0.01
    assert run.metadata["policy"]["batchnorm"] == bn_policy
    if bn_policy == "batch":
        assert np.all(run.drift == 0)
    else:
        assert np.any(run.drift != 0)


def test_training_is_bit_identical_with_and_without_the_tracker(digits):
    x, y, _, _ = digits
    plain = small_cnn(seed=3, dropout=0.3)
    tracked = small_cnn(seed=3, dropout=0.3)
    torch.manual_seed(11)
    losses_a, opt_a = train(plain, None, x, y, steps=8)
    rng_a = torch.get_rng_state()
    torch.manual_seed(11)
    tracker = Tracker(tracked, ce, (x, y))
    losses_b, opt_b = train(tracked, tracker, x, y, steps=8)
    rng_b = torch.get_rng_state()
    tracker.close()
    assert losses_a == losses_b  # dropout masks drawn from the same RNG stream
    assert_same_state(state_of(plain, opt_a), state_of(tracked, opt_b))
    assert torch.equal(rng_a, rng_b)


def test_evaluation_restores_params_buffers_grads_flags_and_rng(digits):
    x, y, _, _ = digits
    model = small_cnn(dropout=0.5)
    model.train()
    model.fc.eval()  # a mixed pattern of flags must come back as it was
    nn.functional.cross_entropy(model(x[:50]), y[:50]).backward()
    before = state_of(model)
    rng = torch.get_rng_state()
    backend = TorchBackend(model, ce, (x, y), bn_policy="batch")
    theta = to_host(backend.snapshot().theta, np.float64)
    backend.evaluate([theta, theta + 0.01], per_class=True)
    assert_same_state(before, state_of(model))
    assert torch.equal(rng, torch.get_rng_state())


def test_frozen_parameters_and_dead_pixels_get_exactly_zero(digits, tmp_path):
    x, y, _, _ = digits
    model = mlp()
    model.fc2.weight.requires_grad_(False)  # frozen: not trainable, not in the layout
    never_updated = [p for n, p in model.named_parameters() if n != "fc3.bias"]
    tracker = Tracker(model, ce, (x, y), tmp_path / "run", store_params=True)
    train(model, tracker, x, y, steps=6, params=[p for p in never_updated if p.requires_grad])
    tracker.close()
    run = open_run(tmp_path / "run")
    assert "fc2.weight" not in {p.name for p in run.layout.params}
    assert np.all(run.param_lca("fc3.bias") == 0.0)  # trainable but left out of the optimizer
    dead = (x == 0).all(dim=0).numpy()  # pixels black in every image
    assert dead.sum() >= 2
    w = run.param_lca("fc1.weight")
    assert np.all(w[:, :, dead] == 0.0)
    assert np.any(w[:, :, ~dead] != 0.0)


def test_the_gradient_of_step_t_is_taken_before_the_step(digits):
    """Regression test for the post-step-gradient bug of some public ports: with the
    first-order rule, LCA must be Δ_t ⊙ ∇L(θ_t), the gradient *before* the step."""
    x, y, _, _ = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = Tracker(model, ce, (x, y), rule="first_order", tol=10.0)
    backend = TorchBackend(model, ce, (x, y))
    for _ in range(3):
        before = to_host(backend.snapshot().theta, np.float64)
        g_before = backend.evaluate([before])[0].grad
        loss = ce(model(x[:64]), y[:64])
        opt.zero_grad()
        loss.backward()
        with tracker.step():
            opt.step()
        after = to_host(backend.snapshot().theta, np.float64)
        g_after = backend.evaluate([after])[0].grad
        delta = after - before
        np.testing.assert_allclose(tracker.last.lca, delta * g_before, rtol=1e-6, atol=1e-12)
        assert not np.allclose(tracker.last.lca, delta * g_after, rtol=1e-3, atol=1e-9)
    tracker.close()


@pytest.mark.parametrize("how", ["in place", "new storage"])
def test_parameters_changed_outside_the_step_are_refused(digits, how):
    """Also when the parameter's storage is replaced (``p.data = …``): the snapshot reads
    the parameter as it is now, not a view of the storage it had."""
    x, y, _, _ = digits
    model = mlp()
    tracker = Tracker(model, ce, (x, y))
    train(model, tracker, x, y, steps=1)
    with torch.no_grad():
        if how == "in place":
            model.fc1.weight.mul_(0.5)
        else:
            model.fc1.weight.data = model.fc1.weight.data * 0.5
    with pytest.raises(RuntimeError, match="outside"):
        tracker.begin()


class Counting(nn.Module):
    """A forward that replaces its buffer by a new tensor rather than updating it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = self.calls + 1
        return self.fc(x)


def test_a_forward_that_replaces_a_buffer_leaves_the_model_its_own():
    torch.manual_seed(0)
    model = Counting()
    own = model.calls
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    backend = TorchBackend(model, ce, (x, y))
    theta = to_host(backend.snapshot().theta, np.float64)
    backend.evaluate([theta, theta + 0.1])
    assert model.calls is own and float(own) == 0.0
    assert dict(model.named_buffers())["calls"] is own


def test_bad_evaluation_data_is_explained(digits):
    x, y, _, _ = digits
    model = mlp()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        TorchBackend(model, ce, loader)
    with pytest.raises(EmptyEvaluationSetError, match="empty"):
        TorchBackend(model, ce, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="600 inputs but 10 targets"):
        TorchBackend(model, ce, (x, y[:10]))
    with pytest.raises(ValueError, match="bn_policy"):
        TorchBackend(model, ce, (x, y), bn_policy="eval")
    fixed = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)
    from_loader, from_tensors = TorchBackend(model, ce, fixed), TorchBackend(model, ce, (x, y))
    theta = to_host(from_tensors.snapshot().theta, np.float64)
    a, b = from_loader.evaluate([theta])[0], from_tensors.evaluate([theta])[0]
    assert a.loss == pytest.approx(b.loss, rel=1e-6)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-5, atol=1e-8)


def test_allocate_one_step_in_one_call_matches_the_tracker(digits, tmp_path):
    from lca_torch import allocate

    x, y, _, _ = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ce(model(x[:64]), y[:64]).backward()
    opt.step()
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = allocate(model, ce, (x, y), before, after)
    assert out.lca.keys() == before.keys()
    assert out.lca["fc1.weight"].shape == before["fc1.weight"].shape
    # the same step through a tracker, from the same starting point
    other = mlp()
    other.load_state_dict({**other.state_dict(), **before})
    tracker = Tracker(other, ce, (x, y), tmp_path / "run", store_params=True)
    tracker.update(before, after)
    tracker.close()
    stored = open_run(tmp_path / "run").param_lca("fc1.weight")[0]
    np.testing.assert_allclose(out.lca["fc1.weight"].numpy(), stored, rtol=1e-5, atol=1e-9)
    assert out.residual == pytest.approx(open_run(tmp_path / "run").residuals[0], abs=1e-12)
    with pytest.raises(KeyError, match="lack"):
        allocate(model, ce, (x, y), {"fc1.weight": before["fc1.weight"]}, after)


class TwoDtypes(nn.Module):
    """A float64 layer feeding a float32 one."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5).double()
        self.b = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x.double())).float())


@pytest.mark.parametrize("kept", [True, False], ids=["leaves kept", "leaves per call"])
def test_parameters_of_two_dtypes_are_evaluated_each_in_its_own(monkeypatch, kept):
    """θ is float64; each parameter is refilled in its own dtype at every point of a call,
    whether the leaves are kept between calls (a small model) or built per call."""
    import lca_torch.backend

    monkeypatch.setattr(lca_torch.backend, "KEEP_LEAVES_BYTES", 2**30 if kept else 0)
    torch.manual_seed(0)
    model, loss_fn = TwoDtypes(), nn.CrossEntropyLoss()
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    backend = TorchBackend(model, loss_fn, (x, y))
    theta = to_host(backend.snapshot().theta)
    assert theta.dtype == np.float64
    points = [theta + 0.05, theta * 0.5, theta + 0.05]
    evaluations = backend.evaluate(points) + backend.evaluate(points[:1])
    for point, ev in zip([*points, points[0]], evaluations, strict=True):
        assert_matches_autograd(ev, model, loss_fn, (x, y), point, backend.layout.offsets)
    assert evaluations[0].loss == evaluations[2].loss == evaluations[3].loss


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_models_are_tracked_in_their_own_dtype(digits, tmp_path, dtype):
    """Models as GPUs train them: θ is stored bit for bit (bfloat16, which numpy lacks, as
    float32: exactly), every point is evaluated as autograd does in that dtype, and the
    model is untouched."""
    x, y, _, _ = digits
    x = x.to(dtype)
    plain, tracked = mlp(seed=2).to(dtype), mlp(seed=2).to(dtype)
    _, opt_a = train(plain, None, x, y, steps=3)
    tracker = Tracker(tracked, ce, (x, y), tmp_path / "run", store_trajectory=True)
    _, opt_b = train(tracked, tracker, x, y, steps=3)
    tracker.close()
    assert_same_state(state_of(plain, opt_a), state_of(tracked, opt_b))
    run = open_run(tmp_path / "run")
    host = np.float16 if dtype == torch.float16 else np.float32
    theta = torch.cat([p.detach().reshape(-1) for p in tracked.parameters()])
    assert run.theta(3).dtype == host
    np.testing.assert_array_equal(run.theta(3), theta.to(torch.float32).numpy())
    point = run.theta(3).astype(np.float64)
    (ev,) = tracker.backend.evaluate([point])
    assert_matches_autograd(ev, tracked, ce, (x, y), point, tracker.backend.layout.offsets)


def assert_matches_autograd(ev, model, loss_fn, data, point, offsets):
    """``ev`` is the loss and gradient plain autograd gives on a copy of ``model`` at
    ``point`` (its parameters in ``model.parameters()`` order)."""
    x, y = data
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p, lo, hi in zip(reference.parameters(), offsets[:-1], offsets[1:], strict=True):
            p.copy_(torch.from_numpy(point[lo:hi]).view_as(p))
    loss = loss_fn(reference(x), y)
    loss.backward()
    grad = torch.cat([p.grad.double().reshape(-1) for p in reference.parameters()])
    assert ev.loss == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(ev.grad, grad.numpy(), rtol=1e-5, atol=1e-7)


class TiedHead(nn.Module):
    """A language-model shape: the output layer reuses the embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def test_a_tied_weight_gets_the_gradient_of_every_use():
    """The weight shared by embedding and head is one parameter of the layout, and its
    gradient sums both uses, as autograd's on the model does."""
    torch.manual_seed(0)
    model, loss_fn = TiedHead(), nn.CrossEntropyLoss()
    x, y = torch.randint(0, 7, (30,)), torch.randint(0, 7, (30,))
    backend = TorchBackend(model, loss_fn, (x, y))
    assert [p.name for p in backend.layout.params] == ["embed.weight", "mix.weight", "mix.bias"]
    theta = to_host(backend.snapshot().theta)
    points = [theta + 0.1, theta * 0.7]
    for point, ev in zip(points, backend.evaluate(points), strict=True):
        assert_matches_autograd(ev, model, loss_fn, (x, y), point, backend.layout.offsets)


class WithSpare(nn.Module):
    """A trainable layer the loss never uses (a head kept for later, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.spare = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_a_parameter_the_loss_does_not_use_has_a_zero_gradient():
    torch.manual_seed(0)
    model = WithSpare()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    backend = TorchBackend(model, ce, (x, y))
    theta = to_host(backend.snapshot().theta, np.float64)
    (ev,) = backend.evaluate([theta])
    spare = backend.layout.split(ev.grad)
    assert np.all(spare["spare.weight"] == 0.0) and np.all(spare["spare.bias"] == 0.0)
    assert np.any(spare["fc.weight"] != 0.0)


def test_a_parametrized_weight_is_evaluated_as_autograd_on_the_model():
    """weight_norm keeps its weight as two parameters under ``parametrizations``: they are
    lent in their own places and the weight is recomputed from them at every use."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    nn.utils.parametrizations.weight_norm(model[0])
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    before = copy.deepcopy(model.state_dict())
    backend = TorchBackend(model, ce, (x, y))
    assert "0.parametrizations.weight.original0" in {p.name for p in backend.layout.params}
    theta = to_host(backend.snapshot().theta, np.float64)
    points = [theta * 1.1, theta - 0.05]
    for point, ev in zip(points, backend.evaluate(points), strict=True):
        assert_matches_autograd(ev, model, ce, (x, y), point, backend.layout.offsets)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
