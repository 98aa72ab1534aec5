"""K = 1000 (ImageNet's number of classes) through every method on small synthetic
data: every label in range, predict agrees with fit, and the accuracy the package
reports is the one scipy's Hungarian matching on scikit-learn's confusion matrix gives."""
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score

from seal_fast import SATC, SEAL, TURTLE, KMeans
from seal_fast.metrics import evaluate

K, PER_CLASS, D = 1000, 3, 24


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, D)).astype(np.float32)
    y = np.repeat(np.arange(K), PER_CLASS)
    X = centres[y] + 0.05 * rng.normal(size=(len(y), D)).astype(np.float32)
    patches = (centres[y][:, None, :8] + 0.1 * rng.normal(size=(len(y), 4, 8))).astype(np.float32)
    return X, patches, y


def _scipy_acc(y, pred):
    cm = confusion_matrix(y, pred)
    rows, cols = linear_sum_assignment(-cm)
    return 100.0 * cm[rows, cols].sum() / len(y)


@pytest.mark.parametrize("method", ["kmeans", "turtle", "seal", "satc"])
def test_thousand_clusters(method):
    X, P, y = _data()
    quick = dict(restarts=1, min_steps_per_epoch=5, patch_neighbors=3)
    model = {"kmeans": lambda: KMeans(K, seed=0),
             "turtle": lambda: TURTLE(K, iterations=3, seed=0),
             "seal": lambda: SEAL(K, seed=0, iterations=3, epochs=1, **quick),
             "satc": lambda: SATC(K, seed=0, max_epochs=1, **quick)}[method]()
    extra = {"patches": P} if method in ("seal", "satc") else {}
    labels = model.fit([X], **extra).labels_
    assert labels.shape == (len(y),) and labels.min() >= 0 and labels.max() < K
    np.testing.assert_array_equal(model.predict([X]), labels)
    scores = evaluate(y, labels)
    assert scores["acc"] == pytest.approx(_scipy_acc(y, labels), abs=1e-3)  # evaluate rounds to 4 decimals
    assert scores["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, labels), abs=1e-3)
    assert scores["ari"] == pytest.approx(100 * adjusted_rand_score(y, labels), abs=1e-3)
    if method == "kmeans":  # well-separated centres: K-Means must find most of them
        assert scores["acc"] > 60
