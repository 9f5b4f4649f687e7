"""The PyTorch backend: full-set loss and gradient at given parameters, model untouched.

Evaluation lends the model leaf tensors built from the flat vector and copies of its
buffers (:class:`~lca_torch.places.Places`) and puts its own back, so the model's
parameters, buffers, ``.grad``, ``training`` flags and the RNG state are exactly as before.
Losses and gradients are accumulated over fixed evaluation chunks in float64.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from typing import Any

import numpy as np
import torch
from torch import nn
from torch._utils import _flatten_dense_tensors as flatten_dense_tensors

from lca_core import Evaluation, Layout, ParamSpec, Snapshot
from lca_core.arrays import check_arithmetic
from lca_core.backend_kit.base import DEFAULT_EVAL_BATCH, BackendBase, check_bn_policy
from lca_core.backend_kit.evaluation_data import set_name
from lca_core.errors import EvaluationDataError, LCAError, LossShapeError

from .distributed import Shards
from .evaluation_sets import (
    Chunks,
    EvaluationSet,
    Streamed,
    first_of,
    labels_of,
    length,
    load_set,
    split_by_group,
    stack_groups,
    total_of,
)
from .places import Places

logger = logging.getLogger("lca")

_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)
#: the parameters as leaves: (the one vector they view, or None when dtypes differ; by name)
_Leaves = tuple[torch.Tensor | None, dict[str, torch.Tensor]]
#: parameters up to this size keep their evaluation leaves on the device between calls
KEEP_LEAVES_BYTES = 64 * 2**20
_STREAMED = (
    "{what} needs the evaluation set on the device, but this one is streamed (it is larger "
    "than resident_bytes). Give a smaller set, or a larger resident_bytes if it fits."
)


def layout_of(model: nn.Module) -> Layout:
    """Trainable parameters (``requires_grad``) grouped into layers by owning module."""
    specs = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = name.rsplit(".", 1)[0] if "." in name else name
            dtype = str(p.dtype).removeprefix("torch.")
            specs.append(ParamSpec(name, tuple(p.shape), dtype, layer, 0 if p.ndim else None))
    return Layout(tuple(specs))


@contextmanager
def _evaluation_mode(model: nn.Module, bn_policy: str) -> Iterator[None]:
    """Dropout off; BatchNorm on batch statistics ("batch") or running ones ("running").
    Every module's ``training`` flag and the RNG state are restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    # the flag set as a plain attribute: Module.__setattr__'s checks cost per module
    try:
        for m, _ in flags:
            object.__setattr__(m, "training", bn_policy == "batch" and isinstance(m, _BATCHNORM))
        yield
    finally:
        for m, training in flags:
            object.__setattr__(m, "training", training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


#: the floats numpy holds as torch does; others (bfloat16, float8) reach the host as float32
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def host_array(t: torch.Tensor) -> np.ndarray:
    """A detached tensor as a host array in θ's dtype for it
    (:func:`lca_core.layout.host_dtype`): bfloat16 and float8, which numpy lacks, widened to
    float32 (exactly), after the copy to the host (half the bytes to move)."""
    host = t.cpu()
    return (host if host.dtype in _NUMPY_FLOATS else host.float()).numpy()


def materialized(grads: Sequence[torch.Tensor | None], params: list[torch.Tensor]) -> Any:
    """Zeros for the parameters the loss does not use. (``materialize_grads=True`` does the
    same, with two generator expressions over the parameters at every call.)"""
    if all(map(isinstance, grads, repeat(torch.Tensor))):
        return grads
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def chunk_loss(value: torch.Tensor, n: int, total: int) -> torch.Tensor:
    """A chunk's share of the mean loss over ``total`` examples, whichever convention the
    loss follows: a batch mean (a scalar) weighs n/total, per-example losses (shape (n,))
    are summed and divided by total. Both give the same L(θ)."""
    if value.ndim == 0:
        return value if n == total else value * (n / total)
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

    Args:
        model: the module (a DDP wrapper is unwrapped); never changed by an evaluation.
        loss_fn: ``loss_fn(output, target)``, the training loss.
        data: the evaluation set: (inputs, targets) tensors or arrays, a dataset, a
            DataLoader of fixed batches, or a streamed set (docs/scale.md).
        val_data: a validation set (inputs, targets): also allocate its loss change.
        batch_size: examples per evaluation chunk (the set is reduced in float64 over them).
        num_classes: the classes for per-class LCA (default: inferred from integer labels).
        bn_policy: BatchNorm during evaluation: each chunk's statistics ("batch") or the
            running ones ("running", their drift reported).
        device: where to evaluate (default: the model's parameters' device).
        resident_bytes: most bytes of the set kept on the device; a larger one is streamed.
        arithmetic: where lca's own K-long arithmetic runs: "device" (the default, "auto":
            θ, Δ, the quadrature's sums and A as float64 tensors on ``device``, only
            per-layer numbers to the host) or "host" (numpy float64, the reference).

    Raises:
        EmptyEvaluationSetError: ``data`` holds no example.
        EvaluationDataError: inputs and targets that do not pair up, or labels the model
            cannot have.
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
        resident_bytes: int | None = None,
        arithmetic: str | None = None,
    ) -> None:
        self.arithmetic = check_arithmetic(arithmetic or "auto", device=True, backend="torch")
        self._tensors = False  # whether the θ being evaluated came as a tensor
        self._theta_dtype = torch.float32  # and its dtype (at least float32)
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module  # evaluate the module itself, never DDP's gradient hooks
        self.model, self.loss_fn = model, loss_fn
        self._shards = Shards()
        self.writes = self._shards.rank == 0
        self.bn_policy, self.batch_size = check_bn_policy(bn_policy), int(batch_size)
        self.layout = layout_of(model)
        named = dict(model.named_parameters())
        self._params = [named[p.name] for p in self.layout.params]
        first = self._params[0]
        self.device = torch.device(device) if device is not None else first.device
        given = {"train": data} if val_data is None else {"train": data, "val": val_data}
        sets: dict[str, EvaluationSet] = {
            split: load_set(d, self.batch_size, self.device, resident_bytes, set_name(split))
            for split, d in given.items()
        }
        self.hold_sets(sets, labels_of(sets["train"]), num_classes)
        self._by_class: dict[str, list[Chunks]] = {}
        #: a subset's groups stacked for one vectorized pass (None: groups of unequal size)
        self._stacked: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
        #: whether the model runs under torch.func.vmap (found at its first grouped pass)
        self._vmap_works: bool | None = None
        #: seconds of a grouped pass each way, timed on the first ones ("auto")
        self._group_seconds: dict[str, float] = {}
        self._whole: tuple[torch.Tensor, torch.Tensor] | None = None
        self._has_bn = any(isinstance(m, _BATCHNORM) for m in model.modules())
        dtypes = {p.dtype for p in self._params}
        self._dtype = dtypes.pop() if len(dtypes) == 1 else None
        # leaf tensors are refilled at each θ, not rebuilt (building them is a few % of a
        # small model's pass, benchmarks/README.md); a small model's are kept between calls
        # too (a large one's would be a lasting copy of its parameters on the device)
        param_bytes = sum(p.numel() * p.element_size() for p in self._params)
        self._keep_leaves = param_bytes <= KEEP_LEAVES_BYTES
        self._kept_leaves: _Leaves | None = None
        self._places = Places(model)
        self._views: list[torch.Tensor] = []
        self._views_at: list[tuple[int, tuple[int, ...]]] | None = None
        self._trial()

    def _trial(self) -> None:
        """One forward and loss on two examples of each set, now (inputs were checked
        finite as they were read): data that does not fit the model is named here, not as
        a diverged loss or an error deep inside the first step."""
        width = None
        labels: dict[str, Any] = {}
        for split, chunks in self.sets.items():
            what = set_name(split)
            x, y = first_of(chunks)
            head = {k: v[:2] for k, v in x.items()} if isinstance(x, Mapping) else x[:2]
            try:
                # buffers copied: BatchNorm in batch mode updates them in place
                buffers = {k: b.clone() for k, b in self._places.buffers().items()}
                with (
                    torch.no_grad(),
                    _evaluation_mode(self.model, self.bn_policy),
                    self._places.lent(buffers),
                ):
                    out = self.model(**head) if isinstance(head, Mapping) else self.model(head)
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
                labels[split] = labels_of(chunks)
        self.check_trial(width, labels)

    # -- sets as chunks on the device, or streamed ------------------------------------------------
    def labels(self, split: str) -> Any:
        labels = labels_of(self.sets[split])
        if labels is None:
            return np.zeros(total_of(self.sets[split]), dtype=np.int64)
        return labels

    def take(self, split: str, index: np.ndarray) -> Chunks:
        chunks, b = self.sets[split], self.batch_size
        if isinstance(chunks, Streamed):
            raise ValueError(_STREAMED.format(what="eval_subset"))
        at = torch.from_numpy(index).to(self.device)
        if isinstance(chunks[0][0], Mapping):  # dict batches: every tensor indexed alike
            xs = {k: torch.cat([c[0][k] for c in chunks])[at] for k in chunks[0][0]}
            return [({k: v[i : i + b] for k, v in xs.items()}, None) for i in range(0, len(at), b)]
        joined = self._whole if split == "full" else None  # joined once for all its draws
        if joined is None:
            joined = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
            if split == "full":
                self._whole = joined
        x, y = joined[0][at], joined[1][at]
        return [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]

    def subset_changed(self) -> None:
        self._by_class.pop("train", None)
        self._stacked.pop("train", None)

    # -- protocol -------------------------------------------------------------------------
    def from_writer(self, value: Any) -> Any:
        return self._shards.from_rank0(value)

    def policy(self) -> dict[str, Any]:
        return {
            "framework": "torch",
            "torch_version": torch.__version__,
            "batchnorm": self.bn_policy if self._has_bn else None,
            "eval_batch_size": self.batch_size,
            "eval_samples": total_of(self.sets["train"]),
            "streamed": isinstance(self.sets["train"], Streamed),
            "device": str(self.device),
            "processes": self._shards.world,
            "dropout": "off",
            "groups": None if self.subset is None else self.group_evaluation,
            "arithmetic": self.arithmetic,
        }

    #: how a subset's groups are evaluated: "vectorized" (one torch.func.vmap call),
    #: "loop" (one pass per group), or "auto": each way timed on the first grouped passes
    #: (both give the same sums, to rounding), the faster kept — vmap pays on small
    #: dense models; on convolutions with pooling its batching rules can cost more than
    #: the calls it saves (benchmarks/results/subsets.md, leave_on.md)
    group_evaluation: str = "auto"

    def _group_mode(self) -> str:
        """How a subset's groups are evaluated now: "vectorized", "loop", or "timing"
        (auto, not yet decided). Always one pass per group where the model does not run
        under vmap or a job has several processes."""
        if self._vmap_works is False or self._shards.world > 1:
            return "loop"
        if self.group_evaluation != "auto":
            return self.group_evaluation
        if len(self._group_seconds) < 2:
            return "timing"
        faster = min(self._group_seconds, key=self._group_seconds.__getitem__)
        return "vectorized" if faster == "vectorized" else "loop"

    @property
    def parameters(self) -> list[torch.Tensor]:
        """The model's trainable parameters in the layout's order (the tensors themselves)."""
        return list(self._params)

    def snapshot(self) -> Snapshot:
        views = self._param_views()  # detached: no graph is recorded, no_grad is not needed
        # cat always copies: θ is the model's values now, never a view of them
        flat = torch.cat(views if self._dtype is not None else [v.double() for v in views])
        theta = flat if self.arithmetic == "device" else host_array(flat)
        state = None
        if self.bn_policy == "running" and self._has_bn:
            state = {k: b.detach().clone() for k, b in self._places.buffers().items()}
        return Snapshot(theta, state)

    def _param_views(self) -> list[torch.Tensor]:
        """Each parameter as a flat view of its storage, made again only when a storage
        moved (``p.data = …``, ``model.to(…)``): making them is ~20 dispatches, most of a
        small model's snapshot, and a snapshot is taken twice per step."""
        where = [(p.data_ptr(), p.stride()) for p in self._params]
        if where != self._views_at:
            self._views = [p.detach().reshape(-1) for p in self._params]
            # a non-contiguous parameter's reshape is a copy, not a view: never kept
            self._views_at = where if all(p.is_contiguous() for p in self._params) else None
        return self._views

    def _leaves(self) -> _Leaves:
        """The evaluation's leaf tensors: a small model's kept between calls."""
        leaves = self._kept_leaves or self._new_leaves()
        if self._keep_leaves:
            self._kept_leaves = leaves
        return leaves

    def evaluate_split(
        self, thetas: list[np.ndarray], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        self._tensors = isinstance(thetas[0], torch.Tensor)  # answered in the same kind
        if self._tensors:
            self._theta_dtype = torch.promote_types(thetas[0].dtype, torch.float32)
        leaves = self._leaves()
        source = state if state is not None else self._places.buffers()
        buffers = {k: torch.empty_like(b) for k, b in source.items()}  # filled per pass
        with (
            _evaluation_mode(self.model, self.bn_policy),
            self._places.lent({**buffers, **leaves[1]}),
        ):
            return [
                self._evaluate_one(self._fill(leaves, theta), buffers, source, split, per_class)
                for theta in thetas
            ]

    def evaluate_loss(self, theta: np.ndarray, *, state: Any = None, split: str = "train") -> float:
        """The loss alone, in a forward pass without autograd (a resampled run's check of
        the full set): the chunks, weights and BatchNorm policy of a gradient pass."""
        chunks = self.sets[split]
        total = total_of(chunks)
        leaves = self._leaves()
        source = state if state is not None else self._places.buffers()
        buffers = {k: b.clone() for k, b in source.items()}  # BatchNorm updates them
        loss64 = torch.zeros((), dtype=torch.float64, device=self.device)
        with (
            torch.no_grad(),
            _evaluation_mode(self.model, self.bn_policy),
            self._places.lent({**buffers, **self._fill(leaves, theta)}),
        ):
            for x, y in self._shards.mine(chunks):
                out = self.model(**x) if isinstance(x, Mapping) else self.model(x)
                loss64 += chunk_loss(self.loss_fn(out, y), length(x), total)
        loss = np.array([float(loss64)])
        if self._shards.world > 1:
            (loss,) = self._shards.all_reduce([loss], self.device)
        return float(loss[0])

    # -- evaluation -----------------------------------------------------------------------
    def _fill(self, leaves: _Leaves, theta: np.ndarray) -> dict[str, torch.Tensor]:
        """The leaves holding θ (a host vector, or a tensor on the device), cast to the
        model's dtype(s) on the device."""
        flat, named = leaves
        if isinstance(theta, torch.Tensor):
            source = theta
        else:
            source = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float64))
        if flat is not None:  # the leaves' base: it needs no gradient, hence no no_grad
            flat.copy_(source)
            return named
        bounds = zip(self.layout.offsets[:-1], self.layout.offsets[1:], strict=True)
        with torch.no_grad():
            for leaf, (lo, hi) in zip(named.values(), bounds, strict=True):
                leaf.copy_(source[lo:hi].view(leaf.shape))
        return named

    def _new_leaves(self) -> _Leaves:
        """Parameters as leaf tensors: views of one device vector in the model's dtype, or
        one tensor each when the parameters' dtypes differ."""
        bounds = zip(self.layout.offsets[:-1], self.layout.offsets[1:], strict=True)
        if self._dtype is None:
            leaves = {
                spec.name: torch.empty_like(p, device=self.device).requires_grad_(True)
                for spec, p in zip(self.layout.params, self._params, strict=True)
            }
            return None, leaves
        flat = torch.empty(self.layout.size, dtype=self._dtype, device=self.device)
        leaves = {
            spec.name: flat[lo:hi].view(p.shape).requires_grad_(True)
            for spec, p, (lo, hi) in zip(self.layout.params, self._params, bounds, strict=True)
        }
        return flat, leaves

    def _pass(
        self,
        params: list[torch.Tensor],
        buffers: dict[str, torch.Tensor],
        source: Mapping[str, torch.Tensor],
        chunks: EvaluationSet,
        total: int,
    ) -> tuple[float, torch.Tensor]:
        """Σ over this process's chunks of (n_chunk/total)·loss and its flat gradient, in
        float64 on the device (all of them without a process group). The model runs on
        ``params`` and ``buffers`` (lent to it by the caller); the buffers start every pass
        from ``source``, as BatchNorm updates them in place."""
        if buffers:
            with torch.no_grad():
                for name, buffer in buffers.items():
                    buffer.copy_(source[name])
        loss64 = grad64 = None
        for x, y in self._shards.mine(chunks):
            out = self.model(**x) if isinstance(x, Mapping) else self.model(x)
            loss = chunk_loss(self.loss_fn(out, y), length(x), total)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            # one C++ call for what torch.cat of reshapes does in 2 dispatches per parameter
            grad = flatten_dense_tensors(materialized(grads, params)).double()  # a new tensor
            if grad64 is None:
                loss64, grad64 = loss.detach().double(), grad
            else:
                loss64 += loss.detach()
                grad64 += grad
        if grad64 is None:  # a process of a job with fewer chunks than processes
            return 0.0, torch.zeros(self.layout.size, dtype=torch.float64, device=self.device)
        return float(loss64), grad64

    def _out(self, values: torch.Tensor) -> Any:
        """A float64 sum (over every process's shard) in the kind of array θ came as: where
        θ was a tensor (device arithmetic), a tensor in θ's dtype (the K-long vectors there
        cost the parameters' bytes; the core's sums over them are float64), else a float64
        host array."""
        return values.to(self._theta_dtype) if self._tensors else values.cpu().numpy()

    def _vectorized(
        self,
        leaves: dict[str, torch.Tensor],
        source: Mapping[str, torch.Tensor],
        stacked: tuple[torch.Tensor, torch.Tensor],
        total: int,
    ) -> tuple[np.ndarray, torch.Tensor] | None:
        """Every group's loss share and gradient in one ``torch.func.vmap`` call per chunk
        of ``batch_size`` examples of each group — the chunks the one-by-one pass makes, so
        the loss is the same function of θ (with BatchNorm in batch mode too: each group's
        chunk is a batch of its own) while a call holds groups × chunk examples. The
        buffers are given to each group as a copy (BatchNorm updates them in place). None
        where the model does not run under vmap: the groups are then evaluated one by one,
        from now on."""
        xs, ys = stacked
        groups, m = xs.shape[0], xs.shape[1]
        step = min(m, self.batch_size)
        params = {k: v.detach() for k, v in leaves.items()}

        def share(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: Any, y: Any) -> Any:
            out = torch.func.functional_call(self.model, {**p, **b}, (x,))
            loss = chunk_loss(self.loss_fn(out, y), length(x), total)
            return loss, loss.detach()

        vectorized = torch.func.vmap(
            torch.func.grad(share, has_aux=True), in_dims=(None, 0, 0, 0), randomness="same"
        )
        loss64 = torch.zeros(groups, dtype=torch.float64, device=self.device)
        grad64 = torch.zeros(groups, self.layout.size, dtype=torch.float64, device=self.device)
        try:
            for lo in range(0, m, step):
                buffers = {k: b.expand(groups, *b.shape).clone() for k, b in source.items()}
                grads, losses = vectorized(
                    params, buffers, xs[:, lo : lo + step], ys[:, lo : lo + step]
                )
                flat = [grads[name].reshape(groups, -1) for name in params]
                grad64 += torch.cat(flat, dim=1)
                loss64 += losses
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            if self._vmap_works:  # it ran before: this is not vmap's limit
                raise
            self._vmap_works = False
            logger.info("the model does not run under torch.func.vmap (%s); groups one by one", exc)
            return None
        self._vmap_works = True
        return loss64.cpu().numpy(), grad64

    def _evaluate_one(
        self,
        leaves: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        source: Mapping[str, torch.Tensor],
        split: str,
        per_class: bool,
    ) -> Evaluation:
        chunks, params = self.sets[split], list(leaves.values())
        total = total_of(chunks)
        if not per_class:
            loss, grad = self._pass(params, buffers, source, chunks, total)
            if self._shards.world > 1:
                losses, grad = self._shards.all_reduce([np.array([loss]), grad], self.device)
                loss = float(losses[0])
            return Evaluation(loss, self._out(grad))
        # the set partitioned by label, one pass in total (Σ_c parts = whole)
        if isinstance(chunks, Streamed):
            raise ValueError(_STREAMED.format(what="per_class=True"))
        groups = self.num_groups
        assert groups is not None
        mode = self._group_mode() if self.subset is not None else "loop"
        if mode == "timing" and "vectorized" in self._group_seconds:  # the loop's turn
            started = time.perf_counter()
            looped = self._looped(params, buffers, source, split, groups, total)
            self._group_seconds["loop"] = time.perf_counter() - started
            return looped
        if mode != "loop":
            # timed from its second call (the first initialises torch.func), with the
            # stacking each new subset needs, as the loop's time holds its regrouping
            timed = mode == "timing" and self._vmap_works is True
            started = time.perf_counter()
            if split not in self._stacked:
                self._stacked[split] = stack_groups(chunks, self.group_of(split), groups)
            stacked = self._stacked[split]
            found = None if stacked is None else self._vectorized(leaves, source, stacked, total)
            if found is not None:
                if timed:
                    self._group_seconds["vectorized"] = time.perf_counter() - started
                losses, grads = found
                return Evaluation.from_groups(losses, self._out(grads), per_class=True)
        return self._looped(params, buffers, source, split, groups, total)

    def _looped(
        self,
        params: list[torch.Tensor],
        buffers: dict[str, torch.Tensor],
        source: Mapping[str, torch.Tensor],
        split: str,
        groups: int,
        total: int,
    ) -> Evaluation:
        """The groups (classes, or a subset's random groups) one pass each."""
        chunks = self.sets[split]
        assert not isinstance(chunks, Streamed)
        if split not in self._by_class:
            self._by_class[split] = split_by_group(
                chunks, self.group_of(split), groups, self.batch_size
            )
        losses = np.zeros(groups)
        grads = torch.zeros(groups, self.layout.size, dtype=torch.float64, device=self.device)
        for c, class_chunks in enumerate(self._by_class[split]):
            if class_chunks:
                losses[c], grads[c] = self._pass(params, buffers, source, class_chunks, total)
        losses, grads = self._shards.all_reduce([losses, grads], self.device)
        return Evaluation.from_groups(losses, self._out(grads), per_class=True)
