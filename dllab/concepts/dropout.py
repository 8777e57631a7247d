"""Dropout and its mask (seed question 13), in PyTorch and in Keras, measured the same way.

In training, dropout draws a fresh Bernoulli mask in the *forward* pass, zeroes each activation
with probability p and scales the survivors by 1/(1-p) ("inverted dropout"), so the expected
output equals the input and nothing needs rescaling at inference, where dropout is the identity.
Backpropagation multiplies the incoming gradient by the same mask and scale: the gradient is
exactly zero where the output was dropped. The mask is not "applied to the input data in
backprop".

`dropout_torch` and `dropout_keras` each return one training-mode forward pass, the input
gradient of sum(output * upstream) from that same pass, a second training-mode pass and an
inference pass; `dropout_statistics` turns them into the figures checked for both frameworks.
`fault` injects one mistake for a negative control (see the scenario file); "none" is the
correct use of the layer.
"""

from __future__ import annotations

import numpy as np


FAULTS = ("none", "keep-probability", "unscaled", "no-eval-mode", "backward-new-mask",
          "same-mask-each-pass")


def layer_rate(rate: float, fault: str) -> float:
    """The rate handed to the layer: p, or 1 - p under the mistake of TF 1's keep_prob."""
    return 1.0 - rate if fault == "keep-probability" else rate


def dropout_torch(inputs: np.ndarray, upstream: np.ndarray, rate: float, seed: int, fault: str = "none"):
    import torch

    x = torch.tensor(inputs, requires_grad=True)
    layer = torch.nn.Dropout(layer_rate(rate, fault))
    layer.train()

    def training_pass():
        if fault == "same-mask-each-pass":  # the generator reseeded before every pass
            torch.manual_seed(seed)
        output = layer(x)
        return output * (1 - rate) if fault == "unscaled" else output  # undoes the 1/(1-p)

    output = training_pass()
    graph_output = training_pass() if fault == "backward-new-mask" else output  # a second mask
    (graph_output * torch.tensor(upstream)).sum().backward()
    second = training_pass().detach().numpy()
    if fault != "no-eval-mode":
        layer.eval()
    inference = layer(x).detach().numpy()
    return output.detach().numpy(), x.grad.numpy(), second, inference


def dropout_keras(inputs: np.ndarray, upstream: np.ndarray, rate: float, seed: int, fault: str = "none"):
    import keras

    from dllab.concepts.keras_autodiff import value_and_gradient

    layer = keras.layers.Dropout(layer_rate(rate, fault), seed=seed)

    def training_pass(x):
        if fault == "same-mask-each-pass":  # a new layer with the same seed: the same mask
            return keras.layers.Dropout(rate, seed=seed)(x, training=True)
        output = layer(x, training=True)
        return output * (1 - rate) if fault == "unscaled" else output  # undoes the 1/(1-p)

    def weighted_sum(x):
        output = training_pass(x)
        return keras.ops.sum(output * keras.ops.convert_to_tensor(upstream)), output

    _, gradient, output = value_and_gradient(weighted_sum, inputs)
    if fault == "backward-new-mask":  # the output of another pass, with its own mask
        output = keras.ops.convert_to_numpy(training_pass(inputs))
    second = keras.ops.convert_to_numpy(training_pass(inputs))
    inference = keras.ops.convert_to_numpy(layer(inputs, training=fault == "no-eval-mode"))
    return output, gradient, second, inference


def dropout_statistics(inputs, upstream, rate, output, gradient, second, inference) -> dict[str, float]:
    """Each figure against its exact expectation; sampling noise expressed in standard errors (z)."""
    n = inputs.size
    dropped = output == 0  # inputs are never zero, so a zero output means a dropped unit
    kept = ~dropped
    scale = 1.0 / (1.0 - rate)
    # E[output - input] = 0 with variance input^2 * rate / (1 - rate) per unit.
    mean_shift = (output - inputs).sum() / np.sqrt((inputs.astype(np.float64) ** 2).sum() * rate / (1 - rate))
    # Two independent masks disagree on a unit with probability 2 p (1 - p).
    disagreement = np.mean((second == 0) != dropped)
    expected_disagreement = 2 * rate * (1 - rate)
    return {
        "dropped_fraction": float(dropped.mean()),
        "mask_rate_z": float(abs(dropped.mean() - rate) / np.sqrt(rate * (1 - rate) / n)),
        "kept_scale_relative_error": float(np.max(np.abs(output[kept] / inputs[kept] - scale)) / scale),
        "expectation_z": float(abs(mean_shift)),
        "inference_max_abs_diff": float(np.max(np.abs(inference - inputs))),
        "gradient_where_dropped_max_abs": float(np.max(np.abs(gradient[dropped]))),
        "gradient_where_kept_relative_error": float(
            np.max(np.abs(gradient[kept] - upstream[kept] * scale)) / np.max(np.abs(upstream[kept] * scale))),
        "new_mask_disagreement_z": float(abs(disagreement - expected_disagreement)
                                         / np.sqrt(expected_disagreement * (1 - expected_disagreement) / n)),
        "new_mask_disagreement": float(disagreement),
    }


def _inputs(ctx, units: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be strictly between 0 and 1, got {rate}")
    if units < 100:
        raise ValueError(f"units must be at least 100 for the statistics to mean anything, got {units}")
    rng = ctx.rng()
    inputs = rng.uniform(0.5, 1.5, size=units).astype(np.float32)  # never zero
    upstream = rng.normal(size=units).astype(np.float32)
    return inputs, upstream


def run_torch(ctx, *, units: int, rate: float, fault: str = "none") -> dict[str, float]:
    inputs, upstream = _inputs(ctx, units, rate)
    return dropout_statistics(inputs, upstream, rate,
                              *dropout_torch(inputs, upstream, rate, ctx.seed, fault))


def run_keras(ctx, *, units: int, rate: float, fault: str = "none") -> dict[str, float]:
    inputs, upstream = _inputs(ctx, units, rate)
    return dropout_statistics(inputs, upstream, rate,
                              *dropout_keras(inputs, upstream, rate, ctx.seed, fault))
