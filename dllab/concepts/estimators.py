"""TF Estimators and their Keras replacement (seed question 21).

`tf.estimator` (DNNClassifier, `model_fn`, `input_fn`, `train`/`evaluate`/`export_saved_model`)
was deprecated in TF 2 and removed in TensorFlow 2.16. This scenario first checks whether it is
present, and whether that is what the installed TF version says it should be. Then it runs the
same workflow the Keras way, which TensorFlow recommends instead:

    Estimator                               Keras
    input_fn -> tf.data.Dataset             the same tf.data.Dataset, given to fit/evaluate
    model_fn / DNNClassifier(hidden_units)  a keras.Sequential of Dense layers
    estimator.train(input_fn, steps)        model.fit(dataset, epochs)
    estimator.evaluate(input_fn)            model.evaluate(dataset)
    estimator.export_saved_model(...)       model.export(path)  (a SavedModel with a `serve` signature)
    tf.saved_model.load(...) + signature    tf.saved_model.load(path).serve(inputs)

Measured on the bundled digits: test accuracy against the majority-class baseline; evaluate()'s
accuracy against accuracy recomputed in numpy from the predictions; the reloaded SavedModel's
predictions against the Keras model's.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import tensorflow as tf

from dllab.data.digits import load_digits
from dllab.errors import SkipScenario


def estimator_status() -> tuple[bool, bool]:
    """(tf.estimator is importable here, TF's version says it should be: before 2.16)."""
    present = hasattr(tf, "estimator") or importlib.util.find_spec("tensorflow_estimator") is not None
    major, minor = (int(part) for part in tf.__version__.split(".")[:2])
    return present, (major, minor) < (2, 16)


def input_fn(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    """What an Estimator's input_fn returned, and what Keras's fit/evaluate take directly."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def dnn_classifier(features: int, hidden_units: list, classes: int):
    """The Keras counterpart of tf.estimator.DNNClassifier(hidden_units, n_classes)."""
    import keras

    layers = [keras.Input((features,), name="pixels")]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden_units]
    layers.append(keras.layers.Dense(classes, activation="softmax"))
    return keras.Sequential(layers)


def run(ctx, *, hidden_units: list, epochs: int, batch_size: int, learning_rate: float) -> dict[str, float]:
    """Scenario entry: detect tf.estimator, then train, evaluate, export and reload the Keras way."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SkipScenario("model.export writes a TF SavedModel from the TensorFlow backend: "
                           f"set KERAS_BACKEND=tensorflow (now {keras.backend.backend()!r})")
    if not hidden_units or min(hidden_units) < 1:
        raise ValueError(f"hidden_units must list positive layer widths, got {hidden_units}")
    keras.utils.set_random_seed(ctx.seed)
    present, expected = estimator_status()
    digits = load_digits(ctx.seed)
    train_x, test_x = digits.train.flat(), digits.test.flat()
    train_y, test_y = digits.train.labels, digits.test.labels

    model = dnn_classifier(train_x.shape[1], hidden_units, 10)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    training_data = input_fn(train_x, train_y, batch_size, ctx.seed)  # shuffled by the input function
    history = model.fit(training_data, epochs=epochs, shuffle=False, verbose=0)
    for epoch, loss in enumerate(history.history["loss"]):
        ctx.log_scalar("losses/train", loss, epoch)
    evaluation = model.evaluate(input_fn(test_x, test_y, batch_size, None), verbose=0, return_dict=True)
    probabilities = keras.ops.convert_to_numpy(model(test_x))
    numpy_accuracy = float(np.mean(probabilities.argmax(axis=1) == test_y))

    export_dir = ctx.artifact("saved_model")
    model.export(str(export_dir), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(export_dir))
    served = reloaded.serve(tf.constant(test_x)).numpy()
    majority = float(np.mean(test_y == np.bincount(train_y).argmax()))
    return {
        "tf_estimator_present": float(present),
        "estimator_presence_matches_tf_version": float(present == expected),
        "test_accuracy": evaluation["accuracy"],
        "majority_baseline_accuracy": majority,
        "accuracy_over_baseline": evaluation["accuracy"] - majority,
        "evaluate_vs_numpy_accuracy_abs": abs(evaluation["accuracy"] - numpy_accuracy),
        "saved_model_vs_keras_max_abs": float(np.max(np.abs(served - probabilities))),
        "saved_model_has_serve_signature": float("serve" in reloaded.signatures
                                                 or "serving_default" in reloaded.signatures),
    }
