"""Counting, saving, loading and exporting a torch model (questions 29, 41), checked.

The CNN of `cnn_torch`, briefly trained on the bundled digits, then:

- parameters: `sum(p.numel())` must equal the hand count (`common.cnn_parameter_count`), the
  figure Keras's `summary()` prints for the same network (torch has no `summary()`; printing the
  module lists its layers);
- `torch.save(model.state_dict())` / `torch.load(..., weights_only=True)` into a new model:
  predictions must be bit-identical (`weights_only=True` refuses to unpickle arbitrary objects);
- a training checkpoint, `{"model": state_dict, "optimizer": optimizer.state_dict()}`, loaded
  the same way: bit-identical predictions, and one more epoch of training from it must end with
  the weights of the model that was never saved (Adam's moments and step count came back too);
- `torch.export.export` -> `torch.export.save` (`.pt2`) -> `torch.export.load`: the reloaded
  program, with a dynamic batch dimension, must match the eager model on the whole test set.
"""

from __future__ import annotations

import torch

from dllab.supervised.cnn_torch import CNN
from dllab.supervised.common import cnn_parameter_count, epoch_orders, load_images, report_history
from dllab.supervised.torch_training import fit, image_tensors, train_epoch


@torch.no_grad()
def logits(model, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(images)


def save_artifacts(ctx, model, optimizer, images: torch.Tensor, fault: str) -> dict:
    """Write the weights file, the training checkpoint and the exported program; the paths.
    The control "optimizer-state-dropped" writes a checkpoint of the weights alone."""
    paths = {name: ctx.artifact(file) for name, file in
             (("weights", "cnn_state_dict.pt"), ("checkpoint", "cnn_checkpoint.pt"), ("export", "export/cnn.pt2"))}
    torch.save(model.state_dict(), paths["weights"])
    state = {"model": model.state_dict()}
    if fault != "optimizer-state-dropped":
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, paths["checkpoint"])
    batch = torch.export.Dim("batch", min=2, max=4096)
    program = torch.export.export(model.eval(), (images[:8],), dynamic_shapes=({0: batch},))
    torch.export.save(program, paths["export"])
    return paths


def resumed_training_difference(ctx, model, optimizer, checkpoint: dict, digits, batch_size: int,
                                learning_rate: float) -> float:
    """One more epoch for the model that was never saved and for one rebuilt from the checkpoint
    (a fresh Adam if it holds no optimizer state), on the same batches: the largest weight gap."""
    resumed = CNN()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = torch.optim.Adam(resumed.parameters(), lr=learning_rate)
    if "optimizer" in checkpoint:
        resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    x, y = image_tensors(digits.train)
    order = epoch_orders(ctx.seed, len(y), 1, stream=41)[0]
    for network, adam in ((model, optimizer), (resumed, resumed_optimizer)):
        train_epoch(network, adam, x, y, order, batch_size)
    return max(float((p - q).detach().abs().max()) for p, q in zip(model.parameters(), resumed.parameters()))


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed)
    model = CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    images, labels = image_tensors(digits.test)
    if fault == "saved-before-training":  # a control's mistake: the files hold the untrained model
        paths = save_artifacts(ctx, model, optimizer, images, fault)
    history = fit(ctx, model, optimizer, digits, epochs=epochs, batch_size=batch_size, name="serialization")
    report_history(ctx, history, "serialization", "torch CNN before saving")
    reference = logits(model, images)
    if fault != "saved-before-training":
        paths = save_artifacts(ctx, model, optimizer, images, fault)

    from_weights, from_checkpoint = CNN(), CNN()
    from_weights.load_state_dict(torch.load(paths["weights"], weights_only=True))
    checkpoint = torch.load(paths["checkpoint"], weights_only=True)
    from_checkpoint.load_state_dict(checkpoint["model"])
    with torch.no_grad():
        exported = torch.export.load(paths["export"]).module()(images)

    counted = sum(p.numel() for p in model.parameters())
    if fault == "optimizer-slots-counted":  # a control's mistake: the checkpoint's size as the model's
        counted = sum(t.numel() for t in checkpoint["model"].values()) + sum(
            t.numel() for slots in checkpoint["optimizer"]["state"].values() for t in slots.values())
    (ctx.artifact("model.txt")).write_text(f"{model}\n\nparameters: {counted}\n")
    metrics = {
        "summary_parameters": counted,
        "summary_vs_hand_count": counted - cnn_parameter_count(8, 8, 10)["total"],
        "saved_model_identical": float(torch.equal(logits(from_checkpoint, images), reference)),
        "weights_file_identical": float(torch.equal(logits(from_weights, images), reference)),
        "export_max_difference": float((exported - reference).abs().max()),
        "export_same_predictions": float(torch.equal(exported.argmax(dim=1), reference.argmax(dim=1))),
        "test_accuracy": float((reference.argmax(dim=1) == labels).float().mean()),
    }
    # Last: this trains `model` one more epoch.
    metrics["resumed_training_weight_difference"] = resumed_training_difference(
        ctx, model, optimizer, checkpoint, digits, batch_size, learning_rate)
    return metrics
