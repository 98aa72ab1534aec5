"""`seal-fast report`: what the page says (sizes, typical and doubtful members, the matched
confusion matrix), the names it gives, and its bad input. The page in a real browser:
test_report_browser.py."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs, cli, digest, one_line_error

from seal_fast.errors import SealFastError
from seal_fast.models.kmeans import KMeans
from seal_fast.report import make_report, write_report
from seal_fast.report.content import build_content, thumbnail_counts
from seal_fast.report.naming import (NAME_THRESHOLD, ImageNetNamer, imagenet_class_names, imagenet_head,
                                     imagenet_wnids, name_with_imagenet)
from seal_fast.report.wordnet import NounHierarchy, wnid_offset
from seal_fast.store import write_store


@pytest.fixture(scope="module")
def namer():
    return ImageNetNamer()


def _posterior(weights: dict) -> np.ndarray:
    """A mean posterior: `weights` on the named classes, the rest spread evenly."""
    names = imagenet_class_names()
    p = np.zeros(1000)
    for name, w in weights.items():
        p[names.index(name)] = w
    return p + (1 - p.sum()) / 1000


def test_wnids_are_in_the_classifiers_order():
    # each class name is a lemma of its synset (two ImageNet names were made unique by hand)
    hierarchy = NounHierarchy()
    agree = sum(name.lower() in {lemma.lower() for lemma in _lemmas(hierarchy, wnid)}
                for wnid, name in zip(imagenet_wnids(), imagenet_class_names()))
    assert agree >= 995


def _lemmas(hierarchy, wnid):
    hierarchy._file.seek(wnid_offset(wnid))
    fields = hierarchy._file.readline().decode().split()
    return [fields[4 + 2 * i].replace("_", " ") for i in range(int(fields[3], 16))]


def test_hypernyms_reach_the_root():
    h = NounHierarchy()
    tabby = wnid_offset("n02123045")
    lemmas = {h.lemma(a) for a in h.ancestors(tabby)}
    assert {"tabby", "domestic cat", "cat", "mammal", "entity"} <= lemmas
    assert wnid_offset("n02121808") in h.ancestors(tabby)  # tabby under domestic cat
    assert h.ancestors(wnid_offset("n02121808")) < h.ancestors(tabby)


def test_a_class_a_hypernym_or_no_name(namer):
    one = namer.names(_posterior({"tabby": 0.8}))[0]
    assert (one.name, round(one.confidence, 2)) == ("tabby", 0.8)
    # no class reaches the threshold, but together the shoes do: the most specific hypernym holding them
    shoes = namer.names(_posterior({n: 0.16 for n in ("sandal", "clog", "running shoe", "Loafer", "cowboy boot")}))[0]
    assert shoes.name in ("footwear", "shoe") and shoes.confidence >= NAME_THRESHOLD
    assert shoes.broader[0] in ("footwear", "shoe")
    spread = namer.names(_posterior({}))[0]
    assert spread.name is None and spread.confidence < 0.01
    assert len(spread.top) == 3


def test_a_hypernym_of_too_many_classes_is_no_name(namer):
    # "device" spans 130 classes: spread over them, the posterior names nothing
    names = imagenet_class_names()
    devices = [c for c in range(1000) if wnid_offset("n03183080") in namer.ancestors[c]]
    assert len(devices) > 100
    p = np.zeros(1000)
    p[devices] = 0.9 / len(devices)
    p += 0.1 / 1000
    got = namer.names(p[None])[0]
    assert got.name is None, (got, names[devices[0]])


def _photo_and_noise_store(tmp_path):
    """Eight views of the skimage cat photo (flips, crops, a half-size copy), eight noise images."""
    from PIL import Image
    from skimage import data

    from seal_fast.data.sources import ArraySource
    from seal_fast.embed import embed

    cat = data.chelsea()
    views = [cat, cat[:, ::-1], cat[30:-30, 40:-40], cat[30:-30, 40:-40, :][:, ::-1], cat[::2, ::2],
             cat[10:, :-20], cat[:-40, 30:], cat[20:-20, 20:-60]]
    views = [np.asarray(Image.fromarray(np.ascontiguousarray(v)).resize((300, 225))) for v in views]
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (225, 300, 3), dtype=np.uint8) for _ in range(8)]
    y = np.repeat([0, 1], 8)
    return embed(ArraySource(np.stack(views + noise), y), tmp_path / "photos", patch_backbone=None,
                 progress=False), y


def test_the_cat_photo_is_named_a_cat_and_noise_is_not_named(tmp_path):
    store, y = _photo_and_noise_store(tmp_path)
    names = name_with_imagenet(store.space("efficientnet-lite0"), y, 2, imagenet_head("efficientnet-lite0"))
    cat, noise = names[0], names[1]
    assert cat.name in ("domestic cat", "cat", "tabby", "tiger cat", "Egyptian cat"), cat
    assert cat.confidence >= 0.8, cat
    assert noise.name is None, noise


def test_content_orders_members_by_typicality(tmp_path):
    Z, y = blobs(n=400, k=4, seed=1)
    labels = KMeans(4, seed=0).fit([Z]).labels_
    content = build_content(labels, [Z], n_clusters=4, truth=y, class_names=["a", "b", "c", "d"])
    assert content.evaluation["acc"] == 100.0
    assert sorted(v.size for v in content.clusters) == sorted(np.bincount(labels).tolist())
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    for v in content.clusters:
        members = np.flatnonzero(labels == v.cluster)
        centre = Zn[members].mean(0)
        cos = Zn @ centre / np.linalg.norm(centre)
        assert set(v.typical) | set(v.doubtful) <= set(members.tolist())
        assert not set(v.typical) & set(v.doubtful)
        assert cos[v.typical[0]] == pytest.approx(cos[members].max(), abs=1e-6)  # the most typical row first
        assert cos[v.doubtful[0]] == pytest.approx(cos[members].min(), abs=1e-6)  # the least typical first
    # the matrix puts each class's matched cluster on the diagonal, recall from the same matching
    assert np.array_equal(np.diag(content.confusion), np.bincount(y))
    assert [r for _, r, _ in content.recall] == [1.0] * 4
    assert [v.majority[0] for v in content.clusters] == ["a", "b", "c", "d"]


def test_thumbnails_per_cluster_shrink_as_k_grows():
    assert thumbnail_counts(10) == (12, 6)
    typical, doubtful = thumbnail_counts(1000)
    assert typical >= 2 and doubtful >= 1 and 1000 * (typical + doubtful) <= 6000


def _store_with_labels(tmp_path, class_names=None):
    Z, y = blobs(n=300, k=3, seed=2)
    meta = {"class_names": class_names} if class_names else None
    store = write_store(tmp_path / "feats", spaces={"a": Z}, labels=y, meta=meta)
    labels = KMeans(3, seed=0).fit([Z]).labels_
    np.save(tmp_path / "labels.npy", labels)
    return store, labels


def test_page_escapes_what_comes_from_outside_and_fetches_nothing(tmp_path):
    _store_with_labels(tmp_path, class_names=["<script>alert(1)</script>", "b&b", "c\"'"])
    summary = write_report(tmp_path / "labels.npy", tmp_path / "feats", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(" not in page and "@import" not in page
    assert page.count('class="cluster"') == 3 and summary["k"] == 3
    assert summary["bytes"] == (tmp_path / "r.html").stat().st_size


def test_cli_report_with_a_model(tmp_path, patch_store):
    out = tmp_path / "run.npy"
    rc, _, err = cli("cluster", patch_store.path, "--method", "turtle", "--n-clusters", "3", "--iterations", "30",
                     "--out", out, "--save-model", tmp_path / "m.pt", "--quiet")
    assert rc == 0, err
    rc, text, err = cli("report", out, "--features", patch_store.path, "--model", tmp_path / "m.pt",
                        "--out", tmp_path / "r.html")
    assert rc == 0, err
    assert "wrote" in text and "3 clusters" in text
    page = (tmp_path / "r.html").read_text()
    assert "TURTLE labeler&#x27;s probability" in page or "TURTLE labeler's probability" in page
    assert "turtle" in page.lower() and "ACC" in page  # the run report's method, the store's labels


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, patch_store):
    store, labels = _store_with_labels(tmp_path)
    before = digest(tmp_path)
    np.save(tmp_path / "short.npy", labels[:-1])
    KMeans(3, seed=0).fit([np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)]).save(tmp_path / "o.pt")
    before = digest(tmp_path)
    cases = [
        (("report", tmp_path / "short.npy", "--features", store.path, "--out", tmp_path / "r.html"),
         "299 labels but the features have 300 rows"),
        (("report", tmp_path / "labels.npy", "--features", store.path, "--model", tmp_path / "o.pt",
          "--out", tmp_path / "r.html"), "widths [7]"),
        (("report", tmp_path / "labels.npy", "--features", store.path, "--out", tmp_path / "labels.npy"),
         "ending in .html"),
        (("report", tmp_path / "labels.npy", "--features", store.path, "--out", store.path / "r.html"),
         "would overwrite the input"),
        (("report", tmp_path / "labels.npy", "--features", store.path, "--truth", tmp_path / "short.npy",
          "--out", tmp_path / "r.html"), "299 labels"),
        (("report", tmp_path / "missing.npy", "--features", store.path, "--out", tmp_path / "r.html"), "missing.npy"),
    ]
    for argv, fragment in cases:
        rc, _, err = cli(*argv)
        one_line_error(rc, err, fragment)
    assert digest(tmp_path) == before


def test_result_labels_are_checked_like_any_labels(tmp_path):
    store, labels = _store_with_labels(tmp_path)
    with pytest.raises(SealFastError, match="found -1"):
        make_report(labels - 1, store)
    with pytest.raises(SealFastError, match="not whole numbers"):
        make_report(labels + 0.5, store)
    assert make_report(labels.astype(float), store)[1]["k"] == 3  # whole numbers, as everywhere


def test_gappy_and_huge_cluster_ids_show_the_clusters_used(tmp_path):
    store, labels = _store_with_labels(tmp_path)
    ids = np.where(labels == 0, 10 ** 9, labels * 7)
    page, summary = make_report(ids, store)
    assert sorted(summary["clusters"]) == sorted({10 ** 9, 7, 14}) and summary["k"] == 3
    assert 'id="c1000000000"' in page


def test_a_run_report_of_the_wrong_shape_is_read_for_what_fits(tmp_path):
    store, labels = _store_with_labels(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"method": ["x"], "n_clusters": "abc", "timings": [1, 2],
                                                     "seed": 3, "params": {"a": "<b>"}}))
    page, summary = make_report(tmp_path / "labels.npy", store)
    assert summary["k"] == 3 and "Clustering clusters" in page and "&lt;b&gt;" in page


def test_a_model_that_did_not_make_the_result_is_refused(tmp_path):
    from seal_fast.models.turtle import TURTLE

    store, labels = _store_with_labels(tmp_path)
    Z = np.asarray(store.space("a"))
    turtle = TURTLE(5, iterations=20, seed=1).fit([Z])
    with pytest.raises(SealFastError, match="gives these labels on only"):
        make_report(np.roll(labels, 7), store, model=turtle)
    with pytest.raises(SealFastError, match="the model has 3 clusters but the result has cluster id 5"):
        make_report(np.where(labels == 0, 5, labels), store, model=KMeans(3, seed=0).fit([Z]))
    km = KMeans(3, seed=0).fit([Z])
    assert make_report(km.labels_, store, model=km)[1]["k"] == 3


def test_bad_truth_is_refused(tmp_path):
    store, labels = _store_with_labels(tmp_path)
    with pytest.raises(SealFastError, match="the truth: expected integer labels"):
        make_report(labels, store, truth=np.full(300, 0.5))


def test_nan_features_name_their_row(tmp_path):
    Z, y = blobs(n=60, k=2)
    Z[17, 3] = np.nan
    with pytest.raises(SealFastError, match=r"features \(space 0\): row 17 contains NaN"):
        build_content(y, [Z])


def test_matched_cells_are_the_matching_when_there_are_fewer_clusters_than_classes():
    Z, y = blobs(n=300, k=3, seed=4)
    labels = np.where(y == 2, 1, y)  # classes 1 and 2 in one cluster
    content = build_content(labels, [Z], truth=y)
    for r, c in content.confusion_matched:
        assert content.confusion[r, c] == content.confusion[r].max() or content.confusion[r, c] > 0
    assert len(content.confusion_matched) == 2
    assert sum(content.confusion[r, c] for r, c in content.confusion_matched) == round(
        content.evaluation["acc"] * 300 / 100)


def test_a_damaged_manifest_source_leaves_the_page_without_thumbnails(tmp_path):
    Z, y = blobs(n=40, k=2)
    np.save(tmp_path / "l.npy", y)
    for source in ({"kind": "folder"}, "folder", {"kind": "folder", "path": 5}, {"kind": "builtin"},
                   {"kind": "npz", "path": "/etc/passwd"}):
        store = write_store(tmp_path / "f", spaces={"a": Z}, labels=y, meta={"source": source})
        summary = write_report(tmp_path / "l.npy", store.path, tmp_path / "r.html", progress=False)
        assert len(summary["notes"]) == 1 and "data:image" not in (tmp_path / "r.html").read_text()


def test_a_space_named_like_a_backbone_is_not_named_by_its_head(tmp_path):
    Z, y = blobs(n=60, k=2)
    store = write_store(tmp_path / "f", spaces={"efficientnet-lite0": Z}, labels=y,
                        meta={"source": {"kind": "import"}})
    _, summary = make_report(y, store)
    assert summary["naming"].startswith("none") and all(c["name"] is None for c in summary["clusters"].values())


def _folder_store(tmp_path):
    """Twelve small images in three class folders, embedded (Lite0, no patches)."""
    from PIL import Image

    from seal_fast.embed import embed

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c, colour in enumerate([(220, 30, 30), (30, 200, 30), (30, 30, 220)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"img{i}.png")
    store = embed(root, tmp_path / "feats", patch_backbone=None, progress=False)
    labels = store.labels().copy()
    np.save(tmp_path / "labels.npy", labels)
    return root, store


def test_images_gone_since_embedding_are_named_and_the_page_still_written(tmp_path):
    root, store = _folder_store(tmp_path)
    assert json.loads((store.path / "source_files.txt").read_text().splitlines()[5]) == "class1/img1.png"
    summary = write_report(tmp_path / "labels.npy", store.path, tmp_path / "full.html", progress=False)
    assert summary["notes"] == []
    assert (tmp_path / "full.html").read_text().count("data:image/") == 12
    (root / "class1" / "img2.png").unlink()
    summary = write_report(tmp_path / "labels.npy", store.path, tmp_path / "one.html", progress=False)
    assert any("class1/img2.png" in n for n in summary["notes"]), summary["notes"]
    assert any("changed since they were embedded" in n for n in summary["notes"]), summary["notes"]
    assert (tmp_path / "one.html").read_text().count("data:image/") == 11
    root.rename(tmp_path / "moved")
    summary = write_report(tmp_path / "labels.npy", store.path, tmp_path / "none.html", progress=False)
    assert "12 image(s) could not be read" in " ".join(summary["notes"])
    page = (tmp_path / "none.html").read_text()
    assert "data:image/" not in page and page.count('class="cluster"') == 3


def test_a_changed_builtin_source_gives_no_thumbnails(tmp_path):
    Z, y = blobs(n=40, k=2)
    store = write_store(tmp_path / "f", spaces={"a": Z}, labels=y,
                        meta={"source": {"kind": "npz", "path": str(tmp_path / "gone.npz")}})
    np.save(tmp_path / "l.npy", y)
    summary = write_report(tmp_path / "l.npy", store.path, tmp_path / "r.html", progress=False)
    assert any("could not be opened" in n for n in summary["notes"]), summary["notes"]
    np.savez(tmp_path / "gone.npz", images=np.zeros((40, 8, 8), np.uint8))
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["source_fingerprint"] = "0" * 64  # the images are not the ones embedded
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    summary = write_report(tmp_path / "l.npy", store.path, tmp_path / "r2.html", progress=False)
    assert any("changed since they were embedded" in n for n in summary["notes"]), summary["notes"]


def test_arrays_report_without_names_or_thumbnails(tmp_path):
    Z, y = blobs(n=200, k=3)
    np.save(tmp_path / "z.npy", Z)
    np.save(tmp_path / "l.npy", y)
    summary = write_report(tmp_path / "l.npy", [tmp_path / "z.npy"], tmp_path / "r.html", progress=False)
    assert summary["evaluation"] is None and summary["naming"].startswith("none")
    assert all(c["name"] is None for c in summary["clusters"].values())
    assert Path(tmp_path / "r.html").read_text().count('class="cluster"') == 3


def test_a_clip_space_is_named_zero_shot_from_its_cached_nouns(tmp_path):
    """A store holding a CLIP space and the noun embeddings `embed --with-text` caches:
    each cluster is named by the nouns' text embeddings (here: random unit vectors, the
    images of cluster 0 close to noun 3's, those of cluster 1 spread evenly)."""
    from seal_fast.store import add_array

    rng = np.random.default_rng(0)
    nouns = [f"noun{i}" for i in range(50)]
    T = rng.normal(size=(50, 32)).astype(np.float32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    near = T[3] + 0.02 * rng.normal(size=(40, 32))
    spread = rng.normal(size=(40, 32))
    Z = np.concatenate([near, spread]).astype(np.float32)
    labels = np.repeat([0, 1], 40)
    write_store(tmp_path / "f", spaces={"clip-rn50": Z}, meta={  # as `embed --with-text` records them
        "text": {"nouns": nouns}, "backbones": {"clip-rn50": {}}, "source": {"kind": "folder", "path": "gone"}})
    add_array(tmp_path / "f", "nouns_clip-rn50", T, "nouns", backbone="clip-rn50")
    np.save(tmp_path / "l.npy", labels)
    summary = write_report(tmp_path / "l.npy", tmp_path / "f", tmp_path / "r.html", progress=False)
    assert summary["naming"].startswith("zero-shot")
    assert summary["clusters"][0]["name"]["name"] == "noun3"
    assert summary["clusters"][0]["name"]["confidence"] > 0.9
    assert summary["clusters"][1]["name"]["name"] is None
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    manifest["text"]["nouns"] = nouns[:3]  # a noun list that is not the cache's: no names, no crash
    (tmp_path / "f" / "manifest.json").write_text(json.dumps(manifest))
    summary = write_report(tmp_path / "l.npy", tmp_path / "f", tmp_path / "r2.html", progress=False)
    assert summary["naming"].startswith("none")


def test_a_file_list_reaching_outside_the_folder_is_refused(tmp_path):
    root, store = _folder_store(tmp_path)
    lines = (store.path / "source_files.txt").read_text().splitlines()
    lines[0] = json.dumps("../../etc/passwd")
    (store.path / "source_files.txt").write_text("\n".join(lines) + "\n")
    summary = write_report(tmp_path / "labels.npy", store.path, tmp_path / "r.html", progress=False)
    assert any("one relative file name per row" in n for n in summary["notes"]), summary["notes"]
    assert "data:image" not in (tmp_path / "r.html").read_text()


def test_a_clip_space_without_cached_nouns_is_named_by_its_text_tower(tmp_path):
    """The real CLIP RN50 architecture with random weights saved to a local file (no hub):
    the report embeds the given nouns with its text tower and names the clusters from them."""
    open_clip = pytest.importorskip("open_clip")
    import torch

    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None, force_quick_gelu=True).eval()
    torch.save(clip.state_dict(), tmp_path / "rn50.pt")
    nouns = ["cat", "dog", "car", "tree", "boat"]
    (tmp_path / "nouns.txt").write_text("\n".join(nouns))
    with torch.no_grad():
        text = clip.encode_text(open_clip.get_tokenizer("RN50")([f"a photo of the small {n}." for n in nouns]))
    rng = np.random.default_rng(0)
    Z = np.concatenate([text[1].numpy() + 0.01 * rng.normal(size=(30, text.shape[1])),
                        rng.normal(size=(30, text.shape[1]))]).astype(np.float32)
    y = np.repeat([0, 1], 30)
    write_store(tmp_path / "f", spaces={"clip-rn50": Z}, labels=y,
                meta={"backbones": {"clip-rn50": {}}, "source": {"kind": "folder", "path": "gone"}})
    np.save(tmp_path / "l.npy", y)
    rc, text_out, err = cli("report", tmp_path / "l.npy", "--features", tmp_path / "f", "--weights",
                            tmp_path / "rn50.pt", "--nouns", tmp_path / "nouns.txt", "--out", tmp_path / "r.html")
    assert rc == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "text tower over 5 nouns" in page
    first = re.search(r'id="c0".*?</summary>', page, flags=re.S).group(0)
    assert re.search(r'class="name">dog<|best guesses: dog ', first), first  # its name, or its first guess
