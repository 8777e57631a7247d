"""Counting, saving, loading and exporting a torch model (questions 29, 41), checked.

The CNN of `cnn_torch`, briefly trained on the bundled digits, then:

- parameters: `sum(p.numel())` must equal the hand count (`common.cnn_parameter_count`), the
  figure Keras's `summary()` prints for the same network (torch has no `summary()`; printing the
  module lists its layers);
- `torch.save(model.state_dict())` / `torch.load(..., weights_only=True)` into a new model:
  predictions must be bit-identical (`weights_only=True` refuses to unpickle arbitrary objects);
- `torch.export.export` -> `torch.export.save` (`.pt2`) -> `torch.export.load`: the reloaded
  program, with a dynamic batch dimension, must match the eager model on the whole test set.
"""

from __future__ import annotations

import torch

from dllab.supervised.cnn_torch import CNN
from dllab.supervised.common import cnn_parameter_count, load_images, report_history
from dllab.supervised.torch_training import fit, image_tensors


@torch.no_grad()
def logits(model, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(images)


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float) -> dict[str, float]:
    digits = load_images(ctx.seed)
    model = CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history = fit(ctx, model, optimizer, digits, epochs=epochs, batch_size=batch_size, name="serialization")
    report_history(ctx, history, "serialization", "torch CNN before saving")
    images, labels = image_tensors(digits.test)
    reference = logits(model, images)

    path = ctx.artifact("cnn_state_dict.pt")
    torch.save(model.state_dict(), path)
    loaded = CNN()
    loaded.load_state_dict(torch.load(path, weights_only=True))

    batch = torch.export.Dim("batch", min=2, max=4096)
    program = torch.export.export(model.eval(), (images[:8],), dynamic_shapes=({0: batch},))
    export_path = ctx.artifact("export/cnn.pt2")
    torch.export.save(program, export_path)
    with torch.no_grad():
        exported = torch.export.load(export_path).module()(images)

    ctx.skip_metric("weights_file_identical", "Keras's .weights.h5 format; torch's state_dict is already weights only")
    counted = sum(p.numel() for p in model.parameters())
    (ctx.artifact("model.txt")).write_text(f"{model}\n\nparameters: {counted}\n")
    return {
        "summary_parameters": counted,
        "summary_vs_hand_count": counted - cnn_parameter_count(8, 8, 10)["total"],
        "saved_model_identical": float(torch.equal(logits(loaded, images), reference)),
        "export_max_difference": float((exported - reference).abs().max()),
        "export_same_predictions": float(torch.equal(exported.argmax(dim=1), reference.argmax(dim=1))),
        "test_accuracy": float((reference.argmax(dim=1) == labels).float().mean()),
    }
