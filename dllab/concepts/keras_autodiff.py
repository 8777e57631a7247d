"""Gradients of a Keras computation on whichever backend Keras runs on (TensorFlow or PyTorch).

Keras 3 has no backend-neutral `grad` function: training goes through each backend's own
autodiff (`tf.GradientTape`, `torch.autograd`). The concept scenarios that inspect a gradient
use this one helper, so the same scenario runs on KERAS_BACKEND=tensorflow and =torch.
"""

from __future__ import annotations

import numpy as np


def value_and_gradient(function, values: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Differentiate `function(x) -> (scalar, auxiliary output)` at `x = values`.

    Returns the scalar, the gradient with respect to x and the auxiliary output, as numpy. The
    function runs once, so a random op inside it (a dropout mask) is the same for all three.
    """
    import keras

    from dllab.errors import SkipScenario

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(values)
        with tf.GradientTape() as tape:
            scalar, auxiliary = function(x)
        gradient = tape.gradient(scalar, x)
        return float(scalar), gradient.numpy(), keras.ops.convert_to_numpy(auxiliary)
    if backend == "torch":
        x = keras.ops.convert_to_tensor(values).detach().requires_grad_(True)  # on Keras's device
        scalar, auxiliary = function(x)
        scalar.backward()
        return float(scalar.detach()), x.grad.cpu().numpy(), auxiliary.detach().cpu().numpy()
    raise SkipScenario(f"gradients are inspected on the tensorflow and torch backends, not {backend!r}")
