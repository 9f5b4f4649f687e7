"""JAX: a flax CNN trained with optax; `tracker.update(params, new_params)` per step.

The optimizer comes from `lca_jax.optimizers` (optax's Adam, its hyperparameters kept in
the state), so `optimizer=` splits each step's LCA by the terms of the update.

python examples/jax_flax_cnn.py [--steps 40] [--out RUN]
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from _common import arguments, digits
from lca_jax import Tracker, optimizers


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(-1, 8, 8, 1)
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(len(x), -1)
        return nn.Dense(10)(x)


def loss_fn(params, x, y):
    """Each example's loss (the mean works too)."""
    return optax.softmax_cross_entropy_with_integer_labels(CNN().apply(params, x), y)


args = arguments(__doc__, steps=40)
x, y, x_eval, y_eval = digits()
y, y_eval = y.astype("int32"), y_eval.astype("int32")
params = CNN().init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))
# optax.adam(3e-3), built so that lca can read its hyperparameters from the state and
# split each step into gradient, momentum and weight-decay parts
optimizer = optimizers.adam(3e-3)
opt_state = optimizer.init(params)


@jax.jit
def step(params, opt_state, x, y):
    grads = jax.grad(lambda p: loss_fn(p, x, y).mean())(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


tracker = Tracker(loss_fn, params, (x_eval, y_eval), args.out, optimizer=optimizer)
for i in range(args.steps):
    idx = jax.random.randint(jax.random.PRNGKey(i), (64,), 0, len(x))
    new_params, new_state = step(params, opt_state, x[idx], y[idx])
    tracker.update(params, new_params, opt_state=(opt_state, new_state))
    params, opt_state = new_params, new_state
print(tracker.close())
