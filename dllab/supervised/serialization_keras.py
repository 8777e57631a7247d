"""`summary()`, saving, loading and exporting a Keras 3 model (questions 29, 41), checked.

The CNN of `cnn_keras`, briefly trained on the bundled digits, then:

- `summary()`: its "Trainable params" (+ "Non-trainable") must equal the hand count
  (`common.cnn_parameter_count`); after training "Total params" also counts Adam's slots;
- `model.save("cnn.keras")` / `keras.models.load_model(..., safe_mode=True)`: predictions of the
  loaded model must be bit-identical; the same for `save_weights` / `load_weights` into a new model;
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
from dllab.supervised.common import cnn_parameter_count, load_images, report_history
from dllab.supervised.keras_training import backend, fit, predict_logits


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


def exported_outputs(ctx, model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Export the model for serving, load the artifact back, and run it on `images`."""
    if backend() == "tensorflow":
        import tensorflow as tf

        path = ctx.artifact("export/saved_model")
        model.export(str(path), format="tf_saved_model", verbose=False)
        restored = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
        return restored.serve(tf.constant(images)).numpy()
    import torch

    path = ctx.artifact("export/cnn_keras.pt2")
    program = torch.export.export(model, (torch.from_numpy(images),))
    torch.export.save(program, path)
    return torch.export.load(path).module()(torch.from_numpy(images)).detach().cpu().numpy()


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float) -> dict[str, float]:
    digits = load_images(ctx.seed)
    model = compile_classifier(build_cnn(), learning_rate)
    history = fit(ctx, model, digits.train.images[..., None], digits.train.labels,
                  (digits.validation.images[..., None], digits.validation.labels),
                  epochs=epochs, batch_size=batch_size, name="serialization")
    report_history(ctx, history, "serialization", f"Keras ({backend()}) CNN before saving")
    images = digits.test.images[..., None]
    reference = predict_logits(model, images)

    path = ctx.artifact("cnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    weights_path = ctx.artifact("cnn.weights.h5")
    model.save_weights(weights_path)
    rebuilt = build_cnn()
    rebuilt.load_weights(weights_path)
    exported = exported_outputs(ctx, model, images)
    counts = summary_parameter_counts(model)
    return {
        "summary_parameters": counts["trainable"] + counts.get("non-trainable", 0),
        "summary_vs_hand_count": counts["trainable"] + counts.get("non-trainable", 0)
                                 - cnn_parameter_count(8, 8, 10)["total"],
        "summary_optimizer_parameters": counts.get("optimizer", 0),
        "saved_model_identical": float(np.array_equal(predict_logits(loaded, images), reference)),
        "weights_file_identical": float(np.array_equal(predict_logits(rebuilt, images), reference)),
        "export_max_difference": float(np.max(np.abs(exported - reference))),
        "export_same_predictions": float(np.array_equal(exported.argmax(axis=1), reference.argmax(axis=1))),
        "test_accuracy": float(np.mean(reference.argmax(axis=1) == digits.test.labels)),
    }
