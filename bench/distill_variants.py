"""Distillation variants on the Fashion-MNIST train split, scored by the visual head alone.

One frozen GAT (seed 0), then one distillation per seed; prints per seed the visual
head's ACC on the train and test splits and its NMI to the earlier seeds' partitions.
Cheaper than bench/fashion_mnist.py (no labeling stage), for comparing settings:

    python bench/distill_variants.py --tag base --out base.npz
    python bench/distill_variants.py --tag nn300 --nn 300 --out nn300.npz
    python bench/distill_variants.py --tag warm --warm 300 --out warm.npz   # K-Means warm start
"""
import json, time, argparse
import numpy as np, torch, torch.nn.functional as F
from seal_fast.store import FeatureStore
from seal_fast.metrics import evaluate, normalized_mutual_info
from seal_fast.distill import ClusterHead, Modality, DistillConfig, mutual_distillation
from seal_fast.spatial import SpatialEncoder
from seal_fast.models.seal import spatial_embeddings
ap = argparse.ArgumentParser()
ap.add_argument('--store', default='feats/fmnist-train')
ap.add_argument('--test', default='feats/fmnist-test')
ap.add_argument('--seeds', default='0,1,2')
ap.add_argument('--warm', type=int, default=0, help='steps of CE to a K-Means partition before distilling')
ap.add_argument('--nn', type=int, default=50, help='cross-modal neighbours per sample')
ap.add_argument('--tag', default='')
ap.add_argument('--out', required=True, help='.npz of the train-split partitions')
a = ap.parse_args()
torch.set_num_threads(2)
s = FeatureStore(a.store); t = FeatureStore(a.test)
Z = torch.from_numpy(np.array(s.space('efficientnet-lite0'))); P = s.patches(); y = s.labels()
Zt = F.normalize(torch.from_numpy(np.array(t.space('efficientnet-lite0'))), dim=1); yt = t.labels()
Zn = F.normalize(Z, dim=1)
G = spatial_embeddings(SpatialEncoder(320, 320, k=8, generator=torch.Generator().manual_seed(0)), P, 'cpu')
if a.warm:
    from seal_fast.models.kmeans import KMeans
    t0 = time.time()
    km = torch.from_numpy(KMeans(10, n_init=3, seed=0).fit([Zn.numpy()]).labels_).long()
    print('kmeans', evaluate(y, km.numpy())['acc'], round(time.time() - t0), flush=True)
nbrs = None; parts = {}
for ds in [int(x) for x in a.seeds.split(',')]:
    t0 = time.time()
    hg = torch.Generator().manual_seed(ds)
    vis = Modality('v', Zn, ClusterHead(Z.shape[1], 10, generator=hg)); spa = Modality('s', G, ClusterHead(320, 10, generator=hg))
    if a.warm:
        g = torch.Generator().manual_seed(ds + 100)
        for m in (vis, spa):
            opt = torch.optim.Adam(m.head.parameters(), 1e-3, betas=(0.9, 0.99))
            for _ in range(a.warm):
                idx = torch.randint(0, len(y), (512,), generator=g)
                loss = F.nll_loss(torch.log(m.head(m.inputs[idx]).clamp_min(1e-9)), km[idx])
                opt.zero_grad(); loss.backward(); opt.step()
    if nbrs is not None: vis.neighbors, spa.neighbors = nbrs
    r = mutual_distillation([vis, spa], [(0, 1, 1.0)], DistillConfig(n_neighbors=a.nn), generator=torch.Generator().manual_seed(ds))
    nbrs = (vis.neighbors, spa.neighbors)
    with torch.no_grad():
        vis.head.eval(); p = vis.head(Zn).argmax(1).numpy(); pt = vis.head(Zt).argmax(1).numpy()
    parts[f's{ds}'] = p
    others = [normalized_mutual_info(parts[k], p) for k in parts if k != f's{ds}']
    print(json.dumps(dict(tag=a.tag, warm=a.warm, nn=a.nn, seed=ds, train=round(evaluate(y, p)['acc'], 2), test=round(evaluate(yt, pt)['acc'], 2),
                          nmi_to_previous=[round(x, 3) for x in others], loss=round(r.losses[-1], 4), s=round(time.time() - t0))), flush=True)
    np.savez(a.out, y=y, **parts)
