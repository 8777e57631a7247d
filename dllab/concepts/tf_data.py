"""`tf.data` pipelines and `tf.function` inside them (seed question 39), checked by measurement.

A `shuffle -> map -> batch -> prefetch` pipeline over the bundled digits. Measured:

- each epoch is a permutation of the samples, the next epoch reshuffles, and the order is a
  function of the shuffle seed (same seed: identical batches; another seed: another order);
- the map function is a `tf.function`: its Python body runs once, when the pipeline is built
  (tracing), while the traced graph runs once per element; its output equals the same transform
  computed by numpy on the same elements;
- throughput, in elements per second, of the pipeline against a Python loop that shuffles, maps
  each element eagerly and stacks the batches itself (a ratio from one run, volatile).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

MEAN, SCALE = 0.3, 2.5


class Standardize:
    """The map: (x - MEAN) * SCALE, plus the row sums as a second feature. A `tf.function` whose
    Python body counts how often it runs (tracing), which is not how often it is applied."""

    def __init__(self, fault: str = "none"):
        self.python_calls, self.fault = 0, fault
        self.function = tf.function(self._body)

    def _body(self, image, label, index):
        self.python_calls += 1  # runs while tracing only
        if self.fault == "map-in-float16":  # the control's mistake: the map computes in half precision
            half = tf.cast(image, tf.float16)
            return (tf.cast((half - MEAN) * SCALE, tf.float32), tf.cast(tf.reduce_sum(half, axis=-1), tf.float32),
                    label, index)
        standardized = (image - MEAN) * SCALE
        return standardized, tf.reduce_sum(image, axis=-1), label, index


def standardize_numpy(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same transform in numpy, the reference for the pipeline's output."""
    return (images - np.float32(MEAN)) * np.float32(SCALE), images.sum(axis=-1)


def make_pipeline(images, labels, *, seed: int, batch_size: int, mapper: Standardize,
                  fault: str = "none") -> tf.data.Dataset:
    """shuffle (full buffer, seeded, new order each epoch) -> map -> batch -> prefetch.
    (`fault` injects a negative control's mistake, in one visible branch each.)"""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    indices = np.arange(len(labels), dtype=np.int64)
    shuffle_seed = {"shuffle-without-seed": None, "constant-shuffle-seed": 0}.get(fault, seed)
    reshuffle = fault != "no-reshuffle"
    dataset = tf.data.Dataset.from_tensor_slices((images, labels, indices))
    dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
    if fault == "labels-shuffled-separately":  # the mistake: labels shuffled on their own
        shuffled_labels = tf.data.Dataset.from_tensor_slices(labels).shuffle(len(labels), seed=seed + 1)
        dataset = tf.data.Dataset.zip(dataset, shuffled_labels).map(lambda element, label: (element[0], label, element[2]))
    if fault == "map-in-py-function":  # the mistake: the map's Python runs for every element
        dataset = dataset.map(lambda *element: tuple(tf.py_function(mapper._body, element, [tf.float32] * 2 + [
            element[1].dtype, tf.int64])), deterministic=True)
    else:
        dataset = dataset.map(mapper.function, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=fault == "drop-remainder").prefetch(tf.data.AUTOTUNE)


def read_epochs(dataset: tf.data.Dataset, epochs: int) -> list[dict[str, np.ndarray]]:
    """Each epoch's outputs, concatenated over its batches."""
    results = []
    for _ in range(epochs):
        parts = [[t.numpy() for t in batch] for batch in dataset]
        results.append({name: np.concatenate([p[k] for p in parts])
                        for k, name in enumerate(("standardized", "row_sums", "labels", "indices"))})
    return results


