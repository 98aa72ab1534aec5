"""Self-labeling (SCAN's last step): confident rows whose neighbours agree retrain the labeler."""
import numpy as np
import torch

from seal_fast.distillation.train import neighbor_index
from seal_fast.labeling import LabelingConfig, TaskEncoder, fit_to_partition
from seal_fast.metrics import cluster_accuracy
from seal_fast.models.seal import SEAL
from seal_fast.self_labeling import confident_rows, self_label

from conftest import three_views


def test_confident_rows_keeps_the_surer_half_with_agreeing_neighbours():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45], [0.1, 0.9], [0.3, 0.7]])
    # row 0's neighbours disagree with it; rows 1, 4 agree
    nbrs = torch.tensor([[4, 5], [0, 2], [0, 1], [0, 1], [5, 5], [4, 4]])
    assert confident_rows(probs, nbrs, keep=0.5, agree=0.5).tolist() == [1, 4]
    # a cluster whose confident rows all disagree still keeps its surest row
    assert confident_rows(probs, torch.tensor([[4, 5]] * 4 + [[0, 1]] * 2), keep=0.5).tolist() == [0, 4]


def test_self_labeling_repairs_a_noisy_labeling():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    Z = torch.from_numpy((rng.normal(size=(3, 10))[y] * 3 + rng.normal(size=(600, 10))).astype(np.float32))
    noisy = torch.from_numpy(y.copy())
    flip = torch.from_numpy(rng.random(600) < 0.15)
    noisy[flip] = (noisy[flip] + 1) % 3
    g = torch.Generator().manual_seed(0)
    # a labeler that learned the noise: fitted to the noisy labels (it cannot be perfect)
    encoder = TaskEncoder([10], 3, g)
    fit_to_partition(encoder, [Z], noisy, LabelingConfig(batch_size=600, init_steps=30, init_lr=1e-2), g)
    before = cluster_accuracy(y, encoder.predict([Z]).numpy())
    out = self_label(encoder, [Z], neighbor_index(torch.nn.functional.normalize(Z, dim=1), 10),
                     LabelingConfig(batch_size=600))
    after = cluster_accuracy(y, out.encoder.predict([Z]).numpy())
    assert after >= 0.97 and after > before and 0 < out.kept < 600


def test_seal_with_self_labeling():
    Z, P, _, y = three_views(n=300, seed=2)
    model = SEAL(4, iterations=300, epochs=2, restarts=1, patch_neighbors=4, self_labeling=True,
                 device="cpu").fit([Z], patches=P)
    info = model.fit_details_["self_labeling"]
    assert 0 < info["rows"] <= 300 and 0 <= info["changed"] <= 1
    np.testing.assert_array_equal(model.predict([Z]), model.labels_)
