import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from seal_fast.data.sources import ArraySource
from seal_fast.embed import PARTIAL, embed
from seal_fast.errors import Interrupted, SealFastError
from seal_fast.pipeline import import_arrays
from seal_fast.store import held_for_writing


def _images(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 12, 12, 3), dtype=np.uint8), np.arange(n) % 2


def test_embed_writes_complete_store(tmp_path):
    imgs, y = _images()
    store = embed(ArraySource(imgs, y), tmp_path / "f", batch_size=4, chunk_size=4, progress=False)
    assert store.spaces == ["efficientnet-lite0"] and store.n == 10
    assert store.space("efficientnet-lite0").shape == (10, 1280)
    # the patches come from the second network by default: Lite2's last block on its 9x9 grid
    assert store.patches().shape == (10, 81, 352) and store.patches().dtype == np.float16
    assert store.entry("patches")["grid"] == [9, 9] and store.entry("patches")["backbone"] == "efficientnet-lite2"
    np.testing.assert_array_equal(store.labels(), y)
    assert not (tmp_path / "f" / PARTIAL).exists()
    m = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert m["preprocessing"]["efficientnet-lite0"]["size"] == 224 and m["n_skipped"] == 0
    assert m["preprocessing"]["efficientnet-lite2"]["size"] == 260


class _Flaky(ArraySource):
    """Raises KeyboardInterrupt when asked for image `stop_at` (a crash mid-run)."""

    stop_at = None

    def read(self, index):
        if index == self.stop_at:
            raise KeyboardInterrupt
        return super().read(index)


def test_interrupted_embed_resumes_and_matches(tmp_path):
    imgs, y = _images(12, seed=1)
    src = _Flaky(imgs, y)
    src.stop_at = 9
    with pytest.raises(Interrupted, match="resume"):
        embed(src, tmp_path / "f", batch_size=4, chunk_size=4, progress=False)
    assert not (tmp_path / "f" / "manifest.json").exists()
    assert len(list((tmp_path / "f" / PARTIAL).glob("chunk_*.npz"))) == 2
    src.stop_at = None
    resumed = embed(src, tmp_path / "f", batch_size=4, chunk_size=4, progress=False)
    fresh = embed(ArraySource(imgs, y), tmp_path / "g", batch_size=4, chunk_size=4, progress=False)
    np.testing.assert_allclose(resumed.space("efficientnet-lite0"), fresh.space("efficientnet-lite0"),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(resumed.labels(), fresh.labels())


def test_unreadable_images_are_skipped_and_reported(tmp_path):
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    (root / "1_bad.png").write_bytes(b"garbage")  # sorts between 1.png and 2.png
    store = embed(tmp_path / "imgs", tmp_path / "f", progress=False)
    assert store.n == 3 and store.manifest["n_skipped"] == 1
    assert store.manifest["skipped"][0]["name"] == "a/1_bad.png"
    # files are read in sorted order (0, 1, 1_bad, 2): rows map back to source items 0, 1, 3
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "source_index.npy"), [0, 1, 3])


