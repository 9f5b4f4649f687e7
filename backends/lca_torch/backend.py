"""The PyTorch backend: full-set loss and gradient at given parameters, model untouched.

Evaluation goes through ``torch.func.functional_call`` with parameters built from the flat
vector and buffers cloned, so the model's parameters, buffers, ``.grad``, ``training``
flags and the RNG state are exactly as before. Losses and gradients are accumulated over
fixed evaluation chunks in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from lca_core import EmptyEvaluationSetError, Evaluation, Layout, ParamSpec, Snapshot
from lca_core.backend_kit import DEFAULT_EVAL_BATCH, BackendBase, check_bn_policy
from lca_core.errors import EvaluationDataError, LCAError, LossShapeError
from lca_core.evaluation_data import check_finite_inputs, set_name

_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)

Chunks = list[tuple[torch.Tensor, torch.Tensor]]


def layout_of(model: nn.Module) -> Layout:
    """Trainable parameters (``requires_grad``) grouped into layers by owning module."""
    specs = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = name.rsplit(".", 1)[0] if "." in name else name
            dtype = str(p.dtype).removeprefix("torch.")
            specs.append(ParamSpec(name, tuple(p.shape), dtype, layer, 0 if p.ndim else None))
    return Layout(tuple(specs))


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: _to(v, device) for k, v in x.items()}
    return x.to(device) if isinstance(x, torch.Tensor) else x


def _length(x: Any) -> int:
    """Examples in a chunk: a tensor's length, or that of a dict batch's first tensor."""
    if isinstance(x, Mapping):
        return len(next(v for v in x.values() if isinstance(v, torch.Tensor)))
    return len(x)


def _as_chunks(data: Any, batch_size: int, device: torch.device) -> Chunks:
    """Fixed evaluation chunks on the device from a tensor pair, a dataset or a loader.

    A loader may yield (inputs, targets) pairs or dict batches (``model(**batch)``, as
    Hugging Face models take them; the target of such a chunk is None)."""
    if isinstance(data, torch.utils.data.DataLoader):
        if isinstance(data.sampler, torch.utils.data.RandomSampler):
            raise ValueError(
                "the evaluation DataLoader shuffles; LCA needs a fixed evaluation set in a fixed "
                "order. Pass a DataLoader with shuffle=False (or the tensors themselves)."
            )
        # iterating a loader draws its base seed from the global RNG: keep the user's
        with torch.random.fork_rng(devices=[]):
            chunks = [
                (_to(b, device), None)
                if isinstance(b, Mapping)
                else (_to(b[0], device), _to(b[1], device))
                for b in data
            ]
    else:
        if isinstance(data, torch.utils.data.TensorDataset):
            data = data.tensors
        if not (isinstance(data, Sequence) and len(data) == 2):
            raise EvaluationDataError(
                "evaluation data must be (inputs, targets) tensors, a TensorDataset or a "
                f"finite DataLoader without shuffling; got {type(data).__name__}"
            )
        x, y = (torch.as_tensor(t) for t in data)
        if len(x) != len(y):
            raise EvaluationDataError(
                f"the evaluation set has {len(x)} inputs but {len(y)} targets; give one target "
                "per input (inputs and targets of equal length, in the same order)"
            )
        x, y = x.to(device), y.to(device)
        chunks = [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]
    if sum(_length(x) for x, _ in chunks) == 0:
        raise EmptyEvaluationSetError(
            "the evaluation set is empty; give the tracker at least one sample to evaluate on"
        )
    return chunks


def _split_by_group(
    chunks: Chunks, group_of: np.ndarray, groups: int, batch_size: int
) -> list[Chunks]:
    """The set partitioned into groups (classes, or a subset's random groups), in chunks."""
    x = torch.cat([c[0] for c in chunks])
    y = torch.cat([c[1] for c in chunks])
    index = torch.from_numpy(group_of).to(x.device)
    out = []
    for g in range(groups):
        xg, yg = x[index == g], y[index == g]
        out.append(
            [
                (xg[i : i + batch_size], yg[i : i + batch_size])
                for i in range(0, len(xg), batch_size)
            ]
        )
    return out


@contextmanager
def _evaluation_mode(model: nn.Module, bn_policy: str) -> Iterator[None]:
    """Dropout off; BatchNorm on batch statistics ("batch") or running ones ("running").
    Every module's ``training`` flag and the RNG state are restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        for m, _ in flags:
            m.training = bn_policy == "batch" and isinstance(m, _BATCHNORM)
        yield
    finally:
        for m, training in flags:
            m.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def chunk_loss(value: torch.Tensor, n: int, total: int) -> torch.Tensor:
    """A chunk's share of the mean loss over ``total`` examples, whichever convention the
    loss follows: a batch mean (a scalar) weighs n/total, per-example losses (shape (n,))
    are summed and divided by total. Both give the same L(θ)."""
    if value.ndim == 0:
        return value * (n / total)
    if value.shape == (n,):
        return value.sum() / total
    raise LossShapeError(
        f"loss_fn returned a tensor of shape {tuple(value.shape)} for a chunk of {n} examples; "
        "return the batch mean (a scalar) or one loss per example (shape (n,)), e.g. "
        "nn.CrossEntropyLoss() or nn.CrossEntropyLoss(reduction='none')"
    )


class TorchBackend(BackendBase):
    """LCA backend for a ``torch.nn.Module`` and a loss ``loss_fn(output, target)``.

    ``loss_fn`` may return the batch mean or each example's loss; chunks are weighted by
    their real sizes either way, so L is the mean over the whole set. Inputs that are dicts
    are passed as keyword arguments (``model(**batch)``).
    """

    @classmethod
    def accepts(cls, model: Any, *args: Any) -> bool:
        return isinstance(model, nn.Module)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data: Any,
        *,
        val_data: Any = None,
        batch_size: int = DEFAULT_EVAL_BATCH,
        bn_policy: str = "batch",
        num_classes: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.bn_policy, self.batch_size = check_bn_policy(bn_policy), int(batch_size)
        self.layout = layout_of(model)
        named = dict(model.named_parameters())
        self._params = [named[p.name] for p in self.layout.params]
        first = self._params[0]
        self.device = torch.device(device) if device is not None else first.device
        sets = {"train": _as_chunks(data, self.batch_size, self.device)}
        if val_data is not None:
            sets["val"] = _as_chunks(val_data, self.batch_size, self.device)
        labelled = all(isinstance(y, torch.Tensor) for _, y in sets["train"])
        labels = torch.cat([y for _, y in sets["train"]]).cpu().numpy() if labelled else None
        self.hold_sets(sets, labels, num_classes)
        self._by_class: dict[str, list[Chunks]] = {}
        self._has_bn = any(isinstance(m, _BATCHNORM) for m in model.modules())
        dtypes = {p.dtype for p in self._params}
        self._dtype = dtypes.pop() if len(dtypes) == 1 else None
        self._trial()

    def _trial(self) -> None:
        """Finite inputs, and one forward and loss on two examples of each set, now: data
        that does not fit the model is named here, not as a diverged loss or an error deep
        inside the first step."""
        width = None
        labels: dict[str, Any] = {}
        for split, chunks in self.sets.items():
            what = set_name(split)
            for x, _ in chunks:
                tensors = x.values() if isinstance(x, Mapping) else [x]
                for t in tensors:
                    floating = isinstance(t, torch.Tensor) and t.is_floating_point()
                    if floating and not bool(torch.isfinite(t).all()):  # on the device
                        check_finite_inputs(t.detach().float().cpu().numpy(), what)
            x, y = chunks[0]
            head = {k: v[:2] for k, v in x.items()} if isinstance(x, Mapping) else x[:2]
            try:
                with torch.no_grad(), _evaluation_mode(self.model, self.bn_policy):
                    tensors = {**self._buffers(None), **dict(self.model.named_parameters())}
                    args, kwargs = ((), head) if isinstance(head, Mapping) else ((head,), {})
                    out = functional_call(self.model, tensors, args, kwargs)
                    self.loss_fn(out, y[:2] if y is not None else None)
            except LCAError:
                raise
            except Exception as exc:
                shape = (
                    {k: tuple(v.shape) for k, v in head.items()}
                    if isinstance(head, Mapping)
                    else tuple(x.shape)
                )
                raise EvaluationDataError(
                    f"the model and loss cannot take the {what} data (inputs {shape}): "
                    f"{type(exc).__name__}: {exc}. Give inputs and targets shaped as in "
                    "training."
                ) from exc
            if isinstance(out, torch.Tensor) and out.ndim == 2 and y is not None:
                width = int(out.shape[1])
                labels[split] = torch.cat([c[1] for c in chunks]).cpu().numpy()
        self.check_trial(width, labels)

    # -- sets as chunks on the device ------------------------------------------------------------
    def labels(self, split: str) -> Any:
        ys = [y for _, y in self.sets[split]]
        if not all(isinstance(y, torch.Tensor) for y in ys):
            return np.zeros(sum(_length(x) for x, _ in self.sets[split]), dtype=np.int64)
        return torch.cat(ys).cpu().numpy()

    def take(self, split: str, index: np.ndarray) -> Chunks:
        chunks, b = self.sets[split], self.batch_size
        at = torch.from_numpy(index).to(self.device)
        if isinstance(chunks[0][0], Mapping):  # dict batches: every tensor indexed alike
            xs = {k: torch.cat([c[0][k] for c in chunks])[at] for k in chunks[0][0]}
            return [({k: v[i : i + b] for k, v in xs.items()}, None) for i in range(0, len(at), b)]
        x = torch.cat([c[0] for c in chunks])[at]
        y = torch.cat([c[1] for c in chunks])[at]
        return [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]

    # -- protocol -------------------------------------------------------------------------
    def policy(self) -> dict[str, Any]:
        return {
            "framework": "torch",
            "torch_version": torch.__version__,
            "batchnorm": self.bn_policy if self._has_bn else None,
            "eval_batch_size": self.batch_size,
            "eval_samples": sum(_length(x) for x, _ in self.sets["train"]),
            "device": str(self.device),
            "dropout": "off",
        }

    def snapshot(self) -> Snapshot:
        with torch.no_grad():
            flat = [p.detach().reshape(-1).cpu() for p in self._params]
            dtypes = {t.dtype for t in flat}
            theta = torch.cat([t.double() for t in flat] if len(dtypes) > 1 else flat).numpy()
        state = None
        if self.bn_policy == "running" and self._has_bn:
            state = {k: b.detach().clone() for k, b in self.model.named_buffers()}
        return Snapshot(theta.copy(), state)

    def evaluate_split(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        with _evaluation_mode(self.model, self.bn_policy):
            return [self._evaluate_one(theta, state, split, per_class) for theta in thetas]

    # -- evaluation -----------------------------------------------------------------------
    def _leaves(self, theta: np.ndarray) -> dict[str, torch.Tensor]:
        """Parameters as fresh leaf tensors: views of one vector cast to the model's dtype."""
        flat = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float64))
        if self._dtype is not None:  # one dtype for all: cast once, then view
            flat = flat.to(self.device, self._dtype)
        else:
            flat = flat.to(self.device)
        leaves = {}
        for spec, p, lo, hi in zip(
            self.layout.params,
            self._params,
            self.layout.offsets[:-1],
            self.layout.offsets[1:],
            strict=True,
        ):
            leaves[spec.name] = flat[lo:hi].view(p.shape).to(p.dtype).requires_grad_(True)
        return leaves

    def _buffers(self, state: Any) -> dict[str, torch.Tensor]:
        source = state if state is not None else dict(self.model.named_buffers())
        return {k: b.clone() for k, b in source.items()}  # BN may update them in place

    def _pass(
        self, leaves: dict[str, torch.Tensor], state: Any, chunks: Chunks, total: int
    ) -> tuple[float, np.ndarray]:
        """Σ over chunks of (n_chunk/total)·loss and its flat gradient, in float64."""
        params = list(leaves.values())
        loss64 = torch.zeros((), dtype=torch.float64, device=self.device)
        grad64 = torch.zeros(self.layout.size, dtype=torch.float64, device=self.device)
        buffers = self._buffers(state)
        for x, y in chunks:
            tensors = {**buffers, **leaves}
            if isinstance(x, Mapping):
                out = functional_call(self.model, tensors, (), x)
            else:
                out = functional_call(self.model, tensors, (x,))
            loss = chunk_loss(self.loss_fn(out, y), _length(x), total)
            grads = torch.autograd.grad(loss, params, materialize_grads=True)
            loss64 += loss.detach().double()
            grad64 += torch.cat([g.reshape(-1) for g in grads]).double()
        return float(loss64), grad64.cpu().numpy()

    def _evaluate_one(
        self, theta: np.ndarray, state: Any, split: str, per_class: bool
    ) -> Evaluation:
        leaves, chunks = self._leaves(theta), self.sets[split]
        total = sum(_length(x) for x, _ in chunks)
        if not per_class:
            return Evaluation(*self._pass(leaves, state, chunks, total))
        # per class: the set partitioned by label, one pass in total (Σ_c parts = whole)
        groups = self.num_groups
        assert groups is not None
        if split not in self._by_class:
            self._by_class[split] = _split_by_group(
                chunks, self.group_of(split), groups, self.batch_size
            )
        losses = np.zeros(groups)
        grads = np.zeros((groups, self.layout.size))
        for c, class_chunks in enumerate(self._by_class[split]):
            if class_chunks:
                losses[c], grads[c] = self._pass(leaves, state, class_chunks, total)
        return Evaluation.from_groups(losses, grads, per_class=True)
