"""The human labeling's warm start: the task encoder fitted to a given partition
before the bi-level search (SEAL's labeling_init="consensus")."""
import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from seal_fast.labeling import LabelingConfig, TaskEncoder, fit_to_partition, human_labeling


def _blobs(seed=0, n=400, k=4, d=12):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 3
    return [torch.from_numpy((centres[y] + rng.normal(size=(n, d))).astype(np.float32))], torch.from_numpy(y)


def test_fit_to_partition_reproduces_a_linear_partition():
    Zs, y = _blobs()
    labels = (y + 1) % 4  # any names: the fit is to these labels, not to a permutation of them
    g = torch.Generator().manual_seed(0)
    encoder = TaskEncoder([Zs[0].shape[1]], 4, g)
    before = float((encoder.predict(Zs) == labels).float().mean())
    agreement = fit_to_partition(encoder, Zs, labels, LabelingConfig(batch_size=128), g)
    assert agreement > 0.97 and before < 0.6
    assert agreement == float((encoder.predict(Zs) == labels).float().mean())


def test_the_search_starts_from_the_given_partition():
    """From the true blobs the search has nothing to change: the labels it ends with are
    the start's (a random start over 20 iterations is far from them)."""
    Zs, y = _blobs(seed=1)
    config = LabelingConfig(iterations=20, batch_size=128, stop_tol=0.0)
    warm = human_labeling(Zs, 4, config, seed=3, init_labels=y)
    cold = human_labeling(Zs, 4, config, seed=3)
    assert warm.init_agreement > 0.97 and warm.init_seconds > 0 and cold.init_agreement is None
    assert adjusted_rand_score(y, warm.encoder.predict(Zs)) > 0.95
    assert adjusted_rand_score(y, cold.encoder.predict(Zs)) < 0.9
