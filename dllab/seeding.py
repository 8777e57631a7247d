"""One visible seeding block for every framework, and the switches that make runs repeatable.

Only the framework a scenario uses is imported and seeded. Thread counts are set explicitly:
oneDNN in TensorFlow and OpenMP reductions in torch may change float results with the number of
threads, so a fixed count is part of "the same seed on the same machine gives the same metrics".
"""

from __future__ import annotations

import os
import random

import numpy as np

from dllab.devices import keras_backend


def backend_of(framework: str) -> str:
    """The tensor library that does the work: Keras delegates to its backend."""
    return keras_backend() if framework == "keras" else framework


def seed_everything(seed: int, framework: str, threads: int = 1) -> None:
    """Seed Python, numpy and the framework (with its backend), fix threads, ask for determinism."""
    random.seed(seed)
    np.random.seed(seed)
    backend = backend_of(framework)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if backend == "tensorflow":
        import tensorflow as tf

        try:  # only possible before TF's runtime starts; later runs in a process keep the first count
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass
        tf.random.set_seed(seed)
        tf.config.experimental.enable_op_determinism()
    if framework == "keras":
        import keras

        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
