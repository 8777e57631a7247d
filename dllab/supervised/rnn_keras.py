"""SimpleRNN, LSTM and GRU reading digit images row by row (question 18), in Keras 3.

An 8x8 image is a sequence of 8 time steps (rows) of 8 features. Keras recurrent layers always
take batch-first input (batch, time, features) (Keras 3 has no `time_major`); with
`return_sequences=False` they return the last time step's output, which is `output[:, -1, :]`
of the full sequence (checked with the same weights). Measured: each cell's test accuracy and a
logistic regression on the same pixels as the in-run reference.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from dllab.supervised.common import class_count, load_images, report_history, summarize_cells
from dllab.supervised.keras_training import accuracy, fit

CELLS = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def build_row_reader(cell: str, rows: int = 8, width: int = 8, hidden: int = 64, classes: int = 10,
                     return_sequences: bool = False) -> keras.Model:
    """A recurrent layer over the image rows and a Dense classifier on its last output."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    inputs = keras.Input((rows, width))  # (batch, time, features)
    output = CELLS[cell](hidden, return_sequences=return_sequences, name="recurrent")(inputs)
    if return_sequences:
        output = output[:, -1, :]
    return keras.Model(inputs, layers.Dense(classes, name="head")(output), name=f"{cell}_reader")


def layout_difference(model: keras.Model, cell: str, images: np.ndarray) -> float:
    """Same weights, full sequence output sliced at [:, -1, :]: the largest logit difference."""
    rows, width = images.shape[1:]
    full = build_row_reader(cell, rows, width, model.get_layer("recurrent").units,
                            model.get_layer("head").units, return_sequences=True)
    full.set_weights(model.get_weights())
    last_step = keras.ops.convert_to_numpy(model(images, training=False))
    sliced = keras.ops.convert_to_numpy(full(images, training=False))
    return float(np.max(np.abs(last_step - sliced)))


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, hidden: int, data: str) -> dict[str, float]:
    digits = load_images(ctx.seed, data)
    rows, width = digits.train.images.shape[1:]
    validation = (digits.validation.images, digits.validation.labels)
    metrics = {}
    for cell in CELLS:
        model = build_row_reader(cell, rows, width, hidden, class_count(digits))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = fit(ctx, model, digits.train.images, digits.train.labels, validation,
                      epochs=epochs, batch_size=batch_size, name=cell)
        report_history(ctx, history, cell, f"Keras ({keras.backend.backend()}) {cell.upper()} over image rows")
        metrics[f"{cell}_test_accuracy"] = accuracy(model, digits.test.images, digits.test.labels)
        metrics[f"{cell}_layout_difference"] = layout_difference(model, cell, digits.test.images)
    return summarize_cells(metrics, CELLS, digits, ctx.seed)
