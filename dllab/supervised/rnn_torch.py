"""RNN, LSTM and GRU reading digit images row by row (question 18), in PyTorch.

An 8x8 image is a sequence of 8 time steps (rows) of 8 features (pixels). Layout: dllab uses
`batch_first=True`, input (batch, time, features), and classifies from `output[:, -1, :]`, the
last time step. The seed's `output[-1, :, :]` is the last time step only for the default
sequence-first layout (time, batch, features); on batch-first output it would pick the last
*image* of the batch. Measured: each cell's test accuracy, a logistic regression on the same
pixels as the in-run reference, and the layout: the model's logits against a recurrence stepped
by hand in numpy over the image rows with the model's own weights (`references.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dllab.supervised.common import class_count, fed_digits, load_images, report_history, summarize_cells
from dllab.supervised.references import recurrent_last_state
from dllab.supervised.torch_training import evaluate, fit, image_tensors

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RowReader(nn.Module):
    """A recurrent layer over the image rows and a linear classifier on its last output."""

    def __init__(self, cell: str, width: int = 8, hidden: int = 64, classes: int = 10, batch_first: bool = True):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.cell, self.batch_first = cell, batch_first
        self.recurrent = CELLS[cell](width, hidden, batch_first=batch_first)
        self.head = nn.Linear(hidden, classes)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        output, _ = self.recurrent(sequences)
        last = output[:, -1, :] if self.batch_first else output[-1, :, :]  # the seed's indexing
        return self.head(last)


@torch.no_grad()
def reference_logits(model: RowReader, images: np.ndarray) -> np.ndarray:
    """What the model must compute on (batch, rows, width) images: its own weights, stepped by
    hand over the rows (`recurrent_last_state`), then its linear head."""
    weights = {name: p.detach().double().numpy() for name, p in model.named_parameters()}
    state = recurrent_last_state(model.cell, images, weights["recurrent.weight_ih_l0"],
                                 weights["recurrent.weight_hh_l0"], weights["recurrent.bias_ih_l0"],
                                 weights["recurrent.bias_hh_l0"])
    return state @ weights["head.weight"].T + weights["head.bias"]


@torch.no_grad()
def layout_difference(model: RowReader, sequences: torch.Tensor, images: np.ndarray) -> float:
    """The largest difference between the logits of the model fed `sequences` (what the
    pipeline gives it) and the hand recurrence over the rows of `images`: about 1e-6 when the
    model reads (batch, time = rows, features), order 1 for any other layout."""
    model.eval()
    return float(np.max(np.abs(model(sequences).double().numpy() - reference_logits(model, images))))


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, hidden: int, data: str,
        fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed, data)
    fed = fed_digits(digits, fault, ctx.seed)  # as the pipeline feeds them (a control's mistake)
    rows, width = digits.train.images.shape[1:]
    test_x, test_y = image_tensors(fed.test, channels_first=False)
    metrics = {}
    for cell in CELLS:
        model = RowReader(cell, width, hidden, class_count(digits))
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        history = fit(ctx, model, optimizer, fed, epochs=epochs, batch_size=batch_size, name=cell,
                      channels_first=False)
        report_history(ctx, history, cell, f"torch {cell.upper()} over {rows} image rows")
        metrics[f"{cell}_test_accuracy"] = evaluate(model, test_x, test_y)[1]
        metrics[f"{cell}_layout_difference"] = layout_difference(model, test_x, digits.test.images)
    return summarize_cells(metrics, CELLS, digits, ctx.seed)
