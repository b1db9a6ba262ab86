"""The epoch-start step end to end: loader order cannot change the result (the original code's bug)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score
from torch.utils.data import DataLoader

from latentcc import LCCConfig, collect_latents, epoch_start, lcc_loss
from latentcc.data import from_arrays
from latentcc.plumbing.errors import LatentccError


def _mixture(n_per=60, c=4, d=10, sep=2.2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * sep
    y = np.repeat(np.arange(c), n_per)
    x = centres[y] + rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


def test_shuffled_loader_gives_identical_clusters_mask_and_targets():
    x, y = _mixture(sep=0.9)
    data = from_arrays(x, y, val_fraction=0.0, test_fraction=0.0).train
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    cfg = LCCConfig(layers=("1",), k=5, graph_dim=None)
    results = []
    for shuffle in (False, True):
        loader = DataLoader(data, batch_size=17, shuffle=shuffle, generator=torch.Generator().manual_seed(5))
        lat = collect_latents(model, loader, cfg.layers)
        results.append(epoch_start(lat["1"], lat.labels, cfg, name="1"))
    a, b = results
    np.testing.assert_array_equal(a.clusters, b.clusters)
    np.testing.assert_array_equal(a.cc, b.cc)
    assert torch.equal(a.targets.mc_mask, b.targets.mc_mask)
    assert torch.equal(a.targets.slot, b.targets.slot)
    # batch composition changes BLAS rounding of the latents in the last bits, nothing more
    torch.testing.assert_close(a.targets.vectors, b.targets.vectors, rtol=1e-5, atol=1e-6)
    assert 0.0 < 1 - a.cc.mean() < 0.6  # an untrained net misclusters some, not all, samples
    assert a.targets.mc_mask.numpy().tolist() == (~a.cc).tolist()


def test_mixture_is_recovered_and_loss_pulls_mc_samples_to_targets():
    x, y = _mixture(n_per=80, c=5, d=32, sep=0.5, seed=1)  # overlapping classes: some samples misclustered
    res = epoch_start(x, y, LCCConfig(k=10, graph_dim=8, seed=0))
    assert adjusted_mutual_info_score(y, res.clusters) > 0.5
    st = res.stats()
    assert st["clusters"] == res.owners.size and 0 < st["mc_fraction"] < 0.5
    assert set(res.seconds) == {"reduce", "knn", "communities", "matching", "targets"}
    # a few gradient steps on the MC latents reduce the LCC loss: the loss points the right way
    z = torch.tensor(x, requires_grad=True)
    idx = torch.arange(len(x))
    # the gradient of each row is a unit vector / (n_MC * sqrt(D)): a large lr makes visible steps
    opt = torch.optim.SGD([z], lr=100.0)
    losses = []
    for _ in range(15):
        loss = lcc_loss(z, idx, res.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0 and losses[-1] < 0.5 * losses[0]


def test_epoch_start_is_deterministic_and_warm_starts():
    x, y = _mixture(n_per=50, c=6, d=16, sep=1.5, seed=2)
    cfg = LCCConfig(k=8, graph_dim=None)
    a, b = epoch_start(x, y, cfg), epoch_start(x, y, cfg)
    np.testing.assert_array_equal(a.clusters, b.clusters)
    warm = epoch_start(x, y, cfg, initial=a.clusters)
    assert adjusted_mutual_info_score(a.clusters, warm.clusters) > 0.9


def test_epoch_start_errors_name_the_layer():
    x, y = _mixture(n_per=10, c=2, d=4)
    x[3, 1] = np.nan
    with pytest.raises(LatentccError, match="head"):
        epoch_start(x, y, LCCConfig(k=3, graph_dim=None), name="head")
    x, y = _mixture(n_per=10, c=2, d=4)
    with pytest.raises(LatentccError, match="same class"):
        epoch_start(x, np.zeros(len(x), dtype=int), LCCConfig(k=3))
    with pytest.raises(LatentccError, match="'k'"):
        epoch_start(x, y, LCCConfig(k=len(x)))


def test_cluster_latents_returns_named_fields_equal_to_epoch_start():
    from latentcc.lcc.epoch import LatentClusters, cluster_latents

    x, y = _mixture(n_per=40, c=4, d=12, sep=1.0, seed=3)
    cfg = LCCConfig(k=6, graph_dim=8)
    c = cluster_latents(x, y.astype(np.float64), cfg)  # whole-number float labels are labels
    full = epoch_start(x, y, cfg)
    assert isinstance(c, LatentClusters) and c.labels.dtype == np.int64
    np.testing.assert_array_equal(c.labels, y)
    np.testing.assert_array_equal(c.clusters, full.clusters)
    np.testing.assert_array_equal(c.owners, full.owners)
    np.testing.assert_array_equal(c.cc, full.cc)
    np.testing.assert_array_equal(c.cc, c.owners[c.clusters] == y)  # the plurality owners' CC mask
    assert set(c.seconds) == {"reduce", "knn", "communities", "matching"}


@pytest.mark.parametrize("graph_dim", [None, 8])
def test_epoch_start_validates_each_input_once(graph_dim, monkeypatch):
    """The door validates the latents and labels once; the stages (PCA, graph, communities, matching,
    targets) call the trusting twins: no second as_matrix/as_labels/graph check per refresh."""
    import latentcc.graph.community as community_module
    import latentcc.graph.knn as knn_module
    import latentcc.lcc.epoch as epoch_module
    import latentcc.lcc.matching as matching_module
    import latentcc.lcc.targets as targets_module
    from latentcc.plumbing import validate

    counts: dict[str, int] = {}

    def counting(name, fn):
        def wrapped(*a, **kw):
            counts[name] = counts.get(name, 0) + 1
            return fn(*a, **kw)

        return wrapped

    for module in (epoch_module, knn_module, community_module, matching_module, targets_module):
        for name in ("as_matrix", "as_labels", "as_label_pair", "as_owners", "as_adjacency"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counting(name, getattr(validate, name)))
    x, y = _mixture(n_per=40, c=4, d=12, sep=1.0, seed=3)
    epoch_start(x, y, LCCConfig(k=6, graph_dim=graph_dim), initial=np.arange(len(x)) % 5)
    assert counts == {"as_matrix": 1, "as_labels": 2}  # the latents; the labels and the warm start
