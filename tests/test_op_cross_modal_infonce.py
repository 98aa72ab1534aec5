import pytest
import torch

from seal_fast.ops.cross_modal_infonce import cross_modal_infonce, cross_modal_infonce_reference

from conftest import devices, needs_ops, skip_without_kernels


def sample(device, dtype, n=64, K=7, seed=0, probs=True):
    g = torch.Generator().manual_seed(seed)
    A, B = torch.randn(n, K, generator=g, dtype=torch.float64), torch.randn(n, K, generator=g, dtype=torch.float64)
    if probs:
        A, B = torch.softmax(2 * A, 1), torch.softmax(2 * B, 1)
    return A.to(device, dtype).requires_grad_(), B.to(device, dtype).requires_grad_()


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("level", ["instance", "cluster"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,K,T", [(64, 7, 0.5), (512, 10, 1.0), (3, 2, 0.1), (100, 30, 0.5), (64, 7, 0.01)])
def test_loss_and_gradients_match_reference(device, level, dtype, n, K, T):
    skip_without_kernels(device)
    A, B = sample(device, dtype, n, K, seed=n + K)
    loss = cross_modal_infonce(A, B, T, level, backend="compiled")
    gA, gB = torch.autograd.grad(2.5 * loss, (A, B))
    A2, B2 = A.detach().clone().requires_grad_(), B.detach().clone().requires_grad_()
    ref = cross_modal_infonce_reference(A2, B2, T, level)
    rA, rB = torch.autograd.grad(2.5 * ref, (A2, B2))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, ref, **tol)
    torch.testing.assert_close(gA, rA, **tol)
    torch.testing.assert_close(gB, rB, **tol)


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("level", ["instance", "cluster"])
def test_gradcheck(device, level):
    skip_without_kernels(device)
    A, B = sample(device, torch.float64, 6, 4, seed=11, probs=False)
    assert torch.autograd.gradcheck(lambda a, b: cross_modal_infonce(a, b, 0.7, level, backend="compiled"), (A, B))


@needs_ops
@pytest.mark.parametrize("level", [0, 1])
def test_opcheck(level):
    A, B = sample("cpu", torch.float32, 32, 5, seed=3)
    torch.library.opcheck(torch.ops.seal_fast.cross_modal_infonce.default, (A, B, 0.5, level, True),
                          test_utils=("test_schema", "test_faketensor"))


@needs_ops
def test_no_grad_path():
    A, B = sample("cpu", torch.float32, 16, 3, seed=4)
    with torch.no_grad():
        loss = cross_modal_infonce(A, B, 0.5, "instance", backend="compiled")
    torch.testing.assert_close(loss, cross_modal_infonce_reference(A, B, 0.5, "instance").detach())


def test_bad_arguments():
    A = torch.rand(4, 3)
    with pytest.raises(ValueError, match="level"):
        cross_modal_infonce(A, A, 0.5, "pixel")
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        cross_modal_infonce(A, torch.rand(5, 3), 0.5)
    with pytest.raises(ValueError, match="temperature"):
        cross_modal_infonce(A, A, 0.0)


@needs_ops
@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("n,K", [(64, 7), (5, 3)])
def test_device_generic_version_matches_cpu_kernel(level, n, K):
    """The ATen implementation that serves CUDA, checked against the CPU kernel."""
    from seal_fast import _extension

    A, B = sample("cpu", torch.float64, n, K, seed=level + n)
    A, B = A.detach(), B.detach()
    got = _extension._C.cross_modal_infonce_aten(A, B, 0.5, level, True)
    ref = torch.ops.seal_fast.cross_modal_infonce(A, B, 0.5, level, True)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("level", ["instance", "cluster"])
def test_double_backward_is_refused_not_silently_wrong(device, level):
    """The kernels hand back the gradient as constants: a second derivative through
    them would be zero where it is not, so create_graph=True is refused."""
    skip_without_kernels(device)
    A = torch.softmax(torch.randn(16, 5, device=device, dtype=torch.float64), 1).requires_grad_()
    B = torch.softmax(torch.randn(16, 5, device=device, dtype=torch.float64), 1).requires_grad_()
    loss = cross_modal_infonce(A, B, 0.5, level, backend="compiled")
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(loss, A, create_graph=True)
    (g,) = torch.autograd.grad(cross_modal_infonce(A, B, 0.5, level, backend="compiled"), A)  # one backward: fine
    (ref,) = torch.autograd.grad(cross_modal_infonce_reference(A, B, 0.5, level), A)
    torch.testing.assert_close(g, ref)


@needs_ops
@pytest.mark.parametrize("device", devices)
def test_the_kernels_refuse_mixed_dtypes(device):
    skip_without_kernels(device)
    A = torch.softmax(torch.randn(8, 3, device=device), 1)
    for level in (0, 1):
        with pytest.raises(RuntimeError, match="dtype mismatch"):
            torch.ops.seal_fast.cross_modal_infonce(A, A.double(), 0.5, level, False)
