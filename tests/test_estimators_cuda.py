"""The estimators on device="cuda", on small synthetic data: each recovers the
labels, runs on the GPU (its fitted state lives there) and agrees with its CPU
fit. Every case skips without a CUDA device; `bench/gpu_session.sh models` runs them."""
import numpy as np
from sklearn.metrics import adjusted_rand_score

from seal_fast import SATC, SEAL, TURTLE, KMeans, load_model
from seal_fast.metrics import cluster_accuracy

from conftest import blobs, needs_cuda, three_views

pytestmark = needs_cuda


def _on_cuda(model):
    return model.resolved_device().type == "cuda"


def test_kmeans_cuda_agrees_with_cpu():
    Z, y = blobs(n=800, k=5, seed=1)
    gpu = KMeans(5, seed=0, device="cuda").fit([Z])
    cpu = KMeans(5, seed=0, device="cpu").fit([Z])
    assert _on_cuda(gpu) and cluster_accuracy(y, gpu.labels_) >= 0.95
    assert adjusted_rand_score(cpu.labels_, gpu.labels_) >= 0.99


def test_turtle_cuda_two_spaces():
    Zs, y = blobs(n=800, k=4, seed=2, spaces=2)
    model = TURTLE(4, iterations=300, seed=0, device="cuda").fit(Zs)
    assert _on_cuda(model) and cluster_accuracy(y, model.labels_) >= 0.9
    np.testing.assert_array_equal(model.predict(Zs), model.labels_)


def test_seal_cuda_fit_save_load_predict(tmp_path):
    Z, P, _, y = three_views(n=400, seed=5)
    model = SEAL(4, iterations=800, epochs=8, distill_batch_size=128, restarts=1, patch_neighbors=4, seed=0,
                 device="cuda").fit([Z], patches=P)
    assert _on_cuda(model) and cluster_accuracy(y, model.labels_) >= 0.9
    model.save(tmp_path / "seal.pt")
    again = load_model(tmp_path / "seal.pt", device="cpu")
    assert adjusted_rand_score(model.labels_, again.predict([Z])) >= 0.99  # GPU model, CPU prediction


def test_satc_cuda_with_text():
    Z, P, T, y = three_views(n=400, seed=6)
    model = SATC(4, max_epochs=20, patience=5, distill_batch_size=128, min_steps_per_epoch=10, text_threshold=0.0, restarts=1,
                 patch_neighbors=4, seed=0, device="cuda").fit([Z], patches=P, text=T)
    assert _on_cuda(model) and model.text_used_ and cluster_accuracy(y, model.labels_) >= 0.9


def test_fused_and_reference_labeling_agree_on_cuda():
    """One labeling run through the CUDA kernels and through the pure-PyTorch path."""
    Zs, _ = blobs(n=600, k=4, seed=3, spaces=2)
    fused = TURTLE(4, iterations=50, seed=1, device="cuda", backend="compiled").fit(Zs)
    ref = TURTLE(4, iterations=50, seed=1, device="cuda", backend="reference").fit(Zs)
    assert adjusted_rand_score(fused.labels_, ref.labels_) >= 0.95


def test_choosing_k_on_cuda_agrees_with_cpu():
    # the neighbour search runs on the GPU, the eigenvalues on the CPU: the same choice
    Z, y = blobs(n=800, k=5, seed=4)
    gpu = KMeans("auto", seed=0, device="cuda").fit([Z])
    cpu = KMeans("auto", seed=0, device="cpu").fit([Z])
    assert _on_cuda(gpu) and gpu.n_clusters_ == cpu.n_clusters_ == 5
    assert max(abs(gpu.k_scores_[k] - cpu.k_scores_[k]) for k in cpu.k_scores_) < 1e-3
