"""Deep SLDA: learns a Gaussian stream, streaming statistics equal batch ones, exact resume."""
import numpy as np
import pytest
import torch

from remind.checkpoint import load_checkpoint, save_checkpoint
from remind.errors import InputError
from remind.slda import SLDAError, StreamingLDA

D, K = 8, 5


def gaussian_stream(n, seed, spread=3.0):
    """n samples of K classes with well-separated means and one shared covariance, shuffled."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(0, spread, size=(K, D))
    mix = np.random.default_rng(98).normal(size=(D, D)) / np.sqrt(D)
    y = rng.integers(0, K, size=n)
    x = means[y] + rng.normal(size=(n, D)) @ mix
    return torch.from_numpy(x), torch.from_numpy(y)


def pooled_within_class_cov(x, y):
    x, y = x.numpy(), y.numpy()
    centred = np.empty_like(x)
    for c in np.unique(y):
        centred[y == c] = x[y == c] - x[y == c].mean(0)
    return centred.T @ centred / len(x)


def accuracy(model, x, y):
    return (model.predict(x).argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("base", [0, 50])
def test_learns_a_gaussian_stream_well_above_chance(base):
    x, y = gaussian_stream(300, seed=0)
    xt, yt = gaussian_stream(500, seed=1)
    model = StreamingLDA(D, K)
    if base:
        model.fit_base(x[:base], y[:base])
    for xi, yi in zip(x[base:], y[base:]):
        model.fit(xi, int(yi))
    assert model.num_updates == 300
    assert accuracy(model, xt, yt) > 0.9  # chance is 0.2


def test_one_class_paper_update_equals_the_batch_covariance():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(200, D)) @ rng.normal(size=(D, D)) + 5)
    y = torch.zeros(200, dtype=torch.int64)
    model = StreamingLDA(D, K).fit_stream(x, y)
    np.testing.assert_allclose(model.cov.numpy(), np.cov(x.numpy().T, bias=True), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.means[0].numpy(), x.numpy().mean(0), rtol=1e-12, atol=1e-12)


def test_exact_update_equals_the_pooled_within_class_covariance():
    x, y = gaussian_stream(400, seed=4)
    model = StreamingLDA(D, K, covariance_update="exact").fit_stream(x, y)
    np.testing.assert_allclose(model.cov.numpy(), pooled_within_class_cov(x, y), rtol=1e-10, atol=1e-12)
    batch = StreamingLDA(D, K).fit_base(x, y)
    np.testing.assert_allclose(model.cov.numpy(), batch.cov.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.means.numpy(), batch.means.numpy(), rtol=1e-12, atol=1e-12)
    assert torch.equal(model.counts, batch.counts)
    # base init on a prefix, then streaming the rest: the batch statistics of all of it
    split = StreamingLDA(D, K, covariance_update="exact").fit_base(x[:150], y[:150]).fit_stream(x[150:], y[150:])
    np.testing.assert_allclose(split.cov.numpy(), batch.cov.numpy(), rtol=1e-10, atol=1e-12)
    # the paper's rule (total count) is close to, not equal to, the pooled covariance
    paper = StreamingLDA(D, K).fit_stream(x, y)
    rel = np.abs(paper.cov.numpy() - batch.cov.numpy()).max() / np.abs(batch.cov.numpy()).max()
    assert 0 < rel < 0.2


def test_fit_base_statistics():
    x, y = gaussian_stream(120, seed=5)
    model = StreamingLDA(D, K).fit_base(x, y)
    for c in range(K):
        np.testing.assert_allclose(model.means[c].numpy(), x[y == c].numpy().mean(0), rtol=1e-12)
    assert model.counts.tolist() == torch.bincount(y, minlength=K).tolist()
    np.testing.assert_allclose(model.cov.numpy(), pooled_within_class_cov(x, y), rtol=1e-10, atol=1e-12)


def test_predict_is_the_shrunk_lda_rule():
    x, y = gaussian_stream(200, seed=6)
    model = StreamingLDA(D, K).fit_stream(x, y)
    eps, mu, cov = 1e-4, model.means.numpy(), model.cov.numpy()
    precision = np.linalg.inv((1 - eps) * cov + eps * np.eye(D))
    w = precision @ mu.T
    b = -0.5 * np.sum(mu * w.T, axis=1)
    np.testing.assert_allclose(model.predict(x[:10]).numpy(), x[:10].numpy() @ w + b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.predict(x[:10], batch_size=3).numpy(), model.predict(x[:10]).numpy())


def test_fit_one_by_one_equals_fit_stream():
    x, y = gaussian_stream(60, seed=7)
    a = StreamingLDA(D, K)
    for xi, yi in zip(x, y):
        a.fit(xi.unsqueeze(0), yi)
    b = StreamingLDA(D, K).fit_stream(x, y)
    assert torch.equal(a.cov, b.cov) and torch.equal(a.means, b.means)


def test_fixed_covariance_keeps_the_base_covariance():
    x, y = gaussian_stream(100, seed=8)
    model = StreamingLDA(D, K, plastic_covariance=False).fit_base(x[:40], y[:40])
    base_cov = model.cov.clone()
    model.fit_stream(x[40:], y[40:])
    assert torch.equal(model.cov, base_cov) and model.counts.sum() == 100


def test_unseen_classes_are_never_predicted():
    x, y = gaussian_stream(100, seed=9)
    keep = y < 2
    model = StreamingLDA(D, K).fit_stream(x[keep], y[keep])
    scores = model.predict(x)
    assert torch.isinf(scores[:, 2:]).all() and (scores[:, 2:] < 0).all()
    assert set(scores.argmax(1).tolist()) <= {0, 1}
    assert torch.isfinite(StreamingLDA(D, K).predict(x[:3])).all()  # nothing learnt: no -inf rows


def test_resume_is_exact(tmp_path):
    x, y = gaussian_stream(200, seed=10)
    xt, _ = gaussian_stream(50, seed=11)
    whole = StreamingLDA(D, K).fit_base(x[:30], y[:30]).fit_stream(x[30:], y[30:])

    first = StreamingLDA(D, K).fit_base(x[:30], y[:30]).fit_stream(x[30:110], y[30:110])
    first.predict(xt)  # a cached classifier must not leak into the saved state
    save_checkpoint(tmp_path / "slda.pt", first.state_dict())
    resumed = StreamingLDA(D, K).load_state_dict(load_checkpoint(tmp_path / "slda.pt"))
    resumed.fit_stream(x[110:], y[110:])
    for name in ("means", "counts", "cov"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.num_updates == whole.num_updates == 200
    assert torch.equal(resumed.predict(xt), whole.predict(xt))


def test_load_state_dict_refuses_other_settings():
    state = StreamingLDA(D, K).state_dict()
    for other in (StreamingLDA(D + 1, K), StreamingLDA(D, K, shrinkage=1e-3),
                  StreamingLDA(D, K, covariance_update="exact"), StreamingLDA(D, K, plastic_covariance=False)):
        with pytest.raises(SLDAError, match="SLDA state"):
            other.load_state_dict(state)
    with pytest.raises(SLDAError, match="not an SLDA state dict"):
        StreamingLDA(D, K).load_state_dict({"weights": torch.zeros(3)})


def test_bad_inputs_are_one_line_input_errors():
    model = StreamingLDA(D, K)
    cases = [(lambda: model.fit(torch.zeros(D + 1), 0), "size 8"),
             (lambda: model.fit(torch.zeros(D), K), "labels must be in 0..4"),
             (lambda: model.fit(torch.zeros(2, D), [0, 1]), "one sample at a time"),
             (lambda: model.fit_base(torch.zeros(3, D), [0, 1]), "3 feature vectors but 2 labels"),
             (lambda: StreamingLDA(D, K, covariance_update="fast"), "covariance_update"),
             (lambda: StreamingLDA(D, K, shrinkage=2), "shrinkage")]
    for call, fragment in cases:
        with pytest.raises(SLDAError, match=fragment) as info:
            call()
        assert isinstance(info.value, InputError) and "\n" not in str(info.value)


def test_accepts_float32_inputs_and_other_devices():
    x, y = gaussian_stream(80, seed=12)
    cpu = StreamingLDA(D, K).fit_stream(x.float(), y)
    assert cpu.means.dtype == torch.float64
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    gpu = StreamingLDA(D, K, device="cuda").fit_stream(x.float(), y)
    assert gpu.predict(x).device.type == "cuda"
    np.testing.assert_allclose(gpu.cov.cpu().numpy(), cpu.cov.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.predict(x).cpu().numpy(), cpu.predict(x).numpy(), rtol=1e-7, atol=1e-7)
