import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seal_fast import TURTLE, load_model
from seal_fast.labeling import LabelingConfig, TaskEncoder, init_inner, outer_loss
from seal_fast.metrics import cluster_accuracy

from conftest import blobs


@pytest.mark.parametrize("spaces", [1, 2])
def test_recovers_separable_mixture(spaces):
    Zs, y = blobs(n=600, k=4, spaces=spaces, seed=10 + spaces)
    model = TURTLE(4, iterations=800, seed=0, device="cpu").fit(Zs)
    assert cluster_accuracy(y, model.labels_) >= 0.95


def test_seeded_and_deterministic_on_cpu():
    Z, _ = blobs(n=300, k=3, sep=2.0, seed=2)
    a = TURTLE(3, iterations=40, labeling_batch_size=128, seed=5, device="cpu").fit(Z)
    b = TURTLE(3, iterations=40, labeling_batch_size=128, seed=5, device="cpu").fit(Z)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    for pa, pb in zip(a.encoder_.parameters(), b.encoder_.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_predict_save_load(tmp_path):
    Zs, _ = blobs(n=300, k=3, spaces=2, seed=3)
    model = TURTLE(3, iterations=50, seed=0, device="cpu").fit(Zs)
    model.save(tmp_path / "t.pt")
    again = load_model(tmp_path / "t.pt")
    np.testing.assert_array_equal(again.predict(Zs), model.predict(Zs))
    np.testing.assert_allclose(again.predict_proba(Zs).sum(1), 1.0, rtol=1e-5)


def _official_gradients(encoder: TaskEncoder, Zb, W0s, b0s, cfg):
    """One outer step written the way the official run_turtle.py writes it: nn.Linear
    with weight_norm, torch.optim.Adam for the inner loop, F.cross_entropy."""
    task = []
    for k in range(len(Zb)):
        lin = nn.Linear(Zb[k].shape[1], encoder.n_clusters).double()
        with torch.no_grad():
            lin.weight.copy_(encoder.v[k])
            lin.bias.copy_(encoder.b[k])
        lin = nn.utils.parametrizations.weight_norm(lin)
        with torch.no_grad():
            lin.parametrizations.weight.original0.copy_(encoder.g[k][:, None])
        task.append(lin)
    per_space = [F.softmax(t(z), dim=1) for t, z in zip(task, Zb)]
    labels = sum(per_space) / len(per_space)
    inner = []
    for W0, b0 in zip(W0s, b0s):
        lin = nn.Linear(W0.shape[1], W0.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(W0)
            lin.bias.copy_(b0)
        inner.append(lin)
    opt = torch.optim.Adam([p for w in inner for p in w.parameters()], lr=cfg.inner_lr, betas=cfg.betas)
    for _ in range(cfg.inner_steps):
        opt.zero_grad()
        sum(F.cross_entropy(w(z), labels.detach()) for w, z in zip(inner, Zb)).backward()
        opt.step()
    pred_error = sum(F.cross_entropy(w(z).detach(), labels) for w, z in zip(inner, Zb))
    entr = sum(torch.special.entr(p.mean(0)).sum() for p in per_space)
    loss = pred_error - cfg.gamma * entr
    grads = torch.autograd.grad(loss, [p for t in task for p in t.parameters()])
    return loss.detach(), grads


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_outer_step_matches_official_formulation(backend):
    Zs, _ = blobs(n=200, k=3, spaces=2, seed=7)
    Zb = [torch.from_numpy(Z).double() for Z in Zs]
    gen = torch.Generator().manual_seed(0)
    enc = TaskEncoder([Z.shape[1] for Z in Zb], 3, gen).double()
    W0s, b0s = init_inner(enc.dims, 3, gen, "cpu", torch.float64)
    cfg = LabelingConfig()
    loss, _, _ = outer_loss(enc, Zb, W0s, b0s, cfg, backend)
    ours = torch.autograd.grad(loss, list(enc.parameters()))
    ref_loss, ref = _official_gradients(enc, Zb, W0s, b0s, cfg)
    torch.testing.assert_close(loss.detach(), ref_loss)
    # parameter order: ours is v0, v1, g0, g1, b0, b1; official per space is (bias, g, v)
    by_name = dict(zip([f"{n}{k}" for n in ("v", "g", "b") for k in range(2)], ours))
    for k in range(2):
        bias, g, v = ref[3 * k:3 * k + 3]
        torch.testing.assert_close(by_name[f"b{k}"], bias)
        torch.testing.assert_close(by_name[f"g{k}"], g.flatten())
        torch.testing.assert_close(by_name[f"v{k}"], v)


def test_inner_init_is_nn_linear_default():
    gen = torch.Generator().manual_seed(0)
    W0s, b0s = init_inner([100], 5, gen, "cpu")
    bound = 1 / math.sqrt(100)
    assert W0s[0].abs().max() <= bound and b0s[0].abs().max() <= bound
    assert W0s[0].std() > bound / 3  # uniform on [-bound, bound] has std bound/sqrt(3)


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_extreme_magnitudes_are_refused_not_answered_with_one_cluster(scale):
    """TURTLE's logits are raw products: rows of 1e20 saturate every softmax. Refused, with how to fix it."""
    Z, _ = blobs(n=200, k=3, seed=7)
    with pytest.raises(ValueError, match="typical row norm is .* rescale the features"):
        TURTLE(3, iterations=5, device="cpu").fit([(Z.astype(np.float64) * scale).astype(np.float32)])
    model = TURTLE(3, iterations=5, device="cpu").fit([Z])
    with pytest.raises(ValueError, match="typical row norm"):
        model.predict([(Z.astype(np.float64) * scale).astype(np.float32)])
