"""torch optimizers split into gradient, momentum and weight-decay parts (DESIGN §13).

The expected parts come from the update rules written out here, as torch documents them,
and split by linearity: the step is linear in (g, λθ, the carried moment) once Adam's
preconditioner is fixed, so each part is the rule applied to its own input alone."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lca_torch import Tracker
from lca_torch.splitters import make_splitter
from torch import nn

from lca_core import PARTS, UnsupportedOptimizerError
from lca_core.errors import AccuracyWarning
from tests.torch.conftest import mlp

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "heavy-ball": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01
    ),
    "nesterov": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.05
    ),
    "adam-l2": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "adamw-amsgrad": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, weight_decay=0.1),
    "rmsprop-centered-momentum": lambda p: torch.optim.RMSprop(
        p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.05
    ),
}


def sgd_rule(group, g, decay, carried, first):
    """torch.optim.SGD's step for inputs g (gradient), decay (λθ), carried (b_{t−1})."""
    lr, mu, d = group["lr"], group["momentum"], group["dampening"]
    gp = g + decay
    if mu == 0:
        return -lr * gp
    b = gp if first else mu * carried + (1 - d) * gp
    return -lr * (gp + mu * b if group["nesterov"] else b)


def adam_parts(group, g, theta, m_prev, v_prev, max_prev, t, decoupled):
    """torch.optim.Adam/AdamW's step split: the preconditioner from this step's second
    moment, then the first moment's terms one by one."""
    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    gp = g if decoupled else g + wd * theta
    v = b2 * v_prev + (1 - b2) * gp**2
    if group["amsgrad"]:
        v = np.maximum(max_prev, v)
    scale = -lr / (1 - b1**t) / (np.sqrt(v / (1 - b2**t)) + eps)
    decay = -lr * wd * theta if decoupled else scale * (1 - b1) * wd * theta
    return {
        "gradient": scale * (1 - b1) * g,
        "momentum": scale * b1 * m_prev,
        "weight_decay": decay,
    }


def rmsprop_parts(group, g, theta, before):
    """torch.optim.RMSprop's step split: the denominator from this step's averages."""
    lr, alpha, eps, mu, wd = (group[k] for k in ("lr", "alpha", "eps", "momentum", "weight_decay"))
    zeros = np.zeros_like(theta)
    gp = g + wd * theta
    v = alpha * before.get("square_avg", zeros) + (1 - alpha) * gp**2
    if group["centered"]:
        v = v - (alpha * before.get("grad_avg", zeros) + (1 - alpha) * gp) ** 2
    scale = -lr / (np.sqrt(v) + eps)
    carried = -lr * mu * before.get("momentum_buffer", zeros) if mu else zeros
    return {"gradient": scale * g, "weight_decay": scale * wd * theta, "momentum": carried}


def expected_parts(opt, p, theta, before, first):
    group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
    g = p.grad.detach().double().numpy().ravel().copy()
    if isinstance(opt, torch.optim.SGD):
        carried = before.get("momentum_buffer", np.zeros_like(theta))
        wd = group["weight_decay"]
        return {
            "gradient": sgd_rule(group, g, 0 * theta, 0 * theta, first),
            "weight_decay": sgd_rule(group, 0 * g, wd * theta, 0 * theta, first),
            "momentum": sgd_rule(group, 0 * g, 0 * theta, carried, first) if not first else 0 * g,
        }
    if isinstance(opt, torch.optim.RMSprop):
        return rmsprop_parts(group, g, theta, before)
    t = int(before.get("step", 0)) + 1
    zeros = np.zeros_like(theta)
    return adam_parts(
        group,
        g,
        theta,
        before.get("exp_avg", zeros),
        before.get("exp_avg_sq", zeros),
        before.get("max_exp_avg_sq", zeros),
        t,
        isinstance(opt, torch.optim.AdamW),
    )


