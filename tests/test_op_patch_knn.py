import pytest
import torch

from seal_fast import ops
from seal_fast.ops import patch_knn, patch_knn_reference
from seal_fast.ops.patch_knn import MAX_NEIGHBORS

from conftest import devices, needs_cuda, needs_ops, skip_without_kernels


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_patch_knn_matches_reference_with_ties(device):
    skip_without_kernels(device)
    g = torch.Generator().manual_seed(3)
    P = torch.randn(5, 10, 6, generator=g)
    P[:, 7] = P[:, 2]  # duplicate patches: exact ties
    got = patch_knn(P.to(device), 4, backend="compiled").cpu()
    ref = patch_knn_reference(P, 4)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert (got[:, :, 0] == torch.arange(10)).all()


@needs_ops
def test_opcheck():
    X = torch.randn(4, 12, 10, generator=torch.Generator().manual_seed(9))
    torch.library.opcheck(torch.ops.seal_fast.patch_knn.default, (X, 3), test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs():
    X = torch.randn(4, 12, 10)
    with pytest.raises(ValueError, match="k\\+1"):
        patch_knn(X, 12)


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_patch_knn_k0_is_the_self_loop(device, backend):
    skip_without_kernels(device)
    P = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)).to(device)
    edges = ops.patch_knn(P, 0, backend=backend)
    assert edges.shape == (3, 5, 1)
    assert (edges.cpu()[..., 0] == torch.arange(5)).all()


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_patch_knn_limit_is_the_same_everywhere(backend):
    P = torch.randn(2, 40, 4)
    assert ops.patch_knn(P, MAX_NEIGHBORS, backend=backend).shape == (2, 40, MAX_NEIGHBORS + 1)
    with pytest.raises(ValueError, match=f"expected an integer in \\[0, {MAX_NEIGHBORS}\\]"):
        ops.patch_knn(P, MAX_NEIGHBORS + 1, backend=backend)
    with pytest.raises(ValueError, match="integer"):
        ops.patch_knn(P, -1, backend=backend)


@needs_ops
def test_patch_knn_exact_ties_by_scale():
    P = torch.randn(4, 30, 16, generator=torch.Generator().manual_seed(4))
    P[:, 10:20], P[:, 20:] = P[:, :10] * 2.0, P[:, :10] * 4.0  # powers of two scale exactly: three-way ties
    assert torch.equal(ops.patch_knn(P, 12, backend="compiled"), ops.patch_knn_reference(P, 12))


@needs_ops
def test_cpu_patch_knn_orders_near_ties_as_the_reference():
    """The CPU kernel takes its cosines from the reference's own GEMM, so even scores
    within rounding of each other come out in the reference's order."""
    P = _near_ties()
    assert torch.equal(ops.patch_knn(P, 12, backend="compiled"), ops.patch_knn_reference(P, 12))


@needs_ops
@needs_cuda
def test_cuda_patch_knn_matches_the_cpu_up_to_near_ties():
    """The CUDA kernel sums each dot product in channel order, the CPU's GEMM in blocks:
    only neighbours whose cosines lie within rounding of each other may swap places, so
    the cosines each list names, in order, must agree."""
    skip_without_kernels("cuda")
    P = _near_ties()
    cuda = ops.patch_knn(P.cuda(), 12, backend="compiled").cpu()
    cpu = ops.patch_knn(P, 12, backend="compiled")
    Pn = torch.nn.functional.normalize(P.double(), dim=2)
    cos = Pn @ Pn.transpose(1, 2)
    assert torch.equal(cuda[..., 0], cpu[..., 0])
    torch.testing.assert_close(cos.gather(2, cuda), cos.gather(2, cpu), rtol=0, atol=1e-5)


def _near_ties():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(4, 30, 16, generator=g)
    P = base + 1e-6 * torch.randn(4, 30, 16, generator=g)  # many scores within rounding of each other
    P[:, 10:20] = base[:, :10] * 2.0                      # exact ties (a power of two scales exactly)
    return P
