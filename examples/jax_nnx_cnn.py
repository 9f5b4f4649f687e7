"""JAX: a flax nnx CNN (LayerNorm) trained with AdamW; the optimizer updates the model in
place, so the step goes inside `with tracker.step()`, as in PyTorch.

python examples/jax_nnx_cnn.py [--steps 40] [--out RUN]
"""

import jax
import optax
from _common import arguments, digits
from flax import nnx
from lca_jax import Tracker


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.head = nnx.Linear(8 * 4 * 4, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.norm(self.conv(x.reshape(-1, 8, 8, 1))))
        x = nnx.avg_pool(x, (2, 2), (2, 2))
        return self.head(x.reshape(len(x), -1))


def loss_fn(model, x, y):
    """Each example's loss, of the model itself (lca evaluates copies of it)."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


args = arguments(__doc__, steps=40)
x, y, x_eval, y_eval = digits()
y, y_eval = y.astype("int32"), y_eval.astype("int32")
model = CNN(nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)


@nnx.jit
def gradients(model, x, y):
    return nnx.grad(lambda m: loss_fn(m, x, y).mean())(model)


tracker = Tracker(loss_fn, model, (x_eval, y_eval), args.out)  # layers: conv, norm, head
for i in range(args.steps):
    idx = jax.random.randint(jax.random.PRNGKey(i), (64,), 0, len(x))
    grads = gradients(model, x[idx], y[idx])
    with tracker.step():
        optimizer.update(model, grads)
print(tracker.close())
