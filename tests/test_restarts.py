"""Distillation restarts and the label-free choices between them (separability, consensus)."""
import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from seal_fast.distill import (ClusterHead, DistillConfig, Modality, consensus_index, distill_with_restarts,
                               head_labels, separability_index)
from seal_fast.errors import SealFastError
from seal_fast.models.satc import SATC
from seal_fast.models.seal import SEAL

from test_satc import three_views


def test_consensus_picks_the_partition_the_others_agree_with():
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    same_as_a = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1])   # a relabelled: NMI 1
    odd = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])         # independent of a: NMI 0
    assert consensus_index([a, same_as_a, odd])[0] == 0   # tie between a and its copy: the first
    chosen, agreement = consensus_index([odd, a, same_as_a])
    assert chosen == 1
    assert agreement[1][2] == pytest.approx(1.0) and agreement[0][1] == pytest.approx(0.0, abs=1e-12)
    assert consensus_index([odd])[0] == 0


def test_separability_prefers_the_partition_a_linear_classifier_learns():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(600, 8, generator=g)
    linear = (X @ torch.randn(8, 4, generator=g)).argmax(1)           # a linear function of X
    noisy = linear.clone()
    flip = torch.randperm(600, generator=g)[:200]
    noisy[flip] = torch.randint(0, 4, (200,), generator=g)            # a third of it redrawn
    random = torch.randint(0, 4, (600,), generator=g)                 # independent of X
    chosen, scores = separability_index(X, [random, noisy, linear], n_clusters=4, max_rows=600)
    assert chosen == 2
    assert scores[2] < scores[1] < scores[0]
    # the same call gives the same scores (fixed subset, split and fit)
    assert separability_index(X, [random, noisy, linear], n_clusters=4, max_rows=600)[1] == scores
    # the reference and the compiled fit agree on the choice
    assert separability_index(X, [random, noisy, linear], n_clusters=4, max_rows=600,
                              backend="reference")[0] == 2


def test_separability_does_not_reward_empty_clusters():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(600, 8, generator=g)
    four = (X @ torch.randn(8, 4, generator=g)).argmax(1)
    two = (X[:, 0] > 0).long()                                         # easier still, but 2 of 4 clusters
    assert separability_index(X, [two, four], n_clusters=4)[0] == 1


def test_restarts_share_neighbours_and_keep_the_consensus_run():
    Z, P, _, _ = three_views(n=300, seed=11)
    visual_in = torch.nn.functional.normalize(torch.from_numpy(Z), dim=1)
    spatial_in = torch.from_numpy(P.mean(1))
    built = []

    def make(r):
        g = torch.Generator().manual_seed(100 + r)
        mods = [Modality("visual", visual_in, ClusterHead(16, 4, generator=g)),
                Modality("spatial", spatial_in, ClusterHead(12, 4, generator=g))]
        built.append(mods)
        return mods

    config = DistillConfig(epochs=2, batch_size=64, min_steps_per_epoch=10)
    runs = distill_with_restarts(make, [(0, 1, 1.0)], config, restarts=3, seed=0, device="cpu",
                                 selection="consensus")
    assert runs.selection == "consensus" and runs.separability == []
    assert len(built) == 3 and len(runs.seconds) == 3
    for mods in built[1:]:  # fixed features: neighbour lists computed once
        assert mods[0].neighbors is built[0][0].neighbors and mods[1].neighbors is built[0][1].neighbors
    labels = [head_labels(mods[0]).numpy() for mods in built]
    nmi = np.array([[normalized_mutual_info_score(x, y) for y in labels] for x in labels])
    scores = (nmi.sum(1) - 1) / 2
    assert runs.chosen == int(np.argmax(scores))
    assert runs.modalities is built[runs.chosen]
    np.testing.assert_array_equal(runs.labels.numpy(), labels[runs.chosen])
    np.testing.assert_allclose(runs.agreement, nmi, atol=1e-4)


def test_restarts_keep_the_most_separable_run_by_default():
    Z, P, _, _ = three_views(n=300, seed=11)
    visual_in = torch.nn.functional.normalize(torch.from_numpy(Z), dim=1)
    spatial_in = torch.from_numpy(P.mean(1))
    built = []

    def make(r):
        g = torch.Generator().manual_seed(100 + r)
        mods = [Modality("visual", visual_in, ClusterHead(16, 4, generator=g)),
                Modality("spatial", spatial_in, ClusterHead(12, 4, generator=g))]
        built.append(mods)
        return mods

    config = DistillConfig(epochs=2, batch_size=64, min_steps_per_epoch=10)
    runs = distill_with_restarts(make, [(0, 1, 1.0)], config, restarts=3, seed=0, device="cpu")
    assert runs.selection == "separability" and len(runs.separability) == 3
    labels = [head_labels(mods[0]) for mods in built]
    chosen, scores = separability_index(visual_in, labels, n_clusters=4, seed=0)
    assert runs.chosen == chosen and runs.separability == scores
    assert runs.modalities is built[chosen]


def test_bad_restart_selection():
    Z, P, _, _ = three_views(n=100, seed=13)
    for model in (SEAL(4, restart_selection="best", patch_neighbors=4, device="cpu"),
                  SATC(4, restart_selection="best", patch_neighbors=4, device="cpu")):
        with pytest.raises(SealFastError, match="restart_selection must be one of"):
            model.fit([Z], patches=P)


def test_seal_records_the_restarts():
    Z, P, _, _ = three_views(n=200, seed=12)
    model = SEAL(4, iterations=30, epochs=1, restarts=2, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    d = model.fit_details_["distill"][0]
    assert d["restarts"] == 2 and d["restart_kept"] in (0, 1) and len(d["restart_agreement_nmi"]) == 2
    assert d["restart_selection"] == "separability" and len(d["restart_separability_ce"]) == 2
    single = SEAL(4, iterations=30, epochs=1, restarts=1, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    assert single.fit_details_["distill"][0]["restart_kept"] == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_restarts(bad):
    Z, P, _, _ = three_views(n=100, seed=13)
    with pytest.raises(SealFastError, match="restarts must be an integer >= 1"):
        SEAL(4, restarts=bad, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    with pytest.raises(SealFastError, match="restarts must be an integer >= 1"):
        SATC(4, restarts=bad, patch_neighbors=4, device="cpu").fit([Z], patches=P)
