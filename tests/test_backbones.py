import pytest
import torch

from seal_fast.backbones import get_backbone, known_backbones
from seal_fast.backbones.efficientnet import EfficientNetLite
from seal_fast.errors import SealFastError


def test_unknown_backbone_lists_known():
    with pytest.raises(SealFastError, match="efficientnet-lite0"):
        get_backbone("resnet-9000")
    assert "clip-vit-b-32" in known_backbones() and "dinov2-vit-s-14" in known_backbones()
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= set(known_backbones())


@pytest.mark.parametrize("name,grid,patch_dim", [("efficientnet-lite0", (7, 7), 320),
                                                ("efficientnet-lite1", (8, 8), 320),
                                                ("efficientnet-lite2", (9, 9), 352)])
def test_lite_real_weights_recognise_the_cat(name, grid, patch_dim):
    skimage = pytest.importorskip("skimage")
    model = get_backbone(name).eval()
    x = model.preprocessing([skimage.data.chelsea()])
    assert x.shape[-1] == {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}[name]
    with torch.inference_mode():
        out = model(x, pooled=True, patches=True)
        logits = model.net._fc(out["pooled"])
        full = model.net(x)
    assert model.grid == grid and out["pooled"].shape == (1, 1280)
    assert out["patches"].shape == (1, grid[0] * grid[1], patch_dim)
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)  # our forward = the package's
    assert int(logits.argmax()) in (281, 282, 285)  # ImageNet tabby / tiger cat / Egyptian cat
    assert int(logits.argmax()) == 285 or name != "efficientnet-lite0"  # Lite0: "Egyptian cat"


def test_lite_head_patch_layer():
    model = EfficientNetLite("efficientnet-lite0", patch_layer="head").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        out = model(x, pooled=True, patches=True)
    assert out["patches"].shape == (2, 49, 1280) and model.patch_dim == 1280
    torch.testing.assert_close(out["patches"].mean(1), out["pooled"])
    with pytest.raises(SealFastError, match="patch_layer"):
        EfficientNetLite("efficientnet-lite0", patch_layer="stem")


def test_lite_two_layer_patches():
    """block+stride16: the last block's map beside the last stride-16 block's, pooled onto
    the 7 x 7 grid, each over its mean patch norm in the image (computed here by hand)."""
    model = EfficientNetLite("efficientnet-lite0", patch_layer="block+stride16").eval()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model(x, pooled=False, patches=True)["patches"]
        alone = model(x[1:2], pooled=False, patches=True)["patches"]
        net, maps = model.net, []
        h = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            h = block(h, drop_connect_rate=0.0)
            maps.append(h)
    fine = [m for m in maps if m.shape[-1] == 14][-1]  # 224 / 16: the last stride-16 map
    assert fine.shape[1] == 112 and model.patch_dim == 320 + 112 and "stride 16" in model.patch_layer
    fine = torch.nn.functional.avg_pool2d(fine, 2)
    expected = torch.cat([m / m.norm(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True) for m in (maps[-1], fine)], 1)
    assert out.shape == (3, 49, 432)
    torch.testing.assert_close(out, expected.flatten(2).transpose(1, 2))
    torch.testing.assert_close(alone, out[1:2], rtol=1e-4, atol=1e-5)  # each image on its own, not the batch's
    for part in (out[..., :320], out[..., 320:]):
        torch.testing.assert_close(part.norm(dim=2).mean(1), torch.ones(3))


def _roundtrip(tmp_path, name, make):
    model = make()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), get_backbone(name, weights=str(path)).eval()


@pytest.mark.parametrize("name,arch,grid,patch_dim", [("clip-rn50", "RN50", (7, 7), 2048),
                                                      ("clip-vit-b-32", "ViT-B-32", (7, 7), 768)])
def test_clip_loads_local_weights(tmp_path, name, arch, grid, patch_dim):
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    ref, bb = _roundtrip(tmp_path, name, lambda: open_clip.create_model(arch, pretrained=None,
                                                                      force_quick_gelu=True))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        out = bb(x, pooled=True, patches=True)
        torch.testing.assert_close(out["pooled"], ref.encode_image(x), rtol=1e-4, atol=1e-4)
    assert bb.grid == grid and out["patches"].shape == (2, grid[0] * grid[1], patch_dim)
    assert bb.preprocessing.size == 224 and bb.preprocessing.mean[0] == pytest.approx(0.4815, abs=1e-4)


def test_dinov2_loads_local_weights(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref, bb = _roundtrip(tmp_path, "dinov2-vit-s-14", lambda: timm.create_model(
        "vit_small_patch14_dinov2.lvd142m", pretrained=False, img_size=224, num_classes=0))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        out = bb(x, pooled=True, patches=True)
        torch.testing.assert_close(out["pooled"], ref(x), rtol=1e-4, atol=1e-4)
    assert out["patches"].shape == (2, 256, 384) and bb.grid == (16, 16)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    pytest.importorskip("open_clip")
    with pytest.raises(SealFastError, match="could not load clip-rn50"):
        get_backbone("clip-rn50", weights=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("name", ["clip-vit-b-32", "dinov2-vit-s-14"])
def test_hub_weights_offline_fail_fast_in_one_line(tmp_path, name):
    """No cached copy and a hub that cannot be reached (here a closed port on this
    machine stands in for no network): one line within seconds, not a minute of retries."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "seal_fast", "embed", "digits", "--out", str(tmp_path / "f"),
                           "--backbone", name, "--patch-backbone", "none", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "not in the local Hugging Face cache" in lines[0] and f"--weights {name}=PATH" in lines[0]
    assert time.monotonic() - t0 < 60 and not (tmp_path / "f").exists()
