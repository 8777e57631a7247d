"""The seed's Conv-Pool-Conv-Pool-Dense CNN (question 17) in Keras 3, on the bundled 8x8 digits.

Measured: test accuracy on the shared digits split, next to a logistic regression trained in the
same run on the same pixels, and `count_params()` against a hand count. Runs on the TensorFlow and
the torch backend. Resumable: `dllab run supervised/cnn --framework keras --resume RUN_FOLDER`.
"""

from __future__ import annotations

import keras
from keras import layers

from dllab.supervised.common import (CONV_FILTERS, DENSE_UNITS, KERNEL, class_count, cnn_parameter_count,
                                     fed_digits, load_images, logistic_regression_accuracy, report_history)
from dllab.supervised.keras_training import fit


def build_cnn(height: int = 8, width: int = 8, classes: int = 10, channels: int = 1,
              conv_bias: bool = True) -> keras.Model:
    """The CNN, emitting logits. Layers up to "features" are the reusable base; "head" classifies."""
    if height % 4 or width % 4:
        raise ValueError(f"image size {height}x{width} must be divisible by 4 (two 2x2 poolings)")
    first, second = CONV_FILTERS
    return keras.Sequential([
        keras.Input((height, width, channels)),
        layers.Conv2D(first, KERNEL, padding="same", activation="relu", use_bias=conv_bias, name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(second, KERNEL, padding="same", activation="relu", use_bias=conv_bias, name="conv2"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(DENSE_UNITS, activation="relu", name="features"),
        layers.Dense(classes, name="head"),
    ], name="cnn")


def compile_classifier(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, data: str,
        fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed, data, side_multiple=4)
    height, width = digits.train.images.shape[1:]
    classes = class_count(digits)
    conv_bias = fault != "conv-without-bias"  # a control's mistake
    model = compile_classifier(build_cnn(height, width, classes, conv_bias=conv_bias), learning_rate)
    validation = (digits.validation.images[..., None], digits.validation.labels)
    train = fed_digits(digits, fault, ctx.seed).train
    history = fit(ctx, model, train.images[..., None], train.labels, validation,
                  epochs=epochs, batch_size=batch_size, name="cnn", resumable=True)
    report_history(ctx, history, "cnn", f"Keras ({keras.backend.backend()}) CNN on {data}")
    test = model.evaluate(digits.test.images[..., None], digits.test.labels, verbose=0, return_dict=True)
    baseline = logistic_regression_accuracy(digits.train.images, digits.train.labels,
                                            digits.test.images, digits.test.labels, ctx.seed)
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "logistic_regression_accuracy": baseline,
        "advantage_over_logistic": test["accuracy"] - baseline,
        "parameters": model.count_params(),
        "parameter_count_error": model.count_params() - cnn_parameter_count(height, width, classes)["total"],
    }
