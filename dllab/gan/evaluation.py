"""The evaluation protocol shared by the torch and Keras GANs, so both are judged alike.

- Fixed noise, drawn once from the run's seed in numpy: one batch four times the size of the
  validation split (to choose the generator: more samples, a less noisy choice), one the size of
  the test split (to report it, like with like), and one for the sample grid. The same seed
  gives the same noise in both frameworks.
- After every epoch the generator's FID against the *validation* split is measured; the
  generator with the lowest one is kept, so a late collapse does not spoil the result.
- At the end the kept generator is scored once against the *test* split: the reported FID is
  never the figure the choice was made on.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dllab.gan.metrics import GanJudge
from dllab.gan.plots import curves_figure, sample_grid, save_png, to_unit

Generate = Callable[[np.ndarray], np.ndarray]  # noise (N, latent) float32 -> images in [-1, 1]


class Evaluator:
    """Per-epoch validation FID, best-generator bookkeeping, final test metrics and artifacts."""

    def __init__(self, ctx, digits, latent_dim: int, grid_samples: int = 100, image_every: int = 10,
                 selection_factor: int = 4):
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.ctx = ctx
        self.judge = GanJudge(digits, ctx.seed)
        rng = ctx.rng(stream=7)
        sizes = {"validation": selection_factor * self.judge.size("validation"),
                 "test": self.judge.size("test"), "grid": grid_samples}
        self.noise = {name: rng.standard_normal((size, latent_dim)).astype(np.float32)
                      for name, size in sizes.items()}
        self.history: dict[str, list[float]] = {"epoch": [], "d_loss": [], "g_loss": [], "fid_validation": []}
        self.best_fid, self.best_epoch, self.fid_start = math.inf, -1, math.nan
        self.image_every = image_every

    def start(self, generate: Generate) -> None:
        """Score the untrained generator: the starting point of the curves."""
        self.fid_start = self.judge.fid(to_unit(generate(self.noise["test"])), "test")
        self.ctx.record(fid_start=self.fid_start, fid_floor=self.judge.floor)
        self.epoch_end(0, generate, math.nan, math.nan)

    def epoch_end(self, epoch: int, generate: Generate, d_loss: float, g_loss: float) -> bool:
        """Log the epoch; True if this generator is the best so far on the validation split."""
        fid = self.judge.fid(to_unit(generate(self.noise["validation"])), "validation")
        for key, value in (("epoch", epoch), ("d_loss", d_loss), ("g_loss", g_loss), ("fid_validation", fid)):
            self.history[key].append(float(value))
        self.ctx.log_scalar("charts/fid_validation", fid, epoch)
        if epoch > 0:
            self.ctx.log_scalar("losses/discriminator", d_loss, epoch)
            self.ctx.log_scalar("losses/generator", g_loss, epoch)
        if epoch % self.image_every == 0:  # the same noise every time: watch the digits form
            self.ctx.log_image("samples/fixed_noise", sample_grid(to_unit(generate(self.noise["grid"]))), epoch)
        improved = fid < self.best_fid
        if improved:
            self.best_fid, self.best_epoch = fid, epoch
        self.ctx.record(best_fid_validation=self.best_fid, best_epoch=self.best_epoch)
        return improved

    def state(self) -> dict:
        """What a checkpoint must hold to continue the bookkeeping exactly (JSON-friendly)."""
        return {"history": self.history, "best_fid": self.best_fid, "best_epoch": self.best_epoch,
                "fid_start": self.fid_start}

    def load_state(self, state: dict) -> None:
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.best_fid, self.best_epoch, self.fid_start = state["best_fid"], state["best_epoch"], state["fid_start"]

    def finish(self, generate: Generate, title: str) -> dict[str, float]:
        """Score the kept generator against the test split; write the grid and the curves."""
        samples = to_unit(generate(self.noise["test"]))
        fid = self.judge.fid(samples, "test")
        coverage = self.judge.coverage(samples)
        grid = sample_grid(to_unit(generate(self.noise["grid"])))
        save_png(grid, self.ctx.artifact("samples.png"))
        self.ctx.log_image("samples/kept_generator", grid, self.best_epoch)
        self.ctx.save_figure(curves_figure(self.history, self.judge.floor, self.best_epoch, title), "curves.png")
        floor = self.judge.floor
        return {
            "fid": fid,
            "fid_floor": floor,
            "fid_ratio": fid / floor,
            "fid_start": self.fid_start,
            "fid_start_ratio": self.fid_start / floor,
            "fid_floor_all_train": self.judge.floor_all_train,
            "fid_ratio_all_train": fid / self.judge.floor_all_train,
            "fid_improvement": self.fid_start / fid,
            "modes_covered": coverage["modes_covered"],
            "kl_uniform": coverage["kl_uniform"],
            "min_digit_share": float(np.min(coverage["shares"])),
            "best_epoch": self.best_epoch,
            "best_fid_validation": self.best_fid,
            "last_fid_validation": self.history["fid_validation"][-1],
            "classifier_accuracy": self.judge.classifier_accuracy,
        }
