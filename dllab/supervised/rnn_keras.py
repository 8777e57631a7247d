"""SimpleRNN, LSTM and GRU reading digit images row by row (question 18), in Keras 3.

An 8x8 image is a sequence of 8 time steps (rows) of 8 features. Keras recurrent layers always
take batch-first input (batch, time, features) (Keras 3 has no `time_major`); with
`return_sequences=False` they return the last time step's output. Measured: each cell's test
accuracy, a logistic regression on the same pixels as the in-run reference, and the layout: the
model's logits against a recurrence stepped by hand in numpy over the image rows with the
model's own weights (`references.py`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from dllab.supervised.common import class_count, fed_digits, load_images, report_history, summarize_cells
from dllab.supervised.keras_training import accuracy, fit
from dllab.supervised.references import recurrent_last_state

CELLS = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def build_row_reader(cell: str, rows: int = 8, width: int = 8, hidden: int = 64, classes: int = 10) -> keras.Model:
    """A recurrent layer over the image rows and a Dense classifier on its last output."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    inputs = keras.Input((rows, width))  # (batch, time, features)
    output = CELLS[cell](hidden, name="recurrent")(inputs)
    return keras.Model(inputs, layers.Dense(classes, name="head")(output), name=f"{cell}_reader")


def torch_layout(cell: str, recurrent: layers.Layer) -> tuple[np.ndarray, ...]:
    """The Keras layer's weights as torch's (w_ih, w_hh, b_ih, b_hh): kernels transposed, the
    GRU's gates reordered from Keras's z, r, h to torch's r, z, n (the LSTM's i, f, c, o is
    torch's i, f, g, o already); a single Keras bias becomes b_ih with b_hh = 0."""
    kernel, recurrent_kernel, bias = (np.asarray(w, np.float64) for w in recurrent.get_weights())
    if cell == "gru":  # reset_after=True (Keras 3's default): bias is (2, 3*hidden)
        def reorder(matrix):
            z, r, h = np.split(matrix, 3, axis=-1)
            return np.concatenate([r, z, h], axis=-1)
        return reorder(kernel).T, reorder(recurrent_kernel).T, reorder(bias[0]), reorder(bias[1])
    return kernel.T, recurrent_kernel.T, bias, np.zeros_like(bias)


def layout_difference(model: keras.Model, cell: str, sequences: np.ndarray, images: np.ndarray) -> float:
    """The largest difference between the logits of the model fed `sequences` (what the
    pipeline gives it) and the hand recurrence over the rows of `images` with the model's own
    weights: about 1e-6 when the model reads (batch, time = rows, features), order 1 otherwise."""
    state = recurrent_last_state(cell, images, *torch_layout(cell, model.get_layer("recurrent")))
    head_kernel, head_bias = (np.asarray(w, np.float64) for w in model.get_layer("head").get_weights())
    logits = np.asarray(keras.ops.convert_to_numpy(model(sequences, training=False)), np.float64)
    return float(np.max(np.abs(logits - (state @ head_kernel + head_bias))))


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, hidden: int, data: str,
        fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed, data)
    fed = fed_digits(digits, fault, ctx.seed)  # as the pipeline feeds them (a control's mistake)
    rows, width = digits.train.images.shape[1:]
    validation = (fed.validation.images, fed.validation.labels)
    metrics = {}
    for cell in CELLS:
        model = build_row_reader(cell, rows, width, hidden, class_count(digits))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = fit(ctx, model, fed.train.images, fed.train.labels, validation,
                      epochs=epochs, batch_size=batch_size, name=cell)
        report_history(ctx, history, cell, f"Keras ({keras.backend.backend()}) {cell.upper()} over image rows")
        metrics[f"{cell}_test_accuracy"] = accuracy(model, fed.test.images, fed.test.labels)
        metrics[f"{cell}_layout_difference"] = layout_difference(model, cell, fed.test.images, digits.test.images)
    return summarize_cells(metrics, CELLS, digits, ctx.seed)
