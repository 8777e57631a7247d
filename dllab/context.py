"""`RunContext`: what a scenario's entry function receives from the runner.

Where and how the run happens (seed, framework, device, profile, run folder, threads), and the
services a scenario uses: seeded generators, progress bars, TensorBoard scalars and images, PNG
artifacts, checkpoints, and metrics recorded so far (kept if the run is interrupted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dllab.registry import ScenarioSpec
from dllab.seeding import backend_of


@dataclass
class RunContext:
    """What an entry function gets: where and how it runs, and a few services."""

    spec: ScenarioSpec
    seed: int
    framework: str
    device: str
    profile: str  # "full" or "quick"
    out_dir: Path
    threads: int
    params: dict[str, Any]
    resume_from: Path | None = None  # a run folder whose checkpoint a resumable trainer continues
    show_progress: bool | None = None  # None: only on a terminal
    partial_metrics: dict[str, float] = field(default_factory=dict)
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    _writer: Any = None

    @property
    def quick(self) -> bool:
        return self.profile == "quick"

    @property
    def backend(self) -> str:
        """The tensor library doing the work ("torch", "tensorflow" or "numpy")."""
        return backend_of(self.framework)

    def rng(self, stream: int = 0) -> np.random.Generator:
        """A numpy generator derived from the run's seed; distinct streams are independent."""
        return np.random.default_rng([self.seed, stream])

    def progress(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = ""):
        """A tqdm progress bar (shown on a terminal only, never in tests or logs)."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc or self.spec.id, leave=False,
                    disable=None if self.show_progress is None else not self.show_progress)

    def _tensorboard(self):
        if self._writer is None:
            from dllab.tensorboard_log import ScalarWriter

            self._writer = ScalarWriter(self.out_dir / "tensorboard")
        return self._writer

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        """A point of a training curve, in TensorBoard (`charts/...`, `losses/...`)."""
        self._tensorboard().scalar(tag, float(value), int(step))

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An HxW or HxWxC uint8 image (a sample grid, say), in TensorBoard."""
        self._tensorboard().image(tag, image, int(step))

    def artifact(self, name: str) -> Path:
        """A path inside the run folder for a file the scenario keeps (PNG, checkpoint)."""
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save_figure(self, figure, name: str) -> Path:
        """Save a matplotlib figure as a PNG artifact with fixed metadata (same run, same bytes)."""
        import io

        import matplotlib.pyplot as plt

        from dllab.fileio import write_bytes_atomic

        path = self.artifact(name if name.endswith(".png") else name + ".png")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        plt.close(figure)
        write_bytes_atomic(path, buffer.getvalue())  # never through a link planted at `path`
        return path

    def record(self, **metrics: float) -> None:
        """Metrics known so far: they survive into result.json if the run is interrupted."""
        self.partial_metrics.update({k: float(v) for k, v in metrics.items()})

    def skip_metric(self, name: str, reason: str) -> None:
        """Mark a metric as not measurable here (its expectation is then skipped, with the reason)."""
        self.skipped_metrics[name] = reason

    def save_checkpoint(self, arrays: dict[str, np.ndarray], meta: dict) -> Path:
        """Save a checkpoint (at an epoch boundary, say) into `<run folder>/checkpoint`, atomically.
        Include everything needed to continue exactly: weights, optimizer state, schedules, RNG
        states (`dllab.checkpoint.rng_state()` gives Python's, numpy's and torch's)."""
        from dllab import checkpoint

        return checkpoint.save(self.out_dir / "checkpoint", arrays, meta)

    def load_checkpoint(self) -> tuple[dict[str, np.ndarray], dict] | None:
        """The checkpoint of the run being resumed (`--resume DIR`), or None for a fresh run.
        The runner has checked that the folder is this run's and holds a complete checkpoint."""
        if self.resume_from is None:
            return None
        from dllab import checkpoint

        return checkpoint.load(self.resume_from / "checkpoint")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