def test_all_unreadable(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(SealFastError, match="none of the 1 images"):
        embed(tmp_path / "imgs", tmp_path / "f", progress=False)


def test_bad_arguments(tmp_path):
    imgs, _ = _images(2)
    with pytest.raises(SealFastError, match="unknown backbone 'nope'"):
        embed(ArraySource(imgs), tmp_path / "f", backbones=["nope"], progress=False)
    with pytest.raises(SealFastError, match="not one of the backbones"):
        embed(ArraySource(imgs), tmp_path / "f", weights={"clip-rn50": "x.pt"}, progress=False)


def test_no_patches(tmp_path):
    imgs, _ = _images(3)
    store = embed(ArraySource(imgs), tmp_path / "f", patch_backbone=None, progress=False)
    assert not store.has("patches") and store.labels() is None


def test_compiled_backbones_give_the_same_store(tmp_path):
    # torch.compile (the --compile flag) is a speed option: the features must not change
    # beyond float rounding, through the recompile for the short last batch too
    imgs, y = _images(6, seed=3)
    kw = dict(patch_backbone="efficientnet-lite0", batch_size=4, chunk_size=8, progress=False)
    eager = embed(ArraySource(imgs, y), tmp_path / "eager", **kw)
    compiled = embed(ArraySource(imgs, y), tmp_path / "compiled", compile=True, **kw)
    np.testing.assert_allclose(compiled.space("efficientnet-lite0"), eager.space("efficientnet-lite0"),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(compiled.patches().astype(np.float32), eager.patches().astype(np.float32),
                               rtol=1e-2, atol=1e-2)
    assert compiled.manifest["compiled"] is True and eager.manifest["compiled"] is False


class _StopAt(ArraySource):
    stop_at = None

    def read(self, index):
        if index == self.stop_at:
            raise KeyboardInterrupt
        return super().read(index)


def test_resume_refuses_a_changed_source(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    src = _StopAt(first)
    src.stop_at = 9
    with pytest.raises(Interrupted, match="resume"):
        embed(src, tmp_path / "f", batch_size=4, chunk_size=4, patch_backbone=None, progress=False)
    changed = first.copy()
    changed[:4] = 255 - changed[:4]  # same count, other images
    resumed = embed(ArraySource(changed), tmp_path / "f", batch_size=4, chunk_size=4, patch_backbone=None,
                    progress=False)
    fresh = embed(ArraySource(changed), tmp_path / "g", batch_size=4, chunk_size=4, patch_backbone=None,
                  progress=False)
    np.testing.assert_allclose(resumed.space("efficientnet-lite0"), fresh.space("efficientnet-lite0"), atol=1e-5)


def test_small_embeds_keep_their_progress(tmp_path):
    """Chunks close on time as well as on count: an interrupted embed of a few hundred
    images keeps what it finished."""
    rng = np.random.default_rng(1)
    src = _StopAt(rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8))
    src.stop_at = 30
    with pytest.raises(Interrupted):
        embed(src, tmp_path / "f", batch_size=8, chunk_seconds=1e-9, patch_backbone=None, progress=False)
    assert len(list((tmp_path / "f" / PARTIAL).glob("chunk_*.npz"))) == 3  # 0-8, 8-16, 16-24


def test_embed_images_text_keyword_is_now_with_text(tmp_path):
    from seal_fast import pipeline

    with pytest.raises(SealFastError, match="text= is now with_text="):
        pipeline.embed_images("digits", tmp_path / "f", text=True)
    assert not (tmp_path / "f").exists()


class _Waits(ArraySource):
    """A job still running: reading image 5 waits until the test lets it go on."""

    def __init__(self, images, labels):
        super().__init__(images, labels)
        self.reading, self.go_on = threading.Event(), threading.Event()

    def read(self, index):
        if index == 5:
            self.reading.set()
            self.go_on.wait(120)
        return super().read(index)


def test_a_second_job_on_the_same_folder_is_refused_at_once(tmp_path):
    imgs, y = _images(8)
    running = _Waits(imgs, y)
    done = {}

    def first_job():
        done["store"] = embed(running, tmp_path / "f", batch_size=4, chunk_size=4, patch_backbone=None,
                              progress=False)

    thread = threading.Thread(target=first_job)
    thread.start()
    try:
        assert running.reading.wait(120)  # the first job has written its first chunk and is mid-way
        with pytest.raises(SealFastError, match="another job is writing a feature store there"):
            embed(ArraySource(imgs, y), tmp_path / "f", patch_backbone=None, progress=False)
    finally:
        running.go_on.set()
        thread.join(120)
    # the first job was not disturbed, and once it is done the folder is free again
    assert done["store"].n == 8 and not (tmp_path / "f" / PARTIAL).exists()
    again = embed(ArraySource(imgs, y), tmp_path / "f", patch_backbone=None, progress=False)
    np.testing.assert_allclose(again.space("efficientnet-lite0"), done["store"].space("efficientnet-lite0"),
                               atol=1e-5)


def test_a_killed_job_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from seal_fast.files import held_folder; "
                               "held = held_folder(sys.argv[1], 'busy'); held.__enter__(); print('held', flush=True); "
                               "time.sleep(120)", str(tmp_path / "f")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SealFastError, match="another job is writing"):
            embed(ArraySource(*_images(2)), tmp_path / "f", patch_backbone=None, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert embed(ArraySource(*_images(2)), tmp_path / "f", patch_backbone=None, progress=False).n == 2


def test_a_job_that_fails_early_leaves_no_folder(tmp_path):
    with pytest.raises(SealFastError):
        embed(tmp_path / "no-such-images", tmp_path / "a" / "b" / "f", progress=False)
    assert list(tmp_path.iterdir()) == []  # nor the parents it made


def test_an_import_into_a_folder_being_written_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    with held_for_writing(tmp_path / "f"):
        with pytest.raises(SealFastError, match="another job is writing a feature store there"):
            import_arrays([tmp_path / "x.npy"], tmp_path / "f")
        assert (tmp_path / "f").is_dir()  # the other job's folder is left alone
    assert import_arrays([tmp_path / "x.npy"], tmp_path / "f").n == 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_lock_ends_with_the_job_though_a_forked_child_lives_on(tmp_path):
    (tmp_path / "f").mkdir()  # kept after the job: the second hold asks for the same folder
    with held_for_writing(tmp_path / "f"):
        child = os.fork()
        if child == 0:  # a worker forked mid-job (it shares the lock's open file)
            time.sleep(30)
            os._exit(0)
    try:
        with held_for_writing(tmp_path / "f"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
