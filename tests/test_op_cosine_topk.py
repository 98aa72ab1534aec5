import subprocess
import sys

import numpy as np
import pytest
import torch

from seal_fast import ops
from seal_fast.ops.cosine_topk import cosine_topk, cosine_topk_reference

from conftest import devices, needs_cuda, needs_ops, skip_without_kernels


def exact_scores(Q, R, idx):
    """float64 cosine of each query with the reference rows it was given."""
    Qn = torch.nn.functional.normalize(Q.double(), dim=1)
    Rn = torch.nn.functional.normalize(R.double(), dim=1)
    return (Qn[:, None, :] * Rn[idx]).sum(-1)


def assert_same_neighbours(Q, R, idx, ref_idx, tol):
    """idx is a correct top-k up to near-ties: its j-th neighbour scores within tol of
    the reference's j-th, and every index that differs from the reference's is such a tie."""
    got, want = exact_scores(Q, R, idx), exact_scores(Q, R, ref_idx)
    assert (got - want).abs().max().item() < tol
    differs = idx != ref_idx
    assert (got[differs] - want[differs]).abs().max().item() < tol if differs.any() else True
    assert all(len(set(row)) == len(row) for row in idx.tolist())  # no neighbour twice


def test_same_neighbours_check_can_fail():
    """The tolerance check above accepts a swap of exact ties and refuses a wrong neighbour."""
    R = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    Q = torch.tensor([[1.0, 0.1]])
    assert_same_neighbours(Q, R, torch.tensor([[1, 0]]), torch.tensor([[0, 1]]), tol=1e-6)
    with pytest.raises(AssertionError):
        assert_same_neighbours(Q, R, torch.tensor([[0, 3]]), torch.tensor([[0, 1]]), tol=1e-6)


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("nq,nr,d,k,exclude", [(300, 300, 16, 10, True), (257, 1000, 33, 50, False),
                                               (5, 5, 3, 4, True), (130, 70, 128, 70, False),
                                               (1, 400, 7, 1, False)])
def test_matches_reference_random(device, nq, nr, d, k, exclude):
    skip_without_kernels(device)
    g = torch.Generator().manual_seed(nq + nr + d)
    R = torch.randn(nr, d, generator=g)
    Q = R[:nq].clone() if exclude else torch.randn(nq, d, generator=g)
    v, i = cosine_topk(Q.to(device), R.to(device), k, exclude, backend="compiled")
    rv, ri = cosine_topk_reference(Q, R, k, exclude)
    assert i.dtype == torch.int64 and v.dtype == torch.float32 and v.shape == (nq, k)
    torch.testing.assert_close(v.cpu(), rv, rtol=1e-5, atol=1e-5)
    if device == "cpu":
        torch.testing.assert_close(i, ri, rtol=0, atol=0)
    else:  # cuBLAS reduces in another order: near-ties (< 1e-6 apart) may swap, nothing else
        assert_same_neighbours(Q, R, i.cpu(), ri, tol=1e-6)
    if exclude:
        assert not (i.cpu() == torch.arange(nq)[:, None]).any()


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("exclude", [True, False])
def test_ties_go_to_the_lower_index(device, exclude):
    skip_without_kernels(device)
    X = torch.randn(40, 6, generator=torch.Generator().manual_seed(0)).repeat(8, 1)  # every row 8 times
    v, i = cosine_topk(X.to(device), X.to(device), 20, exclude, backend="compiled")
    rv, ri = cosine_topk_reference(X, X, 20, exclude)
    torch.testing.assert_close(i.cpu(), ri, rtol=0, atol=0)
    # the 7 (or 8) exact copies come first, in increasing index order
    copies = i.cpu()[3, : 7 if exclude else 8]
    assert copies.tolist() == sorted(copies.tolist())


@needs_ops
@pytest.mark.parametrize("exclude", [True, False])
def test_self_search_uses_symmetry_without_changing_the_answer(exclude):
    """Q is R (the distillation's case): the CPU kernel multiplies only the tiles on
    and above the diagonal. N spans several 2048-row tiles and every row has an exact
    copy in another tile, so ties across tiles must still go to the lower index."""
    base = torch.randn(1300, 12, generator=torch.Generator().manual_seed(3))
    X = torch.cat([base, base, base[:100]])  # rows i, i + 1300 (and i + 2600) are equal
    v, i = cosine_topk(X, X, 7, exclude, backend="compiled")
    cv, ci = cosine_topk(X, X.clone(), 7, exclude, backend="compiled")  # a copy: the full product
    rv, ri = cosine_topk_reference(X, X, 7, exclude)
    torch.testing.assert_close(i, ri, rtol=0, atol=0)
    torch.testing.assert_close(ci, ri, rtol=0, atol=0)
    torch.testing.assert_close(v, rv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, cv, rtol=0, atol=1e-6)
    copies = i[5, :2].tolist()  # row 5's copies 1305 and 2605 (and 5 itself unless excluded)
    assert copies == ([1305, 2605] if exclude else [5, 1305])


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(device, dtype):
    skip_without_kernels(device)
    X = torch.randn(200, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    v, i = cosine_topk(X.to(device), X.to(device), 5, True, backend="compiled")
    rv, _ = cosine_topk_reference(X.float(), X.float(), 5, True)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v.cpu(), rv, rtol=0, atol=1e-5)  # scores are exact float32 of the rounded inputs


