"""GAN metrics and trainers, cross-checked: the Frechet distance against closed forms, mode
coverage against scipy's KL, the real-vs-real floor against noise, PNG bytes against a rerun,
the torch and Keras networks against each other, and a resumed torch run against an
uninterrupted one."""

import math

import numpy as np
import pytest
from scipy import linalg, stats

from dllab.gan.metrics import (GanJudge, fid_from_features, frechet_distance, mode_coverage,
                               train_digits_classifier)
from dllab.gan.plots import png_bytes, sample_grid, to_unit


def random_covariance(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_identical_sets_have_zero_distance():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(fid_from_features(features, features)) < 1e-8


def test_shifted_gaussians_give_the_closed_form():
    rng = np.random.default_rng(1)
    dim = 8
    cov = random_covariance(rng, dim)
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    # same covariance: only the squared distance of the means is left
    assert frechet_distance(mean_a, cov, mean_b, cov) == pytest.approx(np.sum((mean_a - mean_b) ** 2), rel=1e-8)
    # diagonal covariances: sum of (sqrt(a) - sqrt(b))^2
    var_a, var_b = rng.uniform(0.5, 2, dim), rng.uniform(0.5, 2, dim)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-8)


def test_general_covariances_match_the_symmetric_form():
    """Tr sqrt(A B) computed by sqrtm equals Tr sqrt(A^1/2 B A^1/2) computed by eigh."""
    rng = np.random.default_rng(2)
    cov_a, cov_b = random_covariance(rng, 12), random_covariance(rng, 12)
    root_a = linalg.sqrtm(cov_a).real
    symmetric = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)))
    expected = np.trace(cov_a) + np.trace(cov_b) - 2 * symmetric
    assert frechet_distance(np.zeros(12), cov_a, np.zeros(12), cov_b) == pytest.approx(expected, rel=1e-7)


def test_samples_converge_to_the_closed_form():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(20000, 4))
    b = rng.normal(0.5, 2.0, size=(20000, 4))
    expected = 4 * 0.5 ** 2 + 4 * (1 - 2) ** 2
    assert fid_from_features(a, b) == pytest.approx(expected, rel=0.05)


