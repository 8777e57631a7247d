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
    backend = backend_of(framework)
    keras = None
    if framework == "keras":  # import first: importing Keras may draw from the generators seeded below
        import keras
    random.seed(seed)
    np.random.seed(seed)
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
    if keras is not None:
        keras.backend.clear_session()
        if backend == "tensorflow":
            keras.utils.set_random_seed(seed)
        else:
            _reset_keras_seed(seed)


def seed_imported(seed: int = 0, threads: int = 1) -> None:
    """`seed_everything` for whatever is already imported: Python and numpy always, then torch,
    TensorFlow and Keras if this process has imported them (tests and benchmarks seed through
    this one entry point too)."""
    import sys

    random.seed(seed)
    np.random.seed(seed)
    for framework in ("torch", "tensorflow", "keras"):
        if framework in sys.modules:
            seed_everything(seed, framework, threads)


def _reset_keras_seed(seed: int) -> None:
    """What `keras.utils.set_random_seed` does for Keras's own generator, without the TensorFlow
    import it performs whenever TensorFlow is installed (seconds, on a torch-backend run)."""
    import keras

    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    except ImportError:  # another Keras layout: the public call, TensorFlow import and all
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
