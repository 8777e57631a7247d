"""`summary()`, saving, loading and exporting a Keras 3 model (questions 29, 41), checked.

The CNN of `cnn_keras`, briefly trained on the bundled digits, then:

- `summary()`: its "Trainable params" (+ "Non-trainable") must equal the hand count
  (`common.cnn_parameter_count`); after training "Total params" also counts Adam's slots;
- `model.save("cnn.keras")` / `keras.models.load_model(..., safe_mode=True)`: predictions of the
  loaded model must be bit-identical, and one more epoch of training from it must end with the
  weights of the model that was never saved (the .keras file holds the optimizer's state too);
  the same predictions from `save_weights` / `load_weights` into a new model;
- export for serving: on the TensorFlow backend `model.export(...)` writes a SavedModel, reloaded
  with `tf.saved_model.load` and called through its `serve` endpoint; on the torch backend a Keras
  model *is* a `torch.nn.Module`, exported with `torch.export` (Keras's own SavedModel export
  needs TensorFlow's backend). The exported program's outputs must match the model's.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from dllab.supervised.cnn_keras import build_cnn, compile_classifier
from dllab.supervised.common import cnn_parameter_count, epoch_orders, load_images, report_history
from dllab.supervised.keras_training import backend, fit, max_difference, predict_logits, weights


def summary_parameter_counts(model: keras.Model) -> dict[str, int]:
    """The "Total / Trainable / Non-trainable / Optimizer params: 53,002 (207.04 KB)" lines of
    `model.summary()`, parsed from its text. Once the model is trained, "Total" also counts the
    optimizer's variables (Adam keeps two slots per weight, plus its step counter and rate)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    counts = {kind.lower(): int(number.replace(",", "")) for kind, number in
              re.findall(r"(Total|Trainable|Non-trainable|Optimizer) params:\s*([\d,]+)", "\n".join(lines))}
    if "trainable" not in counts:
        raise ValueError("model.summary() printed no 'Trainable params' line")
    return counts


def export_model(ctx, model: keras.Model, images: np.ndarray):
    """Export the model for serving; returns a function that loads the artifact back and runs it."""
    if backend() == "tensorflow":
        import tensorflow as tf

        path = ctx.artifact("export/saved_model")
        model.export(str(path), format="tf_saved_model", verbose=False)

        def run_saved_model(batch):
            restored = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
            return restored.serve(tf.constant(batch)).numpy()
        return run_saved_model
    import torch

    path = ctx.artifact("export/cnn_keras.pt2")
    torch.export.save(torch.export.export(model, (torch.from_numpy(images),)), path)
    return lambda batch: torch.export.load(path).module()(torch.from_numpy(batch)).detach().cpu().numpy()


def save_artifacts(ctx, model: keras.Model, images: np.ndarray) -> dict:
    """The .keras file, the .weights.h5 file and the exported program (a loader for it)."""
    paths = {"model": ctx.artifact("cnn.keras"), "weights": ctx.artifact("cnn.weights.h5")}
    model.save(paths["model"])
    model.save_weights(paths["weights"])
    return {**paths, "export": export_model(ctx, model, images)}


def load_model(path, learning_rate: float, fault: str) -> keras.Model:
    """`load_model` with the compiled optimizer and its state; the control
    "optimizer-state-dropped" loads with compile=False and compiles a fresh Adam."""
    if fault == "optimizer-state-dropped":
        return compile_classifier(keras.models.load_model(path, safe_mode=True, compile=False), learning_rate)
    return keras.models.load_model(path, safe_mode=True)


def resumed_training_difference(ctx, model, loaded, digits, batch_size: int) -> float:
    """One more epoch for the model that was never saved and for the loaded one, on the same
    batches in the same order: the largest weight gap (0 when the optimizer state came back)."""
    order = epoch_orders(ctx.seed, len(digits.train), 1, stream=41)[0]
    x, y = digits.train.images[order][..., None], digits.train.labels[order]
    for network in (model, loaded):
        network.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return max_difference(weights(model), weights(loaded))


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed)
    model = compile_classifier(build_cnn(), learning_rate)
    images = digits.test.images[..., None]
    if fault == "saved-before-training":  # a control's mistake: the files hold the untrained model
        saved = save_artifacts(ctx, model, images)
    history = fit(ctx, model, digits.train.images[..., None], digits.train.labels,
                  (digits.validation.images[..., None], digits.validation.labels),
                  epochs=epochs, batch_size=batch_size, name="serialization")
    report_history(ctx, history, "serialization", f"Keras ({backend()}) CNN before saving")
    reference = predict_logits(model, images)
    if fault != "saved-before-training":
        saved = save_artifacts(ctx, model, images)

    loaded = load_model(saved["model"], learning_rate, fault)
    rebuilt = build_cnn()
    rebuilt.load_weights(saved["weights"])
    exported = saved["export"](images)
    counts = summary_parameter_counts(model)
    counted = counts["trainable"] + counts.get("non-trainable", 0)
    if fault == "optimizer-slots-counted":  # a control's mistake: "Total params" read after training
        counted = counts["total"]
    metrics = {
        "summary_parameters": counted,
        "summary_vs_hand_count": counted - cnn_parameter_count(8, 8, 10)["total"],
        "summary_optimizer_parameters": counts.get("optimizer", 0),
        "saved_model_identical": float(np.array_equal(predict_logits(loaded, images), reference)),
        "weights_file_identical": float(np.array_equal(predict_logits(rebuilt, images), reference)),
        "export_max_difference": float(np.max(np.abs(exported - reference))),
        "export_same_predictions": float(np.array_equal(exported.argmax(axis=1), reference.argmax(axis=1))),
        "test_accuracy": float(np.mean(reference.argmax(axis=1) == digits.test.labels)),
    }
    # Last: this trains `model` one more epoch.
    metrics["resumed_training_weight_difference"] = resumed_training_difference(ctx, model, loaded, digits,
                                                                                batch_size)
    return metrics
