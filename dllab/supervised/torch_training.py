"""A plain, resumable torch training loop shared by the torch scenarios (the counterpart of
Keras's `fit`): seeded per-epoch shuffling, per-epoch validation, checkpoint every epoch.

Resume: after each epoch the weights, the optimizer's state, the history and every RNG state go
into `ctx.save_checkpoint`; `dllab run ID --resume DIR` continues from the last whole epoch and
reaches exactly the metrics of an uninterrupted run (the batch order depends on (seed, epoch) only).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dllab.checkpoint import check_owner, rng_state, set_rng_state
from dllab.supervised.common import epoch_orders


def image_tensors(split, channels_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, H, W) float32 images (or (N, H, W) for sequence models) and int64 labels."""
    images = torch.from_numpy(split.images)
    return (images.unsqueeze(1) if channels_first else images), torch.from_numpy(split.labels)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (returning logits) on (x, y)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        total_loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    return total_loss / len(y), correct / len(y)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                order: np.ndarray, batch_size: int) -> tuple[float, float]:
    """One pass over (x, y) in the given order: mean training loss and accuracy."""
    model.train()
    total_loss, correct = 0.0, 0
    index = torch.from_numpy(order)
    for start in range(0, len(index), batch_size):
        batch = index[start:start + batch_size]
        logits = model(x[batch])
        loss = nn.functional.cross_entropy(logits, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(batch)
        correct += int((logits.argmax(dim=1) == y[batch]).sum())
    return total_loss / len(index), correct / len(index)


def _state_arrays(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for param_id, slots in state["state"].items():
        for slot, value in slots.items():
            arrays[f"optimizer/{param_id}/{slot}"] = torch.as_tensor(value).cpu().numpy()
    return arrays, {"param_groups": state["param_groups"]}


def _load_state(model: nn.Module, optimizer: torch.optim.Optimizer, arrays: dict, meta: dict) -> None:
    model.load_state_dict({k[6:]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("model/")})
    slots: dict[int, dict] = {}
    for key, value in arrays.items():
        if key.startswith("optimizer/"):
            _, param_id, slot = key.split("/", 2)
            slots.setdefault(int(param_id), {})[slot] = torch.from_numpy(value.copy())
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


def fit(ctx, model: nn.Module, optimizer: torch.optim.Optimizer, digits, *, epochs: int, batch_size: int,
        name: str, resumable: bool = False, channels_first: bool = True) -> dict[str, list[float]]:
    """Train for `epochs` epochs with validation after each; returns the Keras-style history."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be positive")
    x, y = image_tensors(digits.train, channels_first)
    val_x, val_y = image_tensors(digits.validation, channels_first)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    start_epoch = 0
    state = ctx.load_checkpoint() if resumable else None
    if state is not None:
        arrays, meta = state
        check_owner(meta, name, ctx.seed)
        _load_state(model, optimizer, arrays, meta)
        set_rng_state(arrays, meta)
        history, start_epoch = meta["history"], int(meta["epoch"])
    orders = epoch_orders(ctx.seed, len(y), epochs)
    for epoch in range(start_epoch, epochs):
        loss, accuracy = train_epoch(model, optimizer, x, y, orders[epoch], batch_size)
        val_loss, val_accuracy = evaluate(model, val_x, val_y)
        for key, value in zip(history, (loss, accuracy, val_loss, val_accuracy)):
            history[key].append(value)
        ctx.record(**{f"{name}_val_accuracy": val_accuracy, f"{name}_epochs_done": epoch + 1})
        if resumable:
            arrays, meta = _state_arrays(model, optimizer)
            rng_arrays, rng_meta = rng_state()
            ctx.save_checkpoint({**arrays, **rng_arrays},
                                {**meta, **rng_meta, "trainer": name, "seed": ctx.seed, "epoch": epoch + 1,
                                 "history": history})
    return history
