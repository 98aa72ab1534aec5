import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from seal_fast.errors import SealFastError
from seal_fast.metrics import (adjusted_rand_index, cluster_accuracy, contingency, evaluate,
                               normalized_mutual_info, triplet_accuracy)

from conftest import cli, one_line_error


def test_accuracy_is_invariant_to_relabeling():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0


def test_accuracy_hand_worked():
    # clusters: {0,0,1}, {1,1,2}, {2,2,0}: best matching is diagonal, 6 of 9 right
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])
    p = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert cluster_accuracy(y, p) == pytest.approx(6 / 9)


def test_accuracy_with_more_clusters_than_classes():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0, 0, 1, 1, 2, 2, 2, 2])  # class 0 split in two: only one half can match
    assert cluster_accuracy(y, p) == pytest.approx(6 / 8)


def test_accuracy_with_fewer_clusters_than_classes():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 0, 1, 1])
    assert cluster_accuracy(y, p) == pytest.approx(4 / 6)


def test_contingency_counts():
    t = contingency([5, 5, 7], [1, 2, 2])
    np.testing.assert_array_equal(t, [[1, 1], [0, 1]])


@pytest.mark.parametrize("seed", range(5))
def test_nmi_ari_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 9, 500))
    assert normalized_mutual_info(y, p) == pytest.approx(normalized_mutual_info_score(y, p), abs=1e-10)
    assert adjusted_rand_index(y, p) == pytest.approx(adjusted_rand_score(y, p), abs=1e-10)


def test_nmi_ari_hand_worked():
    y = np.array([0, 0, 1, 1])
    assert normalized_mutual_info(y, [1, 1, 0, 0]) == pytest.approx(1.0)
    assert adjusted_rand_index(y, [1, 1, 0, 0]) == pytest.approx(1.0)
    # independent split: MI 0; ARI of this table is -0.5 (worked out by hand:
    # sum_ij C(n_ij,2)=0, rows 1+1, cols 1+1, expected 2*2/6, max 2 -> (0-2/3)/(2-2/3))
    assert normalized_mutual_info(y, [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert adjusted_rand_index(y, [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_evaluate_reports_percent():
    r = evaluate([0, 0, 1, 1], [1, 1, 0, 0])
    assert r == {"acc": 100.0, "nmi": 100.0, "ari": 100.0, "n": 4}


def test_evaluate_rejects_length_mismatch():
    with pytest.raises(SealFastError, match="predictions"):
        evaluate([0, 1, 1], [0, 1])


def test_triplet_accuracy_separated_and_random():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    Z_sep = np.eye(4)[y] + 0.01 * rng.normal(size=(200, 4))
    assert triplet_accuracy(Z_sep, y, 2000, seed=0) == 1.0
    Z_rand = rng.normal(size=(200, 8))
    acc = triplet_accuracy(Z_rand, y, 4000, seed=0)
    assert 0.4 < acc < 0.6


def test_triplet_accuracy_hand_worked():
    # class 0 at angle 0 and 10 degrees, class 1 at 90 degrees: every triplet is correct
    # except those anchored in class 1 (only one member: never an anchor)
    Z = np.array([[1.0, 0.0], [np.cos(0.17), np.sin(0.17)], [0.0, 1.0]])
    y = np.array([0, 0, 1])
    assert triplet_accuracy(Z, y, 100, seed=3) == 1.0
    # swap: the positive is now farther than the negative for every anchor
    Z_bad = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.1]])
    assert triplet_accuracy(Z_bad, y, 100, seed=3) == 0.0


def test_triplet_accuracy_is_seeded():
    rng = np.random.default_rng(1)
    Z, y = rng.normal(size=(300, 5)), rng.integers(0, 3, 300)
    assert triplet_accuracy(Z, y, 500, seed=7) == triplet_accuracy(Z, y, 500, seed=7)


def test_triplet_accuracy_needs_two_classes():
    with pytest.raises(SealFastError, match="two classes"):
        triplet_accuracy(np.ones((4, 2)), np.zeros(4, dtype=int))


def test_evaluate_labels(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2])
    np.save(tmp_path / "huge.npy", np.array([0, 0, 2.0**63, 2.0**63, 2.0**64, 2.0**64]))
    np.save(tmp_path / "y.npy", y)
    rc, _, err = cli("evaluate", tmp_path / "huge.npy", "--truth", tmp_path / "y.npy")
    one_line_error(rc, err, "whole numbers within the int64 range")
    truth = np.array([0, 0, 1, 1, -1, -1])
    scores = evaluate(truth, np.array([5, 5, 3, 3, 0, 3]))
    assert scores["acc"] == 100.0 and scores["n"] == 4 and scores["n_unlabelled"] == 2
    with pytest.raises(SealFastError, match="-1 \\(unlabelled\\) is the only negative value"):
        evaluate(np.array([0, -2, 1]), np.array([0, 1, 1]))
    with pytest.raises(SealFastError, match="must be >= 0"):
        evaluate(y, np.array([0, 0, 1, 1, -1, 2]))
