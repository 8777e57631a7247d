"""dllab's own event writer: what it writes, TensorBoard's reader reads back, point for point."""

import numpy as np

from dllab.tensorboard_log import ScalarWriter, read_scalars


def test_scalars_and_images_round_trip_through_tensorboards_reader(tmp_path):
    writer = ScalarWriter(tmp_path / "tb")
    values = [(step, float(np.sin(step / 3.0))) for step in range(25)]
    for step, value in values:
        writer.scalar("charts/sine", value, step)
    writer.image("samples/grid", (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4), 0)
    writer.close()
    curves = read_scalars(tmp_path / "tb")
    assert list(curves) == ["charts/sine"]
    read = curves["charts/sine"]
    assert [step for step, _ in read] == [step for step, _ in values]
    np.testing.assert_allclose([v for _, v in read], [v for _, v in values], rtol=1e-7)  # stored as float32