@needs_ops
def test_real_features_lite0(digits_store):
    Z = torch.from_numpy(np.array(digits_store.space("efficientnet-lite0")))
    v, i = cosine_topk(Z, Z, 50, True, backend="compiled")
    rv, ri = cosine_topk_reference(Z, Z, 50, True)
    torch.testing.assert_close(v, rv, rtol=1e-5, atol=1e-5)
    agree = (i == ri).float().mean().item()
    # identical except where two candidates score within rounding of each other
    close = ((v - rv).abs() < 1e-5).all().item()
    assert agree > 0.999 and close


LIMITED_RUN = """
import resource, torch
from seal_fast.ops.cosine_topk import cosine_topk
torch.set_num_threads(2)
X = torch.randn(30000, 8, generator=torch.Generator().manual_seed(2))
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 1_500_000_000, resource.RLIM_INFINITY))
v, i = cosine_topk(X, X, 5, True, backend="compiled")
assert tuple(i.shape) == (30000, 5) and bool((i != torch.arange(30000)[:, None]).all())
try:
    torch.empty(30000, 30000)  # the matrix the op avoided: must not fit
    print("LIMIT-NOT-ENFORCED")
except RuntimeError:
    print("OK")
"""


@needs_ops
def test_never_allocates_the_full_matrix():
    """N = 30,000: the float32 N x N matrix would need 3.6 GB; the op runs within a
    1.5 GB address-space budget, in a child process so the limit cannot hurt the suite."""
    proc = subprocess.run([sys.executable, "-c", LIMITED_RUN], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("OK")


def test_bad_arguments():
    X = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"k=10 must be in \[1, 9\]"):
        cosine_topk(X, X, 10, exclude_self=True)
    with pytest.raises(ValueError, match="same number|Nq, d"):
        cosine_topk(X, torch.randn(10, 4), 2)


@needs_ops
def test_opcheck():
    X = torch.randn(50, 8)
    torch.library.opcheck(torch.ops.seal_fast.cosine_topk.default, (X, X, 5, True),
                          test_utils=("test_schema", "test_faketensor"))


@needs_ops
def test_cosine_topk_has_no_k_limit():
    """The CUDA kernel once stopped at k = 1024 where the CPU had no limit; now neither has one."""
    X = torch.randn(1500, 8, generator=torch.Generator().manual_seed(1))
    v, i = ops.cosine_topk(X, X, 1400, exclude_self=True, backend="compiled")
    rv, ri = ops.cosine_topk_reference(X, X, 1400, exclude_self=True)
    torch.testing.assert_close(v, rv, rtol=1e-5, atol=1e-5)
    assert (i == ri).float().mean() > 0.999


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_cosine_topk_refuses_non_finite_rows(backend):
    X = torch.randn(20, 5)
    X[13, 2] = float("nan")
    with pytest.raises(ValueError, match="Q row 13 contains NaN or inf"):
        ops.cosine_topk(X, X, 3, exclude_self=True, backend=backend)
    R = torch.randn(30, 5)
    R[29, 0] = float("inf")
    with pytest.raises(ValueError, match="R row 29 contains NaN or inf"):
        ops.cosine_topk(torch.randn(4, 5), R, 3, backend=backend)


@needs_ops
def test_cosine_topk_kernel_never_returns_a_placeholder():
    """Called directly (no wrapper checks), a NaN row still gets valid indices."""
    X = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    X[7] = float("nan")
    _, i = torch.ops.seal_fast.cosine_topk(X, X, 5, True)
    assert int(i.min()) >= 0 and int(i.max()) < 50


@needs_ops
@needs_cuda
def test_cuda_cosine_topk_is_exact_fp32_even_with_tf32_allowed():
    skip_without_kernels("cuda")
    X = torch.randn(3000, 64, generator=torch.Generator().manual_seed(5))
    rv, ri = ops.cosine_topk_reference(X, X, 20, exclude_self=True)  # CPU float32
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        v, i = ops.cosine_topk(X.cuda(), X.cuda(), 20, exclude_self=True, backend="compiled")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    torch.testing.assert_close(v.cpu(), rv, rtol=0, atol=1e-5)
    assert (i.cpu() == ri).float().mean() > 0.999