def host_state(opt, p):
    return {
        k: (v.double().numpy().ravel().copy() if v.dim() else float(v))
        for k, v in opt.state.get(p, {}).items()
    }


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_each_part_is_the_update_rules_own(kind, digits):
    x, y = digits[0].double(), digits[1]
    model = mlp().double()
    params = list(model.parameters())
    opt = OPTIMIZERS[kind](params)
    splitter = make_splitter(opt, params)
    for step in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:100]), y[:100]).backward()
        thetas = [p.detach().double().numpy().ravel().copy() for p in params]
        before = [host_state(opt, p) for p in params]
        splitter.before(np.concatenate(thetas))
        opt.step()
        parts = splitter.after()
        offset = 0
        for p, theta, b in zip(params, thetas, before, strict=True):
            want = expected_parts(opt, p, theta, b, first=step == 0)
            cols = slice(offset, offset + theta.size)
            offset += theta.size
            for name in PARTS:
                np.testing.assert_allclose(
                    parts[name][cols], want[name], rtol=1e-9, atol=1e-15, err_msg=f"{name} {step}"
                )
            delta = p.detach().numpy().ravel() - theta  # the parts are the whole step
            np.testing.assert_allclose(sum(want[n] for n in PARTS), delta, rtol=1e-7, atol=1e-13)


def run(kind, digits, split, clip=None, steps=5, **options):
    """Train the digits MLP; returns the final parameters, optimizer state and results."""
    x, y = digits[0], digits[1]
    model = mlp()
    opt = OPTIMIZERS[kind](model.parameters())
    tracker = None
    if split is not None:
        tracker = Tracker(
            model, nn.CrossEntropyLoss(), (x, y), optimizer=opt if split else None, **options
        )
    results = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        if tracker is None:
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            continue
        with tracker.step():
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        results.append(tracker.last)
    if tracker is not None:
        tracker.close()
        results.append(tracker.gradient_passes)
    return [p.detach().clone() for p in model.parameters()], opt.state_dict(), results


@pytest.mark.parametrize("kind", ["nesterov", "adamw"])
def test_the_split_changes_neither_model_nor_optimizer(kind, digits):
    plain, plain_state, _ = run(kind, digits, None)
    split, split_state, results = run(kind, digits, True)
    *results, passes = results
    assert passes == run(kind, digits, False)[2][-1]  # no gradient pass more
    assert all(torch.equal(a, b) for a, b in zip(plain, split, strict=True))
    for i, state in plain_state["state"].items():
        for name, value in state.items():
            assert torch.equal(value, split_state["state"][i][name]), (i, name)
    for r in results:
        np.testing.assert_allclose(r.part_layer_lca.sum(axis=0), r.layer_lca, atol=1e-12)
    assert np.abs(np.array([r.part_layer_lca[1] for r in results[1:]])).sum() > 0


def test_the_gradient_part_is_the_clipped_gradient(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)  # clipped inside: the rule holds
        _, _, clipped = run("heavy-ball", digits, True, clip=0.05, store_params=True)
    _, _, free = run("heavy-ball", digits, True, store_params=True)
    clipped, free = clipped[:-1], free[:-1]
    grad_lca = lambda rs: np.abs(rs[0].part_layer_lca[0]).sum()  # noqa: E731
    assert grad_lca(clipped) < grad_lca(free)


def test_an_unsupported_optimizer_is_refused_with_the_supported_ones(digits):
    model = mlp()
    with pytest.raises(UnsupportedOptimizerError, match=r"torch\.optim\.\w*Adam.*register"):
        Tracker(
            model,
            nn.CrossEntropyLoss(),
            digits[:2],
            optimizer=torch.optim.Rprop(model.parameters()),
        )
    with pytest.raises(UnsupportedOptimizerError, match="maximize"):
        Tracker(
            model,
            nn.CrossEntropyLoss(),
            digits[:2],
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1, maximize=True),
        )


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["sgd", "adam", "adamw"]),
    lr=st.floats(1e-3, 0.5),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    nesterov=st.booleans(),
    decay=st.sampled_from([0.0, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_random_states_and_gradients_split_into_parts_that_sum_to_the_step(
    kind, lr, momentum, nesterov, decay, seed
):
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(7, generator=gen, dtype=torch.float64))
    if kind == "sgd":
        opt = torch.optim.SGD(
            [p], lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=decay
        )
    else:
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = cls([p], lr=lr, betas=(momentum or 0.5, 0.99), weight_decay=decay)
    splitter = make_splitter(opt, [p])
    for _ in range(3):  # a random state: a few steps of random gradients
        p.grad = torch.randn(7, generator=gen, dtype=torch.float64)
        theta = p.detach().numpy().copy()
        splitter.before(theta)
        opt.step()
        parts = splitter.after()
        delta = p.detach().numpy() - theta
        np.testing.assert_allclose(sum(parts[n] for n in PARTS), delta, rtol=1e-9, atol=1e-15)
        assert parts["weight_decay"].any() == (decay > 0)
    if kind == "sgd":
        assert parts["momentum"].any() == (momentum > 0)  # plain SGD: exactly 0