def test_singular_covariances_stay_finite():
    """Dead ReLU units give constant zero features: the distance is the one without them."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(300, 5)), rng.normal(0.3, 1.2, size=(300, 5))
    padded = lambda x: np.hstack([x, np.zeros((len(x), 3))])
    assert fid_from_features(padded(a), padded(b)) == pytest.approx(fid_from_features(a, b), abs=1e-4)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        fid_from_features(np.zeros(5), np.zeros(5))


def test_mode_coverage_against_scipy_kl():
    uniform = mode_coverage(np.repeat(np.arange(10), 36))
    assert uniform["modes_covered"] == 10 and uniform["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    collapsed = mode_coverage(np.full(360, 3))
    assert collapsed["modes_covered"] == 1 and collapsed["kl_uniform"] == pytest.approx(math.log(10))
    labels = np.random.default_rng(5).choice(10, size=360, p=np.r_[np.full(9, 0.104), 0.064])
    coverage = mode_coverage(labels)
    assert coverage["kl_uniform"] == pytest.approx(stats.entropy(coverage["shares"], np.full(10, 0.1)))
    few = mode_coverage(np.r_[np.zeros(99, int), [1]])  # digit 1 has 1% < 5%: not covered
    assert few["modes_covered"] == 1


@pytest.fixture(scope="module")
def judge():
    from dllab.data.digits import load_digits

    return GanJudge(load_digits(0), seed=0)


def test_classifier_is_accurate_and_cached(judge):
    from dllab.data.digits import load_digits

    digits = load_digits(0)
    assert judge.classifier_accuracy >= 0.95
    assert train_digits_classifier(digits.train.images, digits.train.labels, 0) is judge.classifier
    features = judge.classifier.features(digits.test.images)
    assert features.shape == (360, 128) and features.min() >= 0


def test_floor_is_small_against_fakes(judge):
    """Real validation digits score near the floor; noise, blank and one-digit sets score far above."""
    from dllab.data.digits import load_digits

    digits = load_digits(0)
    rng = np.random.default_rng(6)
    assert 0 < judge.floor < judge.fid(digits.validation.images, "test") * 3
    assert judge.fid(digits.test.images, "test") == pytest.approx(0.0, abs=1e-6)
    assert judge.fid(rng.uniform(0, 1, (360, 8, 8)), "test") > 20 * judge.floor
    assert judge.fid(np.full((360, 8, 8), 0.5) + rng.normal(0, 0.01, (360, 8, 8)), "test") > 50 * judge.floor
    ones = digits.train.images[digits.train.labels == 1]
    assert judge.fid(ones[rng.integers(len(ones), size=360)], "test") > 10 * judge.floor
    assert judge.coverage(digits.test.images)["modes_covered"] == 10


def test_sample_grid_and_png_are_reproducible():
    images = to_unit(np.random.default_rng(7).uniform(-1, 1, (23, 64)))
    grid = sample_grid(images, columns=10, scale=2)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 17 + 1, 10 * 17 + 1)
    assert png_bytes(grid) == png_bytes(sample_grid(images.copy(), columns=10, scale=2))
    with pytest.raises(ValueError):
        sample_grid(np.zeros((0, 8, 8)))


def test_torch_networks_and_init():
    torch = pytest.importorskip("torch")
    from dllab.gan.gan_torch import build_discriminator, build_generator, init_weights

    for architecture in ("mlp", "dcgan"):
        generator, discriminator = build_generator(architecture, 16), build_discriminator(architecture)
        generator.apply(init_weights)
        images = generator(torch.randn(5, 16))
        assert images.shape == (5, 1, 8, 8) and images.abs().max() <= 1
        assert discriminator(images).shape == (5, 1)
        weights = torch.cat([m.weight.flatten() for m in generator.modules() if isinstance(m, torch.nn.Linear)])
        assert weights.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError):
        build_generator("resnet", 16)


def test_keras_networks_match_torch_parameter_counts():
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from dllab.gan import gan_keras, gan_torch

    count = lambda module: sum(p.numel() for p in module.parameters())
    for architecture in ("mlp", "dcgan"):
        keras_g = gan_keras.build_generator(architecture, 16)
        keras_d = gan_keras.build_discriminator(architecture)
        assert keras_g.count_params() - sum(int(np.prod(w.shape)) for w in keras_g.non_trainable_weights) \
            == count(gan_torch.build_generator(architecture, 16))
        assert sum(int(np.prod(w.shape)) for w in keras_d.trainable_weights) \
            == count(gan_torch.build_discriminator(architecture))
        assert tuple(keras_g.output_shape) == (None, 8, 8, 1)


def test_keras_train_step_updates_both_networks():
    keras = pytest.importorskip("keras")
    from dllab.gan.gan_keras import GAN, build_discriminator, build_generator

    keras.utils.set_random_seed(0)
    generator, discriminator = build_generator("dcgan", 8), build_discriminator("dcgan")
    gan = GAN(generator, discriminator, latent_dim=8, seed=0)
    gan.compile(d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5), g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                jit_compile=False)
    before_g, before_d = generator.get_weights(), discriminator.get_weights()
    real = np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)).astype(np.float32)
    history = gan.fit(real, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["d_loss"][0]) and np.isfinite(history.history["g_loss"][0])
    assert not np.allclose(before_g[0], generator.get_weights()[0])
    assert not np.allclose(before_d[0], discriminator.get_weights()[0])


def _spec(scenario_id):
    from dllab import registry

    return registry.load_all()[scenario_id]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_same_seed_same_png_and_resume_matches(framework, tmp_path, monkeypatch):
    """Two runs with one seed give the same metrics and PNG bytes; a run interrupted after its
    epoch-2 checkpoint and resumed ends exactly where the uninterrupted run does (Keras: on the
    backend KERAS_BACKEND names)."""
    pytest.importorskip(framework)
    from dllab.gan import evaluation
    from dllab.runner import run_scenario

    spec = _spec("gan/gan")
    settings = ["epochs=4", "checkpoint_every=2"]
    first = run_scenario(spec, seed=3, framework=framework, quick=True, overrides=settings, out_dir=tmp_path / "a")
    second = run_scenario(spec, seed=3, framework=framework, quick=True, overrides=settings, out_dir=tmp_path / "b")
    assert first.status == "ok" and first.metrics == second.metrics
    assert (tmp_path / "a/samples.png").read_bytes() == (tmp_path / "b/samples.png").read_bytes()
    from dllab.tensorboard_log import read_scalars

    curves = read_scalars(tmp_path / "a/tensorboard")
    assert [step for step, _ in curves["charts/fid_validation"]] == [0, 1, 2, 3, 4]
    assert len(curves["losses/generator"]) == 4

    original = evaluation.Evaluator.epoch_end

    def interrupt_at_epoch_3(self, epoch, *args):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch, *args)

    monkeypatch.setattr(evaluation.Evaluator, "epoch_end", interrupt_at_epoch_3)
    stopped = run_scenario(spec, seed=3, framework=framework, quick=True, overrides=settings, out_dir=tmp_path / "c")
    assert stopped.status == "interrupted"
    monkeypatch.setattr(evaluation.Evaluator, "epoch_end", original)
    resumed = run_scenario(spec, seed=3, framework=framework, quick=True, overrides=settings,
                           out_dir=tmp_path / "c", resume_from=tmp_path / "c")
    assert resumed.metrics == first.metrics
    assert (tmp_path / "c/samples.png").read_bytes() == (tmp_path / "a/samples.png").read_bytes()



def test_near_singular_covariances_fall_back_to_the_symmetric_trace():
    """Features of a collapsed generator (rank one): sqrtm's imaginary part can be large; the
    eigenvalue form of Tr((S_a S_b)^(1/2)) is real, and equals sqrtm's where both work."""
    from dllab.gan.metrics import frechet_distance, trace_sqrt_product

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    from scipy import linalg
    assert trace_sqrt_product(cov_a, cov_b) == pytest.approx(np.trace(linalg.sqrtm(cov_a @ cov_b).real), rel=1e-8)
    collapsed = np.outer(rng.normal(size=40), rng.normal(size=6)) * 1e-3
    distance = frechet_distance(collapsed.mean(0), np.cov(collapsed, rowvar=False), b.mean(0), cov_b)
    assert np.isfinite(distance) and distance > 0
