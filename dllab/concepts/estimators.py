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


def version_tuple(text: str) -> tuple[int, int]:
    major, minor = (int(part) for part in text.split(".")[:2])
    return major, minor


def estimator_status(removed_in: str = "2.16") -> tuple[bool, bool]:
    """(tf.estimator is importable here, TF's version says it should be: before `removed_in`)."""
    present = hasattr(tf, "estimator") or importlib.util.find_spec("tensorflow_estimator") is not None
    return present, version_tuple(tf.__version__) < version_tuple(removed_in)


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


def train(ctx, model, digits, *, epochs: int, batch_size: int, learning_rate: float) -> None:
    """estimator.train(input_fn) the Keras way: fit on the input function's dataset."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    training_data = input_fn(digits.train.flat(), digits.train.labels, batch_size, ctx.seed)  # shuffled
    history = model.fit(training_data, epochs=epochs, shuffle=False, verbose=0)
    for epoch, loss in enumerate(history.history["loss"]):
        ctx.log_scalar("losses/train", loss, epoch)


def measure_evaluation(model, digits, *, batch_size: int, fault: str) -> dict[str, float]:
    """estimator.evaluate the Keras way, against the majority class and against the accuracy
    recomputed in numpy from the test predictions."""
    split = digits.train if fault == "evaluate-on-train" else digits.test  # the control's mistake
    evaluation = model.evaluate(input_fn(split.flat(), split.labels, batch_size, None), verbose=0,
                                return_dict=True)
    predicted = np.asarray(model(digits.test.flat())).argmax(axis=1)
    majority = float(np.mean(digits.test.labels == np.bincount(digits.train.labels).argmax()))
    return {
        "test_accuracy": evaluation["accuracy"],
        "majority_baseline_accuracy": majority,
        "accuracy_over_baseline": evaluation["accuracy"] - majority,
        "evaluate_vs_numpy_accuracy_abs": abs(evaluation["accuracy"] - float(np.mean(predicted == digits.test.labels))),
    }


def export(model, path: str, fault: str) -> None:
    """export_saved_model the Keras way: model.export writes a SavedModel with a serve signature."""
    if fault == "module-without-signature":  # the control's mistake: a bare tf.Module saved
        module = tf.Module()
        module.model = model
        tf.saved_model.save(module, path)
    else:
        model.export(path, format="tf_saved_model", verbose=False)


def measure_reload(ctx, model, path: str, test_x: np.ndarray) -> dict[str, float]:
    """Reload the SavedModel: its serving signature (read before anything is called through it)
    takes a batch of pixel vectors and returns 10 class scores; served through it, the
    predictions equal the Keras model's."""
    reloaded = tf.saved_model.load(path)
    signature = reloaded.signatures.get("serving_default")
    inputs = signature.structured_input_signature[1] if signature is not None else {}
    outputs = signature.structured_outputs if signature is not None else {}
    fits = (len(inputs) == 1 and len(outputs) == 1
            and next(iter(inputs.values())).shape.as_list() == [None, test_x.shape[1]]
            and next(iter(outputs.values())).shape.as_list() == [None, 10])
    metrics = {"saved_model_has_serve_signature": float(fits)}
    if signature is None:
        ctx.skip_metric("saved_model_vs_keras_max_abs", "the SavedModel has no serving signature to call")
        return metrics
    served = next(iter(signature(**{next(iter(inputs)): tf.constant(test_x)}).values())).numpy()
    probabilities = np.asarray(model(test_x))
    metrics["saved_model_vs_keras_max_abs"] = float(np.max(np.abs(served - probabilities)))
    return metrics


def run(ctx, *, hidden_units: list, epochs: int, batch_size: int, learning_rate: float,
        estimator_removed_in: str, fault: str) -> dict[str, float]:
    """Scenario entry: detect tf.estimator, then train, evaluate, export and reload the Keras way."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SkipScenario("model.export writes a TF SavedModel from the TensorFlow backend: "
                           f"set KERAS_BACKEND=tensorflow (now {keras.backend.backend()!r})")
    keras.utils.set_random_seed(ctx.seed)
    present, expected = estimator_status(estimator_removed_in)
    digits = load_digits(ctx.seed)
    export_dir = str(ctx.artifact("saved_model"))
    model = dnn_classifier(digits.train.flat().shape[1], hidden_units, 10)
    if fault == "export-before-training":  # the control's mistake: a stale export
        export(model, export_dir, fault)
    train(ctx, model, digits, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    metrics = {"tf_estimator_present": float(present), "estimator_presence_matches_tf_version": float(present == expected)}
    metrics.update(measure_evaluation(model, digits, batch_size=batch_size, fault=fault))
    if fault != "export-before-training":
        export(model, export_dir, fault)
    metrics.update(measure_reload(ctx, model, export_dir, digits.test.flat()))
    return metrics
