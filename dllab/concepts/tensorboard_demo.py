"""TensorBoard from TensorFlow, Keras and PyTorch (seed questions 8, 24, 27), checked by reading back.

Each variant trains softmax regression on the bundled digits and logs its loss curve with its
framework's own writer: `tf.summary` (TensorFlow), the `keras.callbacks.TensorBoard` callback
(Keras), `torch.utils.tensorboard.SummaryWriter` (PyTorch). The event files are then read back with
TensorBoard's own event reader (`EventAccumulator`)
and compared, step by step, with the values the training loop kept in memory. PyTorch has a
visual tool: the same TensorBoard.

Every variant returns the same metrics: how many points were written and read back, the largest
difference between them, whether the steps match, and whether the logged loss went down.
`fault` injects one mistake for a negative control (see the scenario file); "none" is the
correct program.
"""

from __future__ import annotations

from pathlib import Path


FAULTS = ("none", "wrong-log-dir", "steps-from-one", "half-precision", "folders-swapped",
          "gradient-ascent")


def read_scalar_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve in one folder of event files, read with TensorBoard's EventAccumulator.

    Like `dllab.tensorboard_log.read_scalars`, but a tensor tag counts only if its metadata says
    it is a scalar: the Keras callback also writes the model's configuration as a text tensor."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    curves = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags.get("scalars", [])}
    for tag in tags.get("tensors", []):  # tf.summary.scalar writes a rank-0 tensor, plugin "scalars"
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
            curves[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
    return curves


def compare(logs: list[tuple[Path, dict[str, list[tuple[int, float]]]]], fault: str = "none") -> dict[str, float]:
    """Read each log folder back with TensorBoard's reader and compare with what was written to
    it (tag -> [(step, value)]); the first tag of the first folder is the loss curve."""
    count_written = count_read = event_files = 0
    worst, steps_match = 0.0, True
    for log_dir, written in logs:
        if fault == "wrong-log-dir":  # an (empty) sibling of the folder the writer was given
            log_dir = Path(log_dir).with_name(Path(log_dir).name + "-elsewhere")
            log_dir.mkdir(parents=True, exist_ok=True)
        read = read_scalar_curves(log_dir)
        event_files += len(list(Path(log_dir).rglob("events.out.tfevents.*")))
        for tag, points in written.items():
            back = sorted(read.get(tag, []))
            count_written, count_read = count_written + len(points), count_read + len(back)
            if [step for step, _ in back] != [step for step, _ in points]:
                steps_match = False
                continue
            for (_, expected), (_, value) in zip(points, back):
                worst = max(worst, abs(value - expected) / max(1.0, abs(expected)))
    losses = [value for _, value in next(iter(logs[0][1].values()))]
    return {
        "event_files": event_files,
        "points_written": count_written,
        "points_read_back": count_read,
        "missing_points": count_written - count_read,
        "steps_match": float(steps_match),
        "max_relative_error": worst,
        "loss_decreased": float(losses[-1] < losses[0]),
    }


def digits_arrays(seed: int):
    from dllab.data.digits import load_digits

    digits = load_digits(seed)
    return digits.train.flat(), digits.train.labels, digits.validation.flat(), digits.validation.labels


def run_tensorflow(ctx, *, steps: int, learning_rate: float, fault: str = "none") -> dict[str, float]:
    import tensorflow as tf

    inputs, labels, _, _ = digits_arrays(ctx.seed)
    weights = tf.Variable(tf.zeros((inputs.shape[1], 10)))
    bias = tf.Variable(tf.zeros(10))
    log_dir = ctx.artifact("tensorboard_tf")
    writer = tf.summary.create_file_writer(str(log_dir))
    written = {"losses/train": []}
    with writer.as_default():
        for step in range(steps):
            with tf.GradientTape() as tape:
                logits = inputs @ weights + bias
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            grad_w, grad_b = tape.gradient(loss, [weights, bias])
            sign = -1.0 if fault == "gradient-ascent" else 1.0
            weights.assign_sub(sign * learning_rate * grad_w)
            bias.assign_sub(sign * learning_rate * grad_b)
            logged = tf.cast(loss, tf.float16) if fault == "half-precision" else loss
            tf.summary.scalar("losses/train", logged, step=step + (fault == "steps-from-one"))
            written["losses/train"].append((step, float(loss)))
    writer.close()
    return compare([(log_dir, written)], fault)


def run_torch(ctx, *, steps: int, learning_rate: float, fault: str = "none") -> dict[str, float]:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    inputs, labels, _, _ = digits_arrays(ctx.seed)
    inputs, labels = torch.from_numpy(inputs), torch.from_numpy(labels)
    model = torch.nn.Linear(inputs.shape[1], 10)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, maximize=fault == "gradient-ascent")
    log_dir = ctx.artifact("tensorboard_torch")
    writer = SummaryWriter(log_dir=str(log_dir))
    written = {"losses/train": []}
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        logged = loss.half().item() if fault == "half-precision" else loss.item()
        writer.add_scalar("losses/train", logged, step + (fault == "steps-from-one"))
        written["losses/train"].append((step, loss.item()))
    writer.add_histogram("weights", model.weight.detach(), steps)
    writer.close()
    return compare([(log_dir, written)], fault)


def run_keras(ctx, *, steps: int, learning_rate: float, fault: str = "none") -> dict[str, float]:
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        from dllab.errors import SkipScenario

        raise SkipScenario("keras.callbacks.TensorBoard writes with tf.summary on every backend: "
                           "pip install 'dllab[tensorflow]'")
    import keras

    inputs, labels, val_inputs, val_labels = digits_arrays(ctx.seed)
    model = keras.Sequential([keras.Input((inputs.shape[1],)), keras.layers.Dense(10, kernel_initializer="zeros")])
    sign = -1.0 if fault == "gradient-ascent" else 1.0  # a negative rate climbs the loss
    model.compile(optimizer=keras.optimizers.SGD(sign * learning_rate), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = ctx.artifact("tensorboard_keras")
    callback = keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch")
    history = model.fit(inputs, labels, batch_size=len(labels), epochs=steps, shuffle=False, verbose=0,
                        validation_data=(val_inputs, val_labels), callbacks=[callback])
    logs = []
    folders = ("validation", "train") if fault == "folders-swapped" else ("train", "validation")
    first = 1 if fault == "steps-from-one" else 0  # epochs numbered as Keras prints them
    for folder, prefix in zip(folders, ("", "val_")):
        curves = {f"epoch_{name}": list(enumerate(history.history[prefix + name], start=first))
                  for name in ("loss", "accuracy")}
        logs.append((log_dir / folder, curves))
    return compare(logs, fault)
