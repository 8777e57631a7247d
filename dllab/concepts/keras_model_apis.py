"""Keras's three ways to build a model (seed question 12): Sequential, functional, subclassed.

- `keras.Sequential`: a linear stack, one input tensor flowing through one layer after another;
- the functional API, `keras.Model(inputs, outputs)`: any directed acyclic graph of layers, with
  several inputs, several outputs, shared layers and branches;
- subclassing `keras.Model`: layers created in `__init__`, the computation written in `call`.

Measured here: the same two-layer network built the three ways, given the same weights, gives
the same outputs (and equals a numpy forward pass of those weights); a two-input, two-output
model on the digits (an image plus a side feature in; the class and the image's ink mass out)
that `Sequential` cannot express (putting the merge layer in a Sequential fails) trains with
`fit`, both losses falling.
"""

from __future__ import annotations

import keras
import numpy as np

from dllab.data.digits import load_digits


def sequential_network(features: int, hidden: int, outputs: int) -> keras.Model:
    return keras.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(outputs),
    ])


def functional_network(features: int, hidden: int, outputs: int) -> keras.Model:
    inputs = keras.Input((features,))
    hidden_units = keras.layers.Dense(hidden, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs)(hidden_units))


class SubclassedNetwork(keras.Model):
    def __init__(self, hidden: int, outputs: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden, activation="relu")
        self.out = keras.layers.Dense(outputs)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def two_input_two_output_network(pixels: int, side_features: int, classes: int) -> keras.Model:
    """Image and side feature in; class probabilities and a regression target out."""
    image = keras.Input((pixels,), name="image")
    side = keras.Input((side_features,), name="side")
    shared = keras.layers.Dense(32, activation="relu")(image)
    merged = keras.layers.Concatenate()([shared, side])
    label = keras.layers.Dense(classes, activation="softmax", name="label")(merged)
    ink = keras.layers.Dense(1, name="ink")(shared)
    return keras.Model([image, side], [label, ink])


def numpy_forward(weights: list[np.ndarray], inputs: np.ndarray) -> np.ndarray:
    kernel1, bias1, kernel2, bias2 = weights
    return np.maximum(inputs @ kernel1 + bias1, 0.0) @ kernel2 + bias2


def full_batch_losses(model: keras.Model, feed: dict, labels: np.ndarray, ink: np.ndarray) -> tuple[float, float]:
    """Cross-entropy of the class head and MSE of the ink head on the whole training set, in numpy."""
    probabilities, predicted_ink = (keras.ops.convert_to_numpy(output) for output in model(feed))
    cross_entropy = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    return float(cross_entropy), float(np.mean((predicted_ink - ink) ** 2))


def run(ctx, *, features: int, hidden: int, outputs: int, epochs: int, batch_size: int) -> dict[str, float]:
    """Scenario entry: equal outputs across the three APIs; a multi-input multi-output model trains."""
    if min(features, hidden, outputs, epochs, batch_size) < 1:
        raise ValueError("features, hidden, outputs, epochs and batch_size must be positive")
    inputs = ctx.rng().normal(size=(64, features)).astype("float32")
    sequential = sequential_network(features, hidden, outputs)
    functional = functional_network(features, hidden, outputs)
    subclassed = SubclassedNetwork(hidden, outputs)
    subclassed(inputs[:1])  # a subclassed model creates its weights on the first call
    weights = sequential.get_weights()
    functional.set_weights(weights)
    subclassed.set_weights(weights)
    reference = numpy_forward(weights, inputs.astype("float64"))
    sequential_out, functional_out, subclassed_out = (
        keras.ops.convert_to_numpy(model(inputs)) for model in (sequential, functional, subclassed))

    # A merge of two tensors has no place in a linear stack.
    try:
        keras.Sequential([keras.Input((features,)), keras.layers.Concatenate(), keras.layers.Dense(1)])
        sequential_merge_failed = 0.0
    except (ValueError, TypeError):
        sequential_merge_failed = 1.0

    train = load_digits(ctx.seed).train
    images = train.flat()
    side = (train.labels % 2).astype("float32")[:, None]  # the label's parity, a hint for the class head
    ink = images.mean(axis=1, keepdims=True)  # a regression target computed from the image
    model = two_input_two_output_network(images.shape[1], side.shape[1], 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss={"label": "sparse_categorical_crossentropy", "ink": "mse"},
                  jit_compile=False)  # XLA compilation would cost more than these few steps
    feed = {"image": images, "side": side}
    targets = {"label": train.labels, "ink": ink}
    before = full_batch_losses(model, feed, train.labels, ink)
    history = model.fit(feed, targets, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    after = full_batch_losses(model, feed, train.labels, ink)
    for epoch, loss in enumerate(history.history["loss"]):
        ctx.log_scalar("losses/two_output_total", loss, epoch)
    return {
        "functional_vs_sequential_max_abs": float(np.max(np.abs(functional_out - sequential_out))),
        "subclassed_vs_sequential_max_abs": float(np.max(np.abs(subclassed_out - sequential_out))),
        "sequential_vs_numpy_max_abs": float(np.max(np.abs(sequential_out - reference))),
        "output_scale": float(np.max(np.abs(reference))),
        "sequential_merge_failed": sequential_merge_failed,
        "two_output_model_inputs": len(model.inputs),
        "two_output_model_outputs": len(model.outputs),
        "label_loss_ratio": after[0] / before[0],
        "ink_loss_ratio": after[1] / before[1],
    }
