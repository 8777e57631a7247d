"""GANs for the 8x8 digits in Keras 3: the same MLP GAN and DCGAN as `gan_torch.py`.

A `GAN` is a `keras.Model` with its own `compile(d_optimizer, g_optimizer)` and `train_step`, so
it trains through `fit()` with callbacks, as in the keras-io DCGAN example (here one `fit()` per
epoch, fed the batches in the same seeded order as the torch trainer). Keras has no
backend-neutral "compute gradients" call, so `gradient_step` is written once per backend: a
`tf.GradientTape` on TensorFlow, `loss.backward()` on torch. Everything else is `keras.ops`.

Seed question 19's Keras GAN, corrected: `Flatten` is imported; the discriminator is trained on
real digits (not Gaussian noise) as real and on generated images as fake; the generator alone is
updated to make the discriminator call its images real (the seed's `combined` model also updated
the discriminator, and asked for one target for two outputs).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from dllab.data.digits import load_digits
from dllab.gan.evaluation import Evaluator
from dllab.gan.faults import judged_digits, seed_noise_images

ARCHITECTURES = ("mlp", "dcgan")


def _weights():
    """DCGAN initialisation: N(0, 0.02) weights (biases start at 0, Keras's default)."""
    return {"kernel_initializer": keras.initializers.RandomNormal(0.0, 0.02)}


def _batch_norm():
    """BatchNorm with torch's defaults (Keras's momentum 0.9 is torch's momentum 0.1)."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                     gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))


def build_generator(architecture: str, latent_dim: int) -> keras.Model:
    """Noise (N, latent_dim) -> images (N, 8, 8, 1) in [-1, 1]."""
    if architecture == "mlp":
        hidden = [layers.Dense(128, **_weights()), _batch_norm(), layers.LeakyReLU(0.2),
                  layers.Dense(256, **_weights()), _batch_norm(), layers.LeakyReLU(0.2),
                  layers.Dense(64, activation="tanh", **_weights()), layers.Reshape((8, 8, 1))]
    elif architecture == "dcgan":  # 2x2 -> 4x4 -> 8x8 by strided transposed convolutions
        hidden = [layers.Dense(64 * 2 * 2, use_bias=False, **_weights()), _batch_norm(), layers.ReLU(),
                  layers.Reshape((2, 2, 64)),
                  layers.Conv2DTranspose(32, 4, strides=2, padding="same", use_bias=False, **_weights()),
                  _batch_norm(), layers.ReLU(),
                  layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh", **_weights())]
    else:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return keras.Sequential([keras.Input((latent_dim,)), *hidden], name="generator")


def build_discriminator(architecture: str) -> keras.Model:
    """Images (N, 8, 8, 1) -> one logit each (real > 0 > fake)."""
    if architecture == "mlp":
        hidden = [layers.Flatten(),
                  layers.Dense(256, **_weights()), layers.LeakyReLU(0.2),
                  layers.Dense(128, **_weights()), layers.LeakyReLU(0.2),
                  layers.Dense(1, **_weights())]
    elif architecture == "dcgan":  # 8x8 -> 4x4 -> 2x2 by strided convolutions
        hidden = [layers.Conv2D(32, 4, strides=2, padding="same", **_weights()), layers.LeakyReLU(0.2),
                  layers.Conv2D(64, 4, strides=2, padding="same", use_bias=False, **_weights()),
                  _batch_norm(), layers.LeakyReLU(0.2),
                  layers.Flatten(), layers.Dense(1, **_weights())]
    else:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return keras.Sequential([keras.Input((8, 8, 1)), *hidden], name="discriminator")


def gradient_step(optimizer, compute_loss, variables):
    """Differentiate `compute_loss()` with respect to `variables` and apply the optimizer:
    the only backend-specific code of the GAN. Returns the loss."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = compute_loss()
        optimizer.apply(tape.gradient(loss, variables), variables)
    elif backend == "torch":
        import torch

        for variable in variables:
            variable.value.grad = None
        loss = compute_loss()
        loss.backward()
        with torch.no_grad():
            optimizer.apply([variable.value.grad for variable in variables], variables)
    else:
        raise ValueError(f"the Keras GAN supports the tensorflow and torch backends, not {backend!r}")
    return loss


class GAN(keras.Model):
    """A generator and a discriminator trained against each other by `fit(real_images)`."""

    def __init__(self, generator, discriminator, latent_dim: int, real_label: float = 1.0, seed: int = 0):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.real_label = latent_dim, real_label
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.built = True  # both halves are built already; the GAN itself has no `call`

    def compile(self, d_optimizer, g_optimizer, combined_optimizer=None, **kwargs):
        """`combined_optimizer` (a negative control) replaces the generator step by the seed's."""
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.combined_optimizer = combined_optimizer
        self.generator_target_fake = False

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def noise(self, batch):
        return keras.random.normal((batch, self.latent_dim), seed=self.noise_seed)

    def discriminator_loss(self, real, fake):
        """BCE on real images labelled `real_label` and generated ones labelled 0."""
        real_logits = self.discriminator(real, training=True)
        fake_logits = self.discriminator(fake, training=True)
        return (self.bce(ops.full_like(real_logits, self.real_label), real_logits)
                + self.bce(ops.zeros_like(fake_logits), fake_logits))

    def generator_loss(self, batch):
        """Non-saturating loss -log D(G(z)): the generator wants its images called real (the
        control "generator-target-fake" trains it towards the fake label instead)."""
        logits = self.discriminator(self.generator(self.noise(batch), training=True), training=True)
        if self.generator_target_fake:
            return self.bce(ops.zeros_like(logits), logits)
        return self.bce(ops.ones_like(logits), logits)

    def seed_combined_loss(self, real, batch):
        """The seed's `combined` = Model([noise, real], [D(G(noise)), D(real)]) fit to ones: with
        the discriminator never frozen, its weights are trained by this loss too."""
        real_logits = self.discriminator(real, training=True)
        return self.generator_loss(batch) + self.bce(ops.ones_like(real_logits), real_logits)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        batch = ops.shape(real)[0]
        fake = ops.stop_gradient(self.generator(self.noise(batch), training=True))
        d_loss = gradient_step(self.d_optimizer, lambda: self.discriminator_loss(real, fake),
                               self.discriminator.trainable_weights)
        if self.combined_optimizer is not None:  # the seed's mistake, a negative control
            g_loss = gradient_step(self.combined_optimizer, lambda: self.seed_combined_loss(real, batch),
                                   self.generator.trainable_weights + self.discriminator.trainable_weights)
        else:
            g_loss = gradient_step(self.g_optimizer, lambda: self.generator_loss(batch),
                                   self.generator.trainable_weights)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {metric.name: metric.result() for metric in self.metrics}


def sampler(generator):
    """numpy noise -> numpy images in [-1, 1], with BatchNorm's moving statistics."""
    def generate(noise: np.ndarray) -> np.ndarray:
        return ops.convert_to_numpy(generator(ops.convert_to_tensor(noise), training=False))[..., 0]
    return generate


class KeepBestGenerator(keras.callbacks.Callback):
    """After each epoch: validation FID, and a copy of the generator's weights if it is the best."""

    def __init__(self, evaluator: Evaluator, generator):
        super().__init__()
        self.evaluator, self.generator = evaluator, generator
        self.best_weights = generator.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.evaluator.epoch_end(epoch + 1, sampler(self.generator), logs["d_loss"], logs["g_loss"]):
            self.best_weights = self.generator.get_weights()


def _numbered(prefix: str, arrays) -> dict[str, np.ndarray]:
    return {f"{prefix}/{index}": ops.convert_to_numpy(array) for index, array in enumerate(arrays)}


def _unnumbered(prefix: str, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    count = sum(key.startswith(prefix + "/") for key in arrays)
    return [arrays[f"{prefix}/{index}"] for index in range(count)]


def save_checkpoint(ctx, epoch: int, gan: GAN, keep_best: KeepBestGenerator) -> None:
    """Weights (BatchNorm statistics included), both optimizers' slots, the noise generator's
    state, the kept generator and the evaluation history: all a resumed run needs."""
    from dllab import checkpoint

    rng_arrays, rng_meta = checkpoint.rng_state()
    ctx.save_checkpoint(
        {**_numbered("generator", gan.generator.get_weights()),
         **_numbered("discriminator", gan.discriminator.get_weights()),
         **_numbered("best_generator", keep_best.best_weights),
         **_numbered("g_optimizer", gan.g_optimizer.variables),
         **_numbered("d_optimizer", gan.d_optimizer.variables),
         "noise_seed": ops.convert_to_numpy(gan.noise_seed.state), **rng_arrays},
        {**rng_meta, "epoch": epoch, "evaluator": keep_best.evaluator.state()})


def load_checkpoint(saved, gan: GAN, keep_best: KeepBestGenerator) -> int:
    """Restore what `save_checkpoint` wrote; returns the epoch to continue from."""
    from dllab import checkpoint

    arrays, meta = saved
    gan.generator.set_weights(_unnumbered("generator", arrays))
    gan.discriminator.set_weights(_unnumbered("discriminator", arrays))
    keep_best.best_weights = _unnumbered("best_generator", arrays)
    for optimizer, model, prefix in ((gan.g_optimizer, gan.generator, "g_optimizer"),
                                     (gan.d_optimizer, gan.discriminator, "d_optimizer")):
        optimizer.build(model.trainable_weights)
        for variable, value in zip(optimizer.variables, _unnumbered(prefix, arrays)):
            variable.assign(value)
    gan.noise_seed.state.assign(arrays["noise_seed"])
    keep_best.evaluator.load_state(meta["evaluator"])
    checkpoint.set_rng_state(arrays, meta)
    return meta["epoch"] + 1


def run(ctx, *, architecture: str, latent_dim: int, epochs: int, batch_size: int, learning_rate: float,
        beta_1: float, real_label: float, checkpoint_every: int, fault: str = "none") -> dict[str, float]:
    """Scenario entry: `fit()` on the training split, one epoch per call so that the batches
    come in the same seeded order as in the torch trainer (and a resumed run can continue
    exactly); keep the generator with the best validation FID, report its test FID beside the
    real-vs-real floor. Every `checkpoint_every` epochs (0: never) a checkpoint is saved."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if keras.backend.backend() not in ("tensorflow", "torch"):
        from dllab.errors import SkipScenario

        raise SkipScenario(f"the Keras GAN's gradient step is written for the tensorflow and torch backends, "
                           f"not {keras.backend.backend()!r}")
    digits = load_digits(ctx.seed)
    train = digits.train.images[..., None] * 2.0 - 1.0  # [0, 1] -> [-1, 1], channels last
    generator, discriminator = build_generator(architecture, latent_dim), build_discriminator(architecture)
    gan = GAN(generator, discriminator, latent_dim, real_label, seed=ctx.seed)
    gan.compile(d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, epsilon=1e-8),
                g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, epsilon=1e-8),
                combined_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, epsilon=1e-8)
                if fault == "seed-combined" else None, jit_compile=False)
    gan.generator_target_fake = fault == "generator-target-fake"  # a negative control's mistake
    evaluator = Evaluator(ctx, judged_digits(digits, fault), latent_dim)
    keep_best = KeepBestGenerator(evaluator, generator)
    saved = ctx.load_checkpoint()
    if saved is None:
        evaluator.start(sampler(generator))
    first_epoch = 1 if saved is None else load_checkpoint(saved, gan, keep_best)

    for epoch in ctx.progress(range(first_epoch, epochs + 1), total=epochs - first_epoch + 1,
                              desc=f"{architecture} GAN (keras)"):
        order = np.random.default_rng([ctx.seed, 1, epoch]).permutation(len(train))
        real = seed_noise_images(train.shape, ctx.seed, epoch) if fault == "seed-noise-as-real" else train
        gan.fit(real[order], batch_size=batch_size, initial_epoch=epoch - 1, epochs=epoch, shuffle=False,
                verbose=0, callbacks=[keep_best])
        if checkpoint_every and (epoch % checkpoint_every == 0 or epoch == epochs):
            save_checkpoint(ctx, epoch, gan, keep_best)

    generator.set_weights(keep_best.best_weights)
    return evaluator.finish(sampler(generator),
                            f"{architecture} GAN, keras ({keras.backend.backend()}): kept epoch {evaluator.best_epoch}")
