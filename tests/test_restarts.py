"""Distillation restarts and the label-free consensus choice between them."""
import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from seal_fast.distillation import (ClusterHead, DistillConfig, Modality, agreement_rows, choose_restart,
                                    consensus_index, distill_with_restarts, head_labels, neighbor_agreement,
                                    neighbor_index)
from seal_fast.errors import SealFastError
from seal_fast.models.satc import SATC
from seal_fast.models.seal import SEAL

from conftest import three_views


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
    g = torch.Generator().manual_seed(100)
    first = [Modality("visual", visual_in, ClusterHead(16, 4, generator=g)),
             Modality("spatial", spatial_in, ClusterHead(12, 4, generator=g))]
    config = DistillConfig(epochs=2, batch_size=64, min_steps_per_epoch=10)
    runs = distill_with_restarts(first, [(0, 1, 1.0)], config, n_clusters=4, restarts=3, seed=0, device="cpu")
    assert len(runs.runs) == 3 and len(runs.seconds) == 3 and runs.runs[0] is first
    for mods in runs.runs[1:]:  # fixed features: neighbour lists computed once, fresh heads
        assert mods[0].neighbor_index is first[0].neighbor_index and mods[1].neighbor_index is first[1].neighbor_index
        assert mods[0].features is first[0].features and mods[0].head is not first[0].head
    labels = [head_labels(mods[0]).numpy() for mods in runs.runs]
    nmi = np.array([[normalized_mutual_info_score(x, y) for y in labels] for x in labels])
    scores = (nmi.sum(1) - 1) / 2
    assert runs.chosen == int(np.argmax(scores))
    assert runs.modalities is runs.runs[runs.chosen]
    np.testing.assert_array_equal(runs.labels.numpy(), labels[runs.chosen])
    np.testing.assert_array_equal(torch.stack(runs.partitions).numpy(), np.stack(labels))
    np.testing.assert_allclose(runs.agreement, nmi, atol=1e-4)


def test_agreement_rows_are_evenly_spaced_and_cover_small_sets_whole():
    assert agreement_rows(10_000, 10) is None and agreement_rows(300, 4, limit=100) is None  # 100 per cluster
    rows = agreement_rows(60_000, 10)
    assert rows.shape == (10_000,) and rows[0] == 0 and rows[-1] < 60_000
    assert bool((rows.diff() == 6).all())
    assert agreement_rows(1_000_000, 1000).shape == (100_000,)  # 100 per cluster when K is large


def test_the_consensus_compares_sampled_rows_and_labels_every_row():
    Z, P, _, _ = three_views(n=600, seed=14)
    g = torch.Generator().manual_seed(101)
    first = [Modality("visual", torch.nn.functional.normalize(torch.from_numpy(Z), dim=1),
                      ClusterHead(16, 4, generator=g)),
             Modality("spatial", torch.from_numpy(P.mean(1)), ClusterHead(12, 4, generator=g))]
    config = DistillConfig(epochs=1, batch_size=64, min_steps_per_epoch=10)
    runs = distill_with_restarts(first, [(0, 1, 1.0)], config, n_clusters=4, restarts=3, seed=0, device="cpu",
                                 agreement_limit=50)
    rows = agreement_rows(600, 4, 50)
    assert rows is not None and rows.shape == (400,) and torch.equal(runs.rows, rows)
    full = [head_labels(mods[0]).numpy() for mods in runs.runs]
    np.testing.assert_array_equal(torch.stack(runs.partitions).numpy(), np.stack(full)[:, rows.numpy()])
    nmi = np.array([[normalized_mutual_info_score(x[rows], y[rows]) for y in full] for x in full])
    assert runs.chosen == int(np.argmax((nmi.sum(1) - 1) / 2))
    np.testing.assert_array_equal(runs.labels.numpy(), full[runs.chosen])  # the kept one on every row
    # the neighbour choice needs every row's label (it looks up the neighbours')
    by_neighbors = distill_with_restarts(first, [(0, 1, 1.0)], config, n_clusters=4, restarts=2, seed=0,
                                         device="cpu", choice="neighbors", agreement_limit=50)
    assert by_neighbors.rows is None and by_neighbors.partitions[0].shape == (600,)


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


def test_neighbor_agreement_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    neighbors = torch.tensor([[1, 2], [0, 3], [3, 0], [2, 1]])  # same-cluster pairs: 0-1, 1-0, 2-3, 3-2
    assert neighbor_agreement(labels, neighbors) == pytest.approx(4 / 8)


def test_neighbors_choice_keeps_the_partition_that_cuts_the_graph_least():
    # two groups of 6 rows, each row's neighbours all in its own group
    group = torch.arange(12) // 6
    neighbors = torch.stack([torch.tensor([j for j in range(12) if group[j] == group[i] and j != i][:4])
                             for i in range(12)])
    follows = group.clone()                                   # keeps every neighbour pair: score 1
    crosses = torch.arange(12) % 2                            # splits each group in two
    other = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1])
    chosen, scores = choose_restart([crosses, follows, other], neighbors, "neighbors")
    assert chosen == 1 and scores[1] == pytest.approx(1.0) and max(scores[0], scores[2]) < 1.0
    assert choose_restart([follows, follows.clone()], neighbors, "neighbors")[0] == 0  # ties: the first
    # the consensus rule looks only at the partitions, not at the graph
    assert choose_restart([crosses, follows, other], neighbors, "consensus")[0] == \
        consensus_index([crosses, follows, other])[0]
    with pytest.raises(ValueError, match="restart choice"):
        choose_restart([follows], neighbors, "best")


def test_satc_keeps_the_restart_its_rule_scores_highest():
    Z, P, _, _ = three_views(n=300, seed=14)
    model = SATC(4, max_epochs=2, restarts=3, restart_choice="neighbors", patch_neighbors=4, device="cpu").fit(
        [Z], patches=P)
    d = model.fit_details_
    assert d["restart_choice"] == "neighbors" and len(d["restart_scores"]) == 3
    assert d["restart_kept"] == int(np.argmax(d["restart_scores"]))
    visual = torch.nn.functional.normalize(torch.from_numpy(Z), dim=1)
    expected = neighbor_agreement(torch.from_numpy(model.labels_), neighbor_index(visual, 50, "reference"))
    assert d["restart_scores"][d["restart_kept"]] == pytest.approx(expected, abs=1e-4)
    consensus = SATC(4, max_epochs=2, restarts=3, patch_neighbors=4, device="cpu").fit([Z], patches=P)
    c = consensus.fit_details_
    assert c["restart_choice"] == "consensus" and c["restart_kept"] == int(np.argmax(c["restart_scores"]))
    with pytest.raises(SealFastError, match="restart_choice must be one of"):
        SATC(4, restart_choice="best", patch_neighbors=4, device="cpu").fit([Z], patches=P)
