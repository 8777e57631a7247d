"""RNN, LSTM and GRU reading digit images row by row (question 18), in PyTorch.

An 8x8 image is a sequence of 8 time steps (rows) of 8 features (pixels). Layout: dllab uses
`batch_first=True`, input (batch, time, features), and classifies from `output[:, -1, :]`, the
last time step. The seed's `output[-1, :, :]` is the last time step only for the default
sequence-first layout (time, batch, features); on batch-first output it would pick the last
*image* of the batch. Measured: each cell's test accuracy, a logistic regression on the same
pixels as the in-run reference, and the two layouts computing the same thing with the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from dllab.supervised.common import class_count, load_images, report_history, summarize_cells
from dllab.supervised.torch_training import evaluate, fit, image_tensors

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RowReader(nn.Module):
    """A recurrent layer over the image rows and a linear classifier on its last output."""

    def __init__(self, cell: str, width: int = 8, hidden: int = 64, classes: int = 10, batch_first: bool = True):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.batch_first = batch_first
        self.recurrent = CELLS[cell](width, hidden, batch_first=batch_first)
        self.head = nn.Linear(hidden, classes)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        output, _ = self.recurrent(sequences)
        last = output[:, -1, :] if self.batch_first else output[-1, :, :]  # the seed's indexing
        return self.head(last)


@torch.no_grad()
def layout_difference(model: RowReader, images: torch.Tensor) -> float:
    """Copy the batch-first model's weights into a sequence-first one (the seed's layout), feed it
    the transposed batch, and return the largest difference of the logits."""
    cell = next(name for name, kind in CELLS.items() if isinstance(model.recurrent, kind))
    sequence_first = RowReader(cell, model.recurrent.input_size, model.recurrent.hidden_size,
                               model.head.out_features, batch_first=False)
    sequence_first.load_state_dict(model.state_dict())
    model.eval()
    return float((model(images) - sequence_first(images.transpose(0, 1))).abs().max())


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, hidden: int, data: str) -> dict[str, float]:
    digits = load_images(ctx.seed, data)
    rows, width = digits.train.images.shape[1:]
    test_x, test_y = image_tensors(digits.test, channels_first=False)
    metrics = {}
    for cell in CELLS:
        model = RowReader(cell, width, hidden, class_count(digits))
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        history = fit(ctx, model, optimizer, digits, epochs=epochs, batch_size=batch_size, name=cell,
                      channels_first=False)
        report_history(ctx, history, cell, f"torch {cell.upper()} over {rows} image rows")
        metrics[f"{cell}_test_accuracy"] = evaluate(model, test_x, test_y)[1]
        metrics[f"{cell}_layout_difference"] = layout_difference(model, test_x)
    return summarize_cells(metrics, CELLS, digits, ctx.seed)
