"""Keras's three ways to build a model (seed question 12): Sequential, functional, subclassed.

- `keras.Sequential`: a linear stack, one input tensor flowing through one layer after another;
- the functional API, `keras.Model(inputs, outputs)`: any directed acyclic graph of layers, with
  several inputs, several outputs, shared layers and branches;
- subclassing `keras.Model`: layers created in `__init__`, the computation written in `call`.

Measured here: the same two-layer network built the three ways, given the same weights, gives
the same outputs (and equals a numpy forward pass of those weights); a two-input, two-output
model on the digits (an image plus a side feature in; the class and the image's ink mass out)
that `Sequential` cannot express (putting the merge layer in a Sequential fails) trains with
`fit`, both losses falling. `fault` injects one mistake for a negative control (see the
scenario file); "none" is the correct program.
"""

from __future__ import annotations

import keras
import numpy as np

from dllab.data.digits import load_digits


FAULTS = ("none", "weights-not-copied", "sequential-without-relu", "zero-weights",
          "refused-for-another-reason", "side-into-image", "frozen-layers")


def sequential_network(features: int, hidden: int, outputs: int, activation: str = "relu") -> keras.Model:
    return keras.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(hidden, activation=activation),
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


def two_input_two_output_network(pixels: int, side_features: int, classes: int,
                                 side_into_image: bool = False) -> keras.Model:
    """Image and side feature in; class probabilities (from the image features and the side
    feature) and a regression target (from the image features only) out. `side_into_image` is
    a wiring mistake, for a negative control: the side feature added to every pixel."""
    image = keras.Input((pixels,), name="image")
    side = keras.Input((side_features,), name="side")
    shared = keras.layers.Dense(32, activation="relu", name="shared")(image + side if side_into_image else image)
    merged = keras.layers.Concatenate(name="merge")([shared, side])
    label = keras.layers.Dense(classes, activation="softmax", name="label")(merged)
    ink = keras.layers.Dense(1, name="ink")(shared)
    return keras.Model([image, side], [label, ink])


def two_output_numpy(model: keras.Model, images: np.ndarray, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The intended wiring in numpy, from the model's own weights: shared = relu(image W + b);
    label = softmax([shared, side] W + b); ink = shared W + b (the side feature not used)."""
    def dense(name, x):
        kernel, bias = (w.astype(np.float64) for w in model.get_layer(name).get_weights())
        return x @ kernel + bias

    shared = np.maximum(dense("shared", images.astype(np.float64)), 0.0)
    logits = dense("label", np.concatenate([shared, side], axis=1))
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probabilities, dense("ink", shared)


def numpy_forward(weights: list[np.ndarray], inputs: np.ndarray) -> np.ndarray:
    kernel1, bias1, kernel2, bias2 = weights
    return np.maximum(inputs @ kernel1 + bias1, 0.0) @ kernel2 + bias2


def full_batch_losses(model: keras.Model, feed: dict, labels: np.ndarray, ink: np.ndarray) -> tuple[float, float]:
    """Cross-entropy of the class head and MSE of the ink head on the whole training set, in numpy."""
    probabilities, predicted_ink = (keras.ops.convert_to_numpy(output) for output in model(feed))
    cross_entropy = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    return float(cross_entropy), float(np.mean((predicted_ink - ink) ** 2))


def measure_three_apis(inputs: np.ndarray, features: int, hidden: int, outputs: int,
                       fault: str) -> dict[str, float]:
    """The same weights in a Sequential, a functional and a subclassed model: equal outputs,
    equal to a numpy forward pass; `output_scale` shows the outputs are not all zero."""
    sequential = sequential_network(features, hidden, outputs,
                                    "linear" if fault == "sequential-without-relu" else "relu")
    functional = functional_network(features, hidden, outputs)
    subclassed = SubclassedNetwork(hidden, outputs)
    subclassed(inputs[:1])  # a subclassed model creates its weights on the first call
    weights = sequential.get_weights()
    if fault == "zero-weights":
        weights = [np.zeros_like(w) for w in weights]
        sequential.set_weights(weights)
    if fault != "weights-not-copied":
        functional.set_weights(weights)
        subclassed.set_weights(weights)
    reference = numpy_forward(weights, inputs.astype("float64"))
    sequential_out, functional_out, subclassed_out = (
        keras.ops.convert_to_numpy(model(inputs)) for model in (sequential, functional, subclassed))
    return {
        "functional_vs_sequential_max_abs": float(np.max(np.abs(functional_out - sequential_out))),
        "subclassed_vs_sequential_max_abs": float(np.max(np.abs(subclassed_out - sequential_out))),
        "sequential_vs_numpy_max_abs": float(np.max(np.abs(sequential_out - reference))),
        "output_scale": float(np.max(np.abs(reference))),
    }


def measure_sequential_merge(features: int, fault: str) -> dict[str, float]:
    """A merge of two tensors has no place in a linear stack: Keras refuses a Concatenate that
    receives the one tensor a Sequential passes on (ValueError "should be called on a list")."""
    layers = [keras.Input((features,)), keras.layers.Concatenate(), keras.layers.Dense(1)]
    if fault == "refused-for-another-reason":  # a 4-D layer on flat input fails before the merge
        layers.insert(1, keras.layers.Conv2D(2, 3))
    try:
        keras.Sequential(layers)
        return {"sequential_merge_failed": 0.0}
    except ValueError as error:
        return {"sequential_merge_failed": float("Concatenate" in str(error)
                                                 and "should be called on a list" in str(error))}


def measure_two_input_two_output(ctx, epochs: int, batch_size: int, fault: str) -> dict[str, float]:
    """A functional model with two inputs and two outputs: wired as intended (equal to a numpy
    forward pass of its weights; the side input moves the class head and not the ink head),
    and it trains with fit(): both losses fall well below their values before training."""
    train = load_digits(ctx.seed).train
    images = train.flat()
    side = (train.labels % 2).astype("float32")[:, None]  # the label's parity, a hint for the class head
    ink = images.mean(axis=1, keepdims=True)  # a regression target computed from the image
    model = two_input_two_output_network(images.shape[1], side.shape[1], 10,
                                         side_into_image=fault == "side-into-image")
    if fault == "frozen-layers":  # as when reusing layers for transfer, then forgetting to unfreeze
        model.trainable = False
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
    label_out, ink_out = (keras.ops.convert_to_numpy(o) for o in model(feed))
    flipped_label, flipped_ink = (keras.ops.convert_to_numpy(o) for o in model({"image": images, "side": 1 - side}))
    label_ref, ink_ref = two_output_numpy(model, images, side)
    return {
        "two_output_model_inputs": len(model.inputs),
        "two_output_model_outputs": len(model.outputs),
        "two_output_vs_numpy_max_abs": float(max(np.abs(label_out - label_ref).max(), np.abs(ink_out - ink_ref).max())),
        "label_side_sensitivity": float(np.abs(flipped_label - label_out).max()),
        "ink_side_sensitivity": float(np.abs(flipped_ink - ink_out).max()),
        "label_loss_ratio": after[0] / before[0],
        "ink_loss_ratio": after[1] / before[1],
    }


def run(ctx, *, features: int, hidden: int, outputs: int, epochs: int, batch_size: int,
        fault: str = "none") -> dict[str, float]:
    """Scenario entry: equal outputs across the three APIs; a multi-input multi-output model trains."""
    inputs = ctx.rng().normal(size=(64, features)).astype("float32")
    return {
        **measure_three_apis(inputs, features, hidden, outputs, fault),
        **measure_sequential_merge(features, fault),
        **measure_two_input_two_output(ctx, epochs, batch_size, fault),
    }
