"""The JAX backend: parameters are any pytree, the loss a pure function of them.

``loss_fn(params, x, y)`` returns the loss of each example (shape ``(batch,)``, as optax's
losses do) or the batch mean (a scalar: it is then evaluated one example at a time under
``vmap``, so padding never enters the mean). The backend pads the evaluation set into fixed
chunks with zero weights, so one compiled function serves every step. A pass is
``lax.scan`` over chunks inside one ``jit``; several quadrature nodes are evaluated
together with ``vmap``. Sums over chunks
are compensated (Kahan) in the parameters' dtype (at least float32), then returned as
float64.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lca_core import Evaluation, Layout, ParamSpec, Snapshot
from lca_core.arrays import check_arithmetic
from lca_core.backend_kit.base import DEFAULT_EVAL_BATCH, BackendBase
from lca_core.backend_kit.evaluation_data import PaddedChunks, array_sets, resident_budget
from lca_core.errors import DistributedError, EvaluationDataError, LossShapeError
from lca_core.layout import flat_vector

from . import nnx
from .kernels import KERNELS
from .nnx import ModuleParameters

DEFAULT_MAX_VMAP = 4

LossFn = Callable[[Any, Any, Any], jax.Array]


class Structure(NamedTuple):
    """Hashable description of a pytree's leaves: how to rebuild it from a flat vector."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    def unflatten(self, flat: jax.Array) -> Any:
        leaves, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            size = int(np.prod(shape, dtype=np.int64))
            leaves.append(flat[start : start + size].reshape(shape).astype(dtype))
            start += size
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def layout_of(params: Any) -> Layout:
    """Leaves named by their key path ("params/Dense_0/kernel"); a layer is the parent path;
    the neuron axis is the last axis (flax/optax kernels are (in, out)). An nnx state's
    paths end in each ``Variable``'s ``.value``: that step is not part of the name."""
    specs = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
            path = path[:-1]
        parts = [_key_name(k) for k in path] or ["param"]
        name = "/".join(parts)
        layer = "/".join(parts[:-1]) or name
        shape = tuple(int(s) for s in np.shape(leaf))
        specs.append(
            ParamSpec(
                name, shape, str(jnp.asarray(leaf).dtype), layer, len(shape) - 1 if shape else None
            )
        )
    return Layout(tuple(specs))


def structure_of(params: Any) -> Structure:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return Structure(
        treedef,
        tuple(tuple(np.shape(x)) for x in leaves),
        tuple(str(jnp.asarray(x).dtype) for x in leaves),
    )


def flatten(params: Any) -> np.ndarray:
    """θ as one host vector, in the leaves' dtype (float64 when they differ)."""
    return flat_vector(jax.tree_util.tree_leaves(params))


def _kahan(total: jax.Array, comp: jax.Array, value: jax.Array) -> tuple[jax.Array, jax.Array]:
    y = value - comp
    t = total + y
    return t, (t - total) - y