def python_loop(images, labels, *, rng: np.random.Generator, batch_size: int) -> int:
    """The same work without tf.data: shuffle, map each element eagerly, stack into batches."""
    order = rng.permutation(len(labels))
    count = 0
    for start in range(0, len(order), batch_size):
        mapped = [((tf.constant(images[i]) - MEAN) * SCALE, tf.reduce_sum(tf.constant(images[i]), axis=-1))
                  for i in order[start:start + batch_size]]
        batch = tf.stack([m[0] for m in mapped]), tf.stack([m[1] for m in mapped]), labels[order[start:start + batch_size]]
        count += int(batch[0].shape[0])
    return count


def measure_order(first, again, other, labels, size: int) -> dict[str, float]:
    """Every epoch a permutation with labels following their images; a new order each epoch;
    the order a function of the shuffle seed."""
    same_seed = max(float(np.abs(a["standardized"] - b["standardized"]).max())
                    if np.array_equal(a["indices"], b["indices"]) else float("inf") for a, b in zip(first, again))
    return {
        "epoch_is_permutation": float(all(np.array_equal(np.sort(e["indices"]), np.arange(size)) for e in first)),
        "labels_follow_indices": float(all(np.array_equal(e["labels"], labels[e["indices"]]) for e in first)),
        "same_seed_max_abs_diff": same_seed,
        "other_seed_same_position_fraction": float(np.mean(first[0]["indices"] == other[0]["indices"])),
        "next_epoch_same_position_fraction": float(np.mean(first[0]["indices"] == first[1]["indices"])),
    }


def measure_map(first, images, calls_after_one_pipeline: int) -> dict[str, float]:
    """The map's output against numpy on the same elements; its Python body ran once (tracing)."""
    map_error = 0.0
    for epoch in first:
        standardized, row_sums = standardize_numpy(images[epoch["indices"]])
        map_error = max(map_error, float(np.abs(epoch["standardized"] - standardized).max()),
                        float(np.abs(epoch["row_sums"] - row_sums).max()))
    return {"map_vs_numpy_max_abs_diff": map_error, "map_python_calls": calls_after_one_pipeline,
            "map_elements_processed": sum(len(e["indices"]) for e in first)}


def measure_throughput(ctx, images, labels, *, batch_size: int, timing_epochs: int) -> dict[str, float]:
    """Elements per second of the pipeline against a Python loop doing the same work (volatile)."""
    pipeline = make_pipeline(images, labels, seed=ctx.seed, batch_size=batch_size, mapper=Standardize())
    start = time.perf_counter()
    seen = sum(int(batch[0].shape[0]) for _ in range(timing_epochs) for batch in pipeline)
    pipeline_rate = seen / (time.perf_counter() - start)
    start = time.perf_counter()
    rng = ctx.rng(1)
    seen_loop = sum(python_loop(images, labels, rng=rng, batch_size=batch_size) for _ in range(timing_epochs))
    loop_rate = seen_loop / (time.perf_counter() - start)
    return {"pipeline_elements_per_s": pipeline_rate, "python_loop_elements_per_s": loop_rate,
            "pipeline_speedup": pipeline_rate / loop_rate}


def run(ctx, *, batch_size: int, epochs: int, timing_epochs: int, fault: str) -> dict[str, float]:
    from dllab.data.digits import load_digits

    train = load_digits(ctx.seed).train
    images, labels = train.flat(), train.labels

    def read(seed: int, mapper: Standardize):
        return read_epochs(make_pipeline(images, labels, seed=seed, batch_size=batch_size, mapper=mapper,
                                         fault=fault), epochs)

    mapper = Standardize(fault)
    first = read(ctx.seed, mapper)
    calls_after_one_pipeline = mapper.python_calls
    again, other = read(ctx.seed, Standardize(fault)), read(ctx.seed + 1, Standardize(fault))
    return {
        "dataset_size": len(labels),
        **measure_order(first, again, other, labels, len(labels)),
        **measure_map(first, images, calls_after_one_pipeline),
        **measure_throughput(ctx, images, labels, batch_size=batch_size, timing_epochs=timing_epochs),
    }
