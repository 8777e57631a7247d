"""A small TensorBoard event writer built on the `tensorboard` package alone.

It writes the same protocol buffers as `tf.summary` and `torch.utils.tensorboard`, so a numpy
scenario's curves open in TensorBoard without importing either framework.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


class ScalarWriter:
    """Scalars and images into one event file under `log_dir`, in TFRecord framing (length,
    masked CRC32C of the length, the serialized Event, its masked CRC32C). Written directly,
    because tensorboard's own EventFileWriter imports TensorFlow when it is installed."""

    def __init__(self, log_dir: Path):
        import os
        import socket
        import time

        from tensorboard.compat.proto.event_pb2 import Event

        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.dllab"
        self._file = open(log_dir / name, "wb")
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        import struct

        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                         + struct.pack("<I", masked_crc32c(data)))

    def _add(self, summary, step: int) -> None:
        import time

        from tensorboard.compat.proto.event_pb2 import Event

        self._write(Event(summary=summary, step=step, wall_time=time.time()))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._add(Summary(value=[Summary.Value(tag=tag, simple_value=value)]), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"image {tag!r} must be uint8, got {array.dtype}")
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        height, width = array.shape[:2]
        channels = 1 if array.ndim == 2 else array.shape[2]
        encoded = Summary.Image(height=height, width=width, colorspace=channels,
                                encoded_image_string=buffer.getvalue())
        self._add(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)

    def close(self) -> None:
        self._file.close()


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Read back every scalar under `log_dir` with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[tuple[int, float]]] = {}
    for path in sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            curves.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
        for tag in accumulator.Tags().get("tensors", []):  # tf.summary writes scalars as tensors
            from tensorboard.util import tensor_util

            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
                continue  # text, histograms, model configs: not curves
            curves.setdefault(tag, []).extend(
                (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)
            )
    return curves
