"""Distillation restarts and the label-free consensus choice between them."""
import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from seal_fast.distill import (ClusterHead, DistillConfig, Modality, consensus_index, distill_with_restarts,
                               head_labels)
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
    runs = distill_with_restarts(make, [(0, 1, 1.0)], config, restarts=3, seed=0, device="cpu")
    assert len(built) == 3 and len(runs.seconds) == 3
    for mods in built[1:]:  # fixed features: neighbour lists computed once
        assert mods[0].neighbors is built[0][0].neighbors and mods[1].neighbors is built[0][1].neighbors
    labels = [head_labels(mods[0]).numpy() for mods in built]
    nmi = np.array([[normalized_mutual_info_score(x, y) for y in labels] for x in labels])
    scores = (nmi.sum(1) - 1) / 2
    assert runs.chosen == int(np.argmax(scores))
    assert runs.modalities is built[runs.chosen]
    assert len(runs.runs) == 3 and all(a is b for a, b in zip(runs.runs, built))
    np.testing.assert_array_equal(runs.labels.numpy(), labels[runs.chosen])
    np.testing.assert_allclose(runs.agreement, nmi, atol=1e-4)


def test_seal_records_the_restarts():
    Z, P, _, _ = three_views(n=200, seed=12)
    model = SEAL(4, iterations=30, epochs=1, restarts=2, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    d = model.fit_details_["distill"][0]
    assert d["restarts"] == 2 and d["restart_kept"] in (0, 1) and len(d["restart_agreement_nmi"]) == 2
    single = SEAL(4, iterations=30, epochs=1, restarts=1, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    assert single.fit_details_["distill"][0]["restart_kept"] == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_restarts(bad):
    Z, P, _, _ = three_views(n=100, seed=13)
    with pytest.raises(SealFastError, match="restarts must be an integer >= 1"):
        SEAL(4, restarts=bad, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    with pytest.raises(SealFastError, match="restarts must be an integer >= 1"):
        SATC(4, restarts=bad, patch_neighbors=4, device="cpu").fit([Z], patches=P)