@partial(jax.jit, static_argnames=("loss_fn", "structure", "groups", "stacked"))
def full_pass(
    thetas: jax.Array,
    xs: Any,
    ys: Any,
    ws: jax.Array,
    group: jax.Array,
    *,
    loss_fn: LossFn,
    structure: Structure,
    groups: int,
    stacked: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Loss and gradient of Σ_i w_i·ℓ_i, per group of chunks, at each row of ``thetas``.

    Shapes: thetas (n, K); xs, ys (chunks, B, ...); ws (chunks, B); group (chunks,).
    ``stacked``: every group holds the same number of chunks, in group order (a subset's
    random groups): the groups are then evaluated together (vmap), each scanning its own
    chunks, not one after another.
    Returns losses (n, groups) and gradients (n, groups, K), summed in the parameters' dtype
    but at least float32 (bfloat16's 8 bits would round every addition, and the weights).
    """
    acc = jnp.promote_types(thetas.dtype, jnp.float32)

    def weighted(params: Any, x: Any, y: Any, w: jax.Array) -> jax.Array:
        losses = loss_fn(params, x, y)
        return jnp.sum(losses.astype(acc) * w.astype(acc))

    def value_and_grad(flat: jax.Array, x: Any, y: Any, w: jax.Array) -> tuple[jax.Array, ...]:
        # differentiated by leaf, then concatenated once: the gradient of slicing the flat
        # vector would pad every leaf's gradient to the full length (a cost of ~8 %)
        loss, grad = jax.value_and_grad(weighted)(structure.unflatten(flat), x, y, w)
        leaves = jax.tree_util.tree_leaves(grad)
        return loss, jnp.concatenate([g.reshape(-1).astype(acc) for g in leaves])

    def one_point(flat: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = flat.shape[0]
        zeros = (
            jnp.zeros(groups, acc),
            jnp.zeros(groups, acc),
            jnp.zeros((groups, k), acc),
            jnp.zeros((groups, k), acc),
        )

        def body(carry: Any, chunk: Any) -> tuple[Any, None]:
            loss_sum, loss_c, grad_sum, grad_c = carry
            x, y, w, g = chunk
            loss, grad = value_and_grad(flat, x, y, w)
            l_new, lc_new = _kahan(loss_sum[g], loss_c[g], loss)
            g_new, gc_new = _kahan(grad_sum[g], grad_c[g], grad)
            return (
                loss_sum.at[g].set(l_new),
                loss_c.at[g].set(lc_new),
                grad_sum.at[g].set(g_new),
                grad_c.at[g].set(gc_new),
            ), None

        def one_group(xg: Any, yg: Any, wg: jax.Array) -> tuple[jax.Array, jax.Array]:
            def add(carry: Any, chunk: Any) -> tuple[Any, None]:
                loss_sum, loss_c, grad_sum, grad_c = carry
                loss, grad = value_and_grad(flat, *chunk)
                return (*_kahan(loss_sum, loss_c, loss), *_kahan(grad_sum, grad_c, grad)), None

            start = (jnp.zeros((), acc), jnp.zeros((), acc), jnp.zeros(k, acc), jnp.zeros(k, acc))
            (loss_sum, _, grad_sum, _), _ = jax.lax.scan(add, start, (xg, yg, wg))
            return loss_sum, grad_sum

        if stacked:
            return jax.vmap(one_group)(*(_by_group(a, groups) for a in (xs, ys, ws)))
        (loss_sum, _, grad_sum, _), _ = jax.lax.scan(body, zeros, (xs, ys, ws, group))
        return loss_sum, grad_sum

    return jax.vmap(one_point)(thetas)


@partial(jax.jit, static_argnames="dtype")
def _stack_as(thetas: tuple[jax.Array, ...], dtype: Any) -> jax.Array:
    return jnp.stack([t.astype(dtype) for t in thetas])


@jax.jit
def _sum_blocks(grads: tuple[jax.Array, ...]) -> jax.Array:
    total = grads[0]
    for g in grads[1:]:
        total = total + g
    return total


def _by_group(tree: Any, groups: int) -> Any:
    """(chunks, ...) arrays as (groups, chunks per group, ...)."""
    return jax.tree_util.tree_map(lambda a: a.reshape(groups, -1, *a.shape[1:]), tree)


class Chunks(NamedTuple):
    """Padded evaluation chunks on the device(s) and the number of class groups."""

    xs: Any
    ys: Any
    ws: jax.Array
    group: jax.Array
    groups: int
    #: every group holds the same number of chunks (see :func:`full_pass`)
    stacked: bool = False


def global_array(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """``a`` (held whole by every process) as one array over the mesh: each process puts
    the parts its own devices hold (one process or several: ``jax.distributed``)."""
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def host(a: jax.Array) -> np.ndarray:
    """A replicated result on the host, also when other processes hold copies of it."""
    return np.asarray(a if a.is_fully_addressable else a.addressable_data(0))


def make_chunks(padded: PaddedChunks, where: NamedSharding | jax.Device) -> Chunks:
    """Padded evaluation chunks put on one device, or sharded along the batch axis over a
    mesh. Committed there, so the pass runs there, whatever the default device is."""
    if isinstance(where, NamedSharding):
        every = NamedSharding(where.mesh, PartitionSpec())
        put = partial(global_array, sharding=where)
        replicated = partial(global_array, sharding=every)
    else:
        put = replicated = partial(jax.device_put, device=where)
    counts = np.bincount(padded.group, minlength=padded.groups)
    return Chunks(
        put(padded.xs),
        put(padded.ys),
        put(padded.ws),
        replicated(padded.group),
        padded.groups,
        bool(padded.groups > 1 and (counts == counts[0]).all()),
    )


@dataclass(frozen=True)
class MeanAsPerExample:
    """Per-example losses from a loss that returns the batch mean: the mean of a batch of
    one is that example's loss. Hashable by the wrapped loss, so jit caches stay warm."""

    loss_fn: LossFn

    def __call__(self, params: Any, x: Any, y: Any) -> jax.Array:
        def one(xi: Any, yi: Any) -> jax.Array:
            return self.loss_fn(params, xi[None], yi[None])

        return jax.vmap(one)(x, y)


def per_example(loss_fn: LossFn, params: Any, x: np.ndarray, y: np.ndarray) -> LossFn:
    """``loss_fn`` as a per-example loss, whichever convention it follows (checked by shape
    on two examples, without running it)."""
    n = min(len(x), 2)
    try:
        shape = jax.eval_shape(loss_fn, params, x[:n], y[:n]).shape
    except Exception as exc:  # traced without running: a shape or type the loss cannot take
        raise EvaluationDataError(
            f"loss_fn cannot take the evaluation data (inputs {x.shape} {x.dtype}, targets "
            f"{y.shape} {y.dtype}) with these parameters: {type(exc).__name__}: {exc}. Give "
            "inputs and targets shaped as in training."
        ) from exc
    if shape == ():
        return MeanAsPerExample(loss_fn)
    if shape == (n,):
        return loss_fn
    raise LossShapeError(
        f"loss_fn returned shape {shape} for {n} examples; return one loss per example "
        "(shape (batch,), e.g. optax.softmax_cross_entropy_with_integer_labels) or the "
        "batch mean (a scalar)"
    )


class JaxBackend(BackendBase):
    """LCA backend for a pure ``loss_fn(params, x, y)`` (per-example losses or their mean).

    ``params`` fixes the layout (and is the current point until ``self.params`` is set). A
    flax nnx model may stand for both: ``JaxBackend(loss_fn, model, data)`` with
    ``loss_fn(model, x, y)`` evaluates copies of the model and reads its parameters at each
    snapshot (layers named by module path).
    With several devices the evaluation chunks are sharded across them: the local ones, or
    under ``jax.distributed`` (one process per host) those of every process, each process
    holding the whole set and giving its devices their part; rank 0 writes the run.

    Args:
        loss_fn: ``loss_fn(params, x, y)``, pure and jit-able (``loss_fn(model, x, y)`` for
            an nnx model).
        params: a pytree of the parameters (dicts, lists, flax states), or an nnx model.
        data: the evaluation set (inputs, targets), host or device arrays.
        val_data: a validation set (inputs, targets): also allocate its loss change.
        batch_size: examples per evaluation chunk (the set is reduced in float64 over them).
        num_classes: the classes for per-class LCA (default: inferred from integer labels).
        max_vmap: most quadrature nodes evaluated in one vmapped call.
        devices: the devices to evaluate on (default: every local device, or the job's).
        resident_bytes: most bytes of the set kept on the devices; a larger one is streamed.
        arithmetic: where lca's own K-long arithmetic runs: "device" (the default, "auto",
            in one process: θ, Δ, the quadrature's sums and A as JAX arrays, float64 with
            ``jax_enable_x64``, else float32 with compensated sums; only per-layer numbers
            to the host) or "host" (numpy float64; a job of several processes).

    Raises:
        EmptyEvaluationSetError, EvaluationDataError: unusable evaluation data.
    """

    @classmethod
    def accepts(cls, model: Any, params: Any = None, *args: Any) -> bool:
        """A loss function whose parameters are (or contain) JAX arrays, or an nnx model."""
        if nnx.is_module(params):
            return callable(model)
        leaves = jax.tree_util.tree_leaves(params)
        return callable(model) and any(isinstance(leaf, jax.Array) for leaf in leaves)

    def __init__(
        self,
        loss_fn: LossFn,
        params: Any,
        data: tuple[Any, Any],
        *,
        val_data: tuple[Any, Any] | None = None,
        batch_size: int = DEFAULT_EVAL_BATCH,
        num_classes: int | None = None,
        max_vmap: int = DEFAULT_MAX_VMAP,
        devices: Sequence[jax.Device] | None = None,
        resident_bytes: int | None = None,
        arithmetic: str | None = None,
    ) -> None:
        # several processes hold θ each in its own devices: their arithmetic stays on the host
        self.arithmetic = check_arithmetic(
            arithmetic or "auto", device=jax.process_count() == 1, backend="JaxBackend"
        )
        self.module = ModuleParameters(params, loss_fn) if nnx.is_module(params) else None
        if self.module is not None:
            loss_fn, params = self.module.loss_fn, self.module.params()
        self.layout = layout_of(params)
        self.structure = structure_of(params)
        dtypes = set(self.structure.dtypes)
        self.dtype = np.dtype(dtypes.pop()) if len(dtypes) == 1 else np.dtype(np.float32)
        self.params = params
        self.max_vmap = max_vmap
        self.devices = list(devices) if devices is not None else jax.devices()
        self.writes = jax.process_index() == 0
        self.batch_size = self._fit_batch(batch_size)
        self._sharding = None
        if len(self.devices) > 1:
            mesh = Mesh(np.array(self.devices), ("data",))
            self._sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
        #: where the evaluation set is held: the mesh, or the one device asked for
        self._where = self._sharding if self._sharding is not None else self.devices[0]
        sets = array_sets(data, val_data)
        self.hold_sets(sets, sets["train"][1], num_classes)
        self.resident_bytes = (
            resident_bytes if resident_bytes is not None else resident_budget(_free(self.devices))
        )
        self._chunks: dict[tuple[str, bool], Chunks] = {}
        self.loss_fn = per_example(loss_fn, params, *sets["train"])

    def _fit_batch(self, batch: int) -> int:
        """Chunks split evenly over the devices."""
        n = len(self.devices)
        return max(n, batch // n * n)

    def chunks(self, split: str, per_class: bool) -> Chunks:
        """The split's padded chunks on the device(s), built once."""
        key = (split, per_class)
        if key not in self._chunks:
            padded = self.padded(split, per_class, self.batch_size, len(self.devices))
            self._chunks[key] = make_chunks(padded, self._where)
        return self._chunks[key]

    def subset_changed(self) -> None:
        """A new subset (``resample``): its chunks are padded and put on the device anew
        (the same shapes at every draw, so the compiled pass is reused)."""
        self._chunks = {k: c for k, c in self._chunks.items() if k[0] != "train"}

    # -- protocol -------------------------------------------------------------------------
    def from_writer(self, value: Any) -> Any:
        if jax.process_count() == 1:
            return value
        # as bytes: the processes that receive it do not know its shapes beforehand
        sent = np.frombuffer(pickle.dumps(value), dtype=np.uint8) if self.writes else None
        size = int(multihost_utils.broadcast_one_to_all(np.int32(0 if sent is None else sent.size)))
        data = multihost_utils.broadcast_one_to_all(
            np.zeros(size, np.uint8) if sent is None else sent
        )
        return pickle.loads(np.asarray(data).tobytes())

    def policy(self) -> dict[str, Any]:
        return {
            "framework": "jax",
            "jax_version": jax.__version__,
            "eval_batch_size": self.batch_size,
            "eval_samples": len(self.sets["train"][0]),
            "devices": [str(d) for d in self.devices],
            "processes": jax.process_count(),
            "streamed": self.streamed("train"),
            "reduction": f"Kahan-compensated {np.promote_types(self.dtype, np.float32).name}",
            "arithmetic": self.arithmetic,
        }

    def vector(self, params: Any) -> Any:
        """θ of a pytree (or a list of arrays) as the core computes with it: one JAX array
        where the leaves are, with device arithmetic (a new buffer: a jitted step may
        donate the leaves'), else a host vector (:func:`flatten`)."""
        leaves = jax.tree_util.tree_leaves(params)
        if self.arithmetic == "host":
            return flat_vector(leaves)
        leaves = [jnp.asarray(leaf) for leaf in leaves]
        dtype = jnp.result_type(*leaves)
        return jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])

    def snapshot(self) -> Snapshot:
        if self.module is not None:  # the model as it is now
            return Snapshot(self.vector(self.module.params()))
        return Snapshot(self.vector(self.params))

    def evaluate_split(
        self, thetas: list[Any], state: Any, split: str, per_class: bool
    ) -> list[Evaluation]:
        """Each θ's evaluation, answered in the kind of array θ came as: JAX arrays stay on
        their device (device arithmetic), host vectors get float64 host gradients."""
        out: list[Evaluation] = []
        on_device = isinstance(thetas[0], jax.Array)
        for start in range(0, len(thetas), self.max_vmap):
            batch = thetas[start : start + self.max_vmap]
            points = self._points(batch) if on_device else self._host_points(batch, split)
            streamed = self.streamed(split)
            if streamed:  # block by block: Σ over blocks (in float64 on the host)
                blocks = self.blocks(split, per_class, self.batch_size, len(self.devices))
                parts = [self._pass(points, make_chunks(b, self._where)) for b in blocks]
                losses = np.sum([p[0] for p in parts], axis=0, dtype=np.float64)
                if on_device:
                    grads = _sum_blocks(tuple(p[1] for p in parts))
                else:
                    grads = np.sum([host(p[1]) for p in parts], axis=0, dtype=np.float64)
            else:
                losses, grads = self._pass(points, self.chunks(split, per_class))
                if not on_device:
                    grads = host(grads)
            # each point's (groups, K): where they lie, or on the host (all at once)
            rows = KERNELS.rows(grads) if on_device else list(np.asarray(grads, np.float64))
            for loss, grad in zip(losses, rows, strict=True):
                if per_class or not on_device:
                    out.append(Evaluation.from_groups(loss, grad, per_class))
                else:
                    out.append(Evaluation(float(loss[0]), KERNELS.rows(grad)[0]))
        return out

    def _host_points(self, batch: list[np.ndarray], split: str) -> jax.Array | np.ndarray:
        """Host vectors as one array of points in the parameters' dtype: a host array goes
        to the jitted pass as it is (jit's own transfer is cheaper per call than
        jnp.asarray's: benchmarks/README.md); on a mesh, put on every device of it."""
        group = np.empty((len(batch), self.layout.size), dtype=self.dtype)
        for row, theta in zip(group, batch, strict=True):
            row[...] = theta  # cast in place: np.stack of casts makes more calls
        if self._sharding is not None:  # on every device of the mesh
            return global_array(group, NamedSharding(self._sharding.mesh, PartitionSpec()))
        if self.streamed(split):  # every block's pass takes them: sent once
            return jax.device_put(group, self._where)
        return group

    def _points(self, batch: list[jax.Array]) -> jax.Array:
        """Device vectors as one array of points in the parameters' dtype, where the
        evaluation runs (replicated over a mesh): moved between devices, never through
        the host."""
        points = _stack_as(tuple(batch), self.dtype)
        if self._sharding is not None:
            return jax.device_put(points, NamedSharding(self._sharding.mesh, PartitionSpec()))
        return jax.device_put(points, self._where)

    def _pass(self, points: jax.Array | np.ndarray, c: Chunks) -> tuple[np.ndarray, jax.Array]:
        """The losses (on the host) and gradients (where computed) of every point."""
        try:
            losses, grads = full_pass(
                points,
                c.xs,
                c.ys,
                c.ws,
                c.group,
                loss_fn=self.loss_fn,
                structure=self.structure,
                groups=c.groups,
                stacked=c.stacked,
            )
            return host(losses), grads
        except jax.errors.JaxRuntimeError as exc:
            if jax.process_count() > 1 and _collective_failed(exc):
                raise DistributedError.peer_lost(f"process {jax.process_index()}", exc) from exc
            raise


#: how XLA's collectives report a peer that is gone (gloo on CPU, NCCL on GPUs)
_PEER_LOST = ("all-reduce failed", "Connection reset", "Connection closed", "NCCL", "heartbeat")


def _collective_failed(exc: BaseException) -> bool:
    """Whether a runtime error is a collective's, not the loss's own (XLA gives no error
    type for it: the message is all there is; anything else is raised as it is)."""
    return any(marker in str(exc) for marker in _PEER_LOST)


def _free(devices: Sequence[jax.Device]) -> int | None:
    """Free memory of this process's first device when it reports it (GPUs), else None
    (CPU; another process's devices under jax.distributed cannot be asked)."""
    local = [d for d in devices if d.process_index == jax.process_index()]
    stats = local[0].memory_stats() if local else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return None
