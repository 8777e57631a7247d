"""The negative controls' mistakes, shared by the torch and the Keras GANs so that both make
them alike (the `fault` parameter of gan/gan and gan/dcgan; "none" by default):

- "seed-noise-as-real": seed question 19's `real_imgs = np.random.normal(0, 1, ...)`, Gaussian
  noise given to the discriminator as the real images;
- "seed-combined": the seed's `combined` model, whose generator step also trains the
  discriminator (never frozen) to call generated and real images real (in each trainer);
- "generator-target-fake": the generator trained towards the fake label, D(G(z)) = 0 (it
  helps the discriminator instead of fooling it; in each trainer);
- "judge-on-gan-pixels": the digits classifier that judges the samples trained on the GAN's
  [-1, 1] pixels, then fed [0, 1] images.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

FAULTS = ("none", "seed-noise-as-real", "seed-combined", "generator-target-fake", "judge-on-gan-pixels")


def seed_noise_images(shape: tuple, seed: int, epoch: int) -> np.ndarray:
    """The seed's "real" images for one epoch: N(0, 1) noise of the training set's shape, drawn
    from (seed, epoch) in numpy, so both frameworks see the same noise."""
    return np.random.default_rng([seed, 19, epoch]).standard_normal(shape).astype(np.float32)


def judged_digits(digits, fault: str):
    """The digits the judge is built from: as loaded, or with the training images (the judge's
    training set) rescaled to the GAN's [-1, 1] while everything it is fed stays in [0, 1]."""
    if fault == "judge-on-gan-pixels":
        return replace(digits, train=replace(digits.train, images=digits.train.images * 2.0 - 1.0))
    return digits
