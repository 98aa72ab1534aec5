import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from sklearn.metrics import adjusted_rand_score

from seal_fast import KMeans, load_model
from seal_fast.errors import SealFastError
from seal_fast.kmeans_algorithm import kmeans, prepare_spaces
from seal_fast.metrics import cluster_accuracy

from conftest import blobs


@pytest.mark.parametrize("spaces", [1, 2])
def test_recovers_separable_mixture(spaces):
    Zs, y = blobs(n=800, k=5, spaces=spaces, seed=spaces)
    model = KMeans(5, seed=0, device="cpu").fit(Zs)
    assert cluster_accuracy(y, model.labels_) >= 0.95


def test_inertia_matches_sklearn_on_same_normalised_data():
    Z, _ = blobs(n=500, k=6, sep=2.0, seed=3)
    X = prepare_spaces([torch.from_numpy(Z)])
    _, _, inertia, _ = kmeans(X, 6, n_init=10, seed=0)
    sk = SKKMeans(6, n_init=10, random_state=0).fit(X.numpy())
    assert inertia <= sk.inertia_ * 1.01


def test_predict_and_save_load_roundtrip(tmp_path):
    Zs, y = blobs(n=400, k=3, spaces=2, seed=4)
    model = KMeans(3, seed=1, device="cpu").fit(Zs)
    np.testing.assert_array_equal(model.predict(Zs), model.labels_)
    model.save(tmp_path / "km.pt")
    again = load_model(tmp_path / "km.pt")
    assert isinstance(again, KMeans)
    np.testing.assert_array_equal(again.predict(Zs), model.labels_)


def test_seeded_and_deterministic():
    Z, _ = blobs(n=300, k=4, sep=1.0, seed=5)
    a = KMeans(4, seed=3, device="cpu").fit(Z).labels_
    b = KMeans(4, seed=3, device="cpu").fit(Z).labels_
    np.testing.assert_array_equal(a, b)


def test_duplicate_points_do_not_break_seeding():
    Z = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    model = KMeans(3, seed=0, device="cpu").fit(Z)
    assert len(np.unique(model.labels_)) == 3


@pytest.mark.parametrize("scale", [1e20, 1e-40, 1e30, 1e-30])
def test_any_magnitude_gives_the_same_clusters(scale):
    """float32 norms of rows of 1e20 overflow and of 1e-40 underflow: K-Means (which
    normalises every row) must still find the same clusters, in fit and in predict."""
    Z, y = blobs(n=300, k=3, seed=4)
    ref = KMeans(3, seed=0, device="cpu").fit([Z])
    scaled = (Z.astype(np.float64) * scale).astype(np.float32)
    assert np.abs(scaled).max() > 0 and np.isfinite(scaled).all()
    model = KMeans(3, seed=0, device="cpu").fit([scaled])
    assert len(np.unique(model.labels_)) == 3
    assert adjusted_rand_score(ref.labels_, model.labels_) > 0.99
    np.testing.assert_array_equal(ref.predict([scaled]), ref.labels_)  # a model fitted at one scale, another's rows


def test_mixed_magnitudes_row_by_row():
    Z, _ = blobs(n=300, k=3, seed=5)
    ref = KMeans(3, seed=0, device="cpu").fit([Z])
    factors = np.where(np.arange(300) % 2 == 0, 1e-38, 1e37)[:, None]
    mixed = (Z.astype(np.float64) * factors).astype(np.float32)
    assert adjusted_rand_score(ref.labels_, KMeans(3, seed=0, device="cpu").fit([mixed]).labels_) > 0.99


def test_float64_beyond_float32_is_refused_not_turned_into_inf():
    Z, _ = blobs(n=50, k=2, seed=6)
    with pytest.raises(SealFastError, match="row 0 holds a value beyond float32's range"):
        KMeans(2, device="cpu").fit([Z.astype(np.float64) * 1e300])
