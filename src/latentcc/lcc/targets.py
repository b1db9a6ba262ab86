"""Targets for misclustered samples, computed once per correction epoch (docs/algorithms.md, LCC items 6 and 8).

For an MC sample z of class a and each cluster j owned by a, t_j = mean of the k nearest CC samples
of cluster j (squared L2, k capped at the number of CC samples in j); the sample's target is the t_j
nearest to z. The work is one exact k-NN search per owned cluster (all MC samples of the owning class
as queries at once), never a loop over samples.

The loss variants (``LCCConfig.loss``, docs/algorithms.md LCC item 11) change what is stored: ``scale_free``
stores the targets in the latents' normalised frame, ``orthogonal`` adds each target's tangent basis (PCA
of the neighbours it averages), ``all_samples`` gives every sample the centroid of its k nearest other CC
samples of its class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from latentcc.config import LCC_LOSSES, LCCConfig
from latentcc.graph.knn import BACKENDS, choose_backend
from latentcc.lcc.matching import cc_mask_trusted, match_clusters_trusted, orphan_classes_trusted
from latentcc.plumbing.arrays import Matrix
from latentcc.plumbing.errors import CheckpointError, LatentccError, param_error
from latentcc.plumbing.validate import (
    Labels,
    as_label_pair,
    as_matrix,
    as_owners,
    check_choice,
    check_int,
    check_table_size,
)

ORPHAN_POLICIES = ("skip", "class_centroid")

# Elements per temporary block (64 MiB of float32) in the neighbour gather and the tangent bases.
_BLOCK_ELEMS = 2**24


@dataclass
class LCCTargets:
    """Precomputed LCC targets of one layer, addressed by dataset sample index.

    Attributes:
        mc_mask: (N,) bool, True for misclustered samples (with or without a target).
        slot: (N,) int64, row of ``vectors`` holding the sample's target, -1 when it has none.
        vectors: (M, D) one target per MC sample that has one, in sample-index order, in the units of
            the latents: float64 for float64 (and wide-integer) latents, so targets of latents far from
            the origin or at extreme scales stay exact; float32 otherwise.
        owners: (C,) int64 owner class per cluster (-1: none).
        orphans: int64 ids of the classes present in ``y_true`` that own no cluster.
        num_clusters: C.
        scale: the power of two (:func:`latentcc.plumbing.scaling.pow2_scale` of the latents' spread) that the
            loss multiplies ``z - t`` (``scale_free``: z minus the batch mean) by before squaring, so
            distances of latents around 1e-300 or 1e200 neither vanish nor overflow; 1.0 (no extra work
            per step) for ordinary latents.
        loss: the ``LCCConfig.loss`` variant these targets were computed for. With ``"scale_free"``,
            ``vectors`` are in the normalised frame of the latents (centred on their mean, divided by
            their RMS distance to it), not in the latents' units; with ``"all_samples"`` every sample
            may have a target, CC ones included.
        basis: ``"orthogonal"`` only: (M, r, D), for each target r orthonormal rows spanning its tangent
            space (r = ``tangent_dim``; a row is 0 where the neighbours span fewer directions), in the
            dtype of ``vectors``; None for the other variants. Rows, not columns: the loss reads each
            direction of a batch as one contiguous (B, D) slice.
    """

    mc_mask: torch.Tensor
    slot: torch.Tensor
    vectors: torch.Tensor
    owners: np.ndarray
    orphans: np.ndarray
    num_clusters: int
    scale: float = 1.0
    loss: str = "paper"
    basis: torch.Tensor | None = None
    # vectors cast once to the dtype of the loss's latents (see for_dtype); not copied by .to()
    _cast: dict[torch.dtype, tuple[torch.Tensor, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _basis_cast: dict[torch.dtype, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def to(self, device: torch.device | str) -> LCCTargets:
        """A copy with the tensors on ``device`` (owners/orphans stay numpy)."""
        return dataclasses.replace(
            self, mc_mask=self.mc_mask.to(device), slot=self.slot.to(device), vectors=self.vectors.to(device),
            basis=None if self.basis is None else self.basis.to(device),
        )  # fmt: skip

    def basis_for_dtype(self, dtype: torch.dtype) -> torch.Tensor:
        """``basis`` in the dtype ``z - t`` is computed in for latents of ``dtype`` (float64 for float64,
        float32 otherwise), cast once per targets object and cached (values in [-1, 1]: nothing to lose
        but float32 precision)."""
        if self.basis is None:
            raise LatentccError(
                f"These LCC targets were computed for loss={self.loss!r} and hold no tangent basis; "
                "loss='orthogonal' needs targets computed with it (lcc_targets(..., loss='orthogonal'))."
            )
        want = torch.float64 if dtype == torch.float64 else torch.float32
        if self.basis.dtype == want:
            return self.basis
        got = self._basis_cast.get(want)
        if got is None:
            got = self._basis_cast[want] = self.basis.to(want)
        return got

    def for_dtype(self, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
        """(vectors, scale) for latents ``z`` of ``dtype``: float64 vectors for float64 z, float32 ones
        otherwise (z - t is then computed in float32 at least, as with float32 targets).

        The cast of float64 targets happens once per targets object (the first step after a refresh, one
        device sync to check it) and is cached, never per step. Targets that float32 cannot hold (beyond
        its range, or non-zero values that would become 0) raise instead of giving an inf or 0 loss.
        """
        want = torch.float64 if dtype == torch.float64 else torch.float32
        # z - t is computed in float32 for every z but float64: there a scale beyond float32's exponent
        # range would itself round to inf or 0, so it is clamped (still exact: a power of two)
        scale = self.scale if want == torch.float64 else min(max(self.scale, 2.0**-120), 2.0**120)
        if self.vectors.dtype == want or (want == torch.float64 and self.vectors.dtype == torch.float32):
            return self.vectors, scale  # float32 -> float64 promotion is exact
        got = self._cast.get(want)
        if got is None:
            cast = self.vectors.to(want)
            lost = ~torch.isfinite(cast) | ((cast == 0) & (self.vectors != 0))
            if bool(lost.any()):
                raise param_error(
                    "z",
                    "lcc_loss",
                    f"latents of a dtype that can hold the targets (float64 targets, {dtype} latents)",
                    f"{int(lost.any(dim=1).sum())} of {cast.shape[0]} targets beyond float32's range "
                    "(inf, or non-zero values that become 0)",
                    "Fix: train the layer in float64 (as its latents were collected), or rescale the "
                    "layer's output (e.g. a normalisation layer) so its latents fit float32.",
                )
            got = self._cast[want] = (cast, scale)
        return got

    @property
    def num_mc(self) -> int:
        """Number of misclustered samples (a device sync if the mask lives on an accelerator)."""
        return int(self.mc_mask.sum())

    @property
    def num_with_target(self) -> int:
        """Number of MC samples with a target (M)."""
        return int(self.vectors.shape[0])

    @property
    def mc_fraction(self) -> float:
        """Fraction of the N samples that are misclustered."""
        return self.num_mc / max(1, int(self.mc_mask.shape[0]))

    def state_dict(self) -> dict[str, torch.Tensor | int | float | str]:
        """Tensors, plain numbers and the variant's name, so it fits a safetensors + JSON checkpoint
        (``vectors`` keep their dtype, float32 or float64: a resumed run uses bitwise the same targets).
        ``loss`` and ``basis`` are written only when they differ from the paper's (no name, no basis), so
        a ``"paper"`` state is the one written before the variants existed."""
        extra: dict[str, torch.Tensor | str] = {} if self.loss == "paper" else {"loss": self.loss}
        if self.basis is not None:
            extra["basis"] = self.basis.contiguous()
        return {
            "mc_mask": self.mc_mask.contiguous(),
            "slot": self.slot.contiguous(),
            "vectors": self.vectors.contiguous(),
            "owners": torch.from_numpy(np.ascontiguousarray(self.owners, dtype=np.int64)),
            "orphans": torch.from_numpy(np.ascontiguousarray(self.orphans, dtype=np.int64)),
            "num_clusters": int(self.num_clusters),
            "scale": float(self.scale),
            **extra,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LCCTargets:
        """Inverse of :meth:`state_dict`; ``num_clusters`` and ``scale`` may be numbers or 0-d tensors
        (``scale`` is 1.0 when absent, as in states written before it existed)."""
        missing = sorted({"mc_mask", "slot", "vectors", "owners", "orphans", "num_clusters"} - set(state))
        if missing:
            raise CheckpointError(f"LCC targets state is missing {missing}; was it written by state_dict()?")
        mc, slot, vec = state["mc_mask"], state["slot"], state["vectors"]
        n = mc.shape[0]
        if mc.ndim != 1 or slot.shape != (n,) or vec.ndim != 2 or mc.dtype != torch.bool:
            raise CheckpointError(
                f"LCC targets state has inconsistent shapes: mc_mask {tuple(mc.shape)} {mc.dtype}, "
                f"slot {tuple(slot.shape)}, vectors {tuple(vec.shape)}."
            )
        loss, basis = state.get("loss", "paper"), state.get("basis")
        if loss not in LCC_LOSSES or (basis is None) != (loss != "orthogonal"):
            raise CheckpointError(
                f"LCC targets state has loss {loss!r} with {'no' if basis is None else 'a'} tangent basis; "
                f"expected one of {list(LCC_LOSSES)}, with a basis exactly for 'orthogonal'."
            )
        if basis is not None and (basis.ndim != 3 or (basis.shape[0], basis.shape[2]) != vec.shape):
            raise CheckpointError(
                f"LCC targets state has a tangent basis of shape {tuple(basis.shape)} for vectors of shape "
                f"{tuple(vec.shape)}; expected (M, r, D) = ({vec.shape[0]}, r, {vec.shape[1]})."
            )
        fvec = vec if vec.dtype == torch.float64 else vec.float()
        return cls(
            mc_mask=mc,
            slot=slot.long(),
            vectors=fvec,
            owners=np.asarray(torch.as_tensor(state["owners"]).cpu().numpy(), dtype=np.int64),
            orphans=np.asarray(torch.as_tensor(state["orphans"]).cpu().numpy(), dtype=np.int64),
            num_clusters=int(state["num_clusters"]),
            scale=float(state.get("scale", 1.0)),
            loss=str(loss),
            basis=None if basis is None else basis.to(fvec.dtype),
        )


def lcc_targets(
    latents: np.ndarray | torch.Tensor,
    y_true: Labels,
    y_clst: Labels,
    *,
    k_target: int,
    owners: Labels | None = None,
    orphan_policy: str = LCCConfig.orphan_policy,
    knn_backend: str = LCCConfig.knn_backend,
    name: str | None = None,
    loss: str = LCCConfig.loss,
    tangent_dim: int = LCCConfig.tangent_dim,
) -> LCCTargets:
    """Targets of the misclustered samples of one layer (docs/algorithms.md, LCC items 6 and 8), or of every sample.

    Args:
        latents: (N, D) epoch-start latents, numpy, torch (any device but meta) or a nested list, any
            real dtype (:mod:`latentcc.plumbing.validate`); searched as float32 on the CPU after a float64
            translation, so their position in space does not change which samples are neighbours.
        y_true: (N,) class ids; y_clst: (N,) cluster ids; all three in the SAME sample order.
        k_target: neighbours per centroid (``LCCConfig.k_target``), capped per cluster at its number of
            CC samples.
        owners: (C,) owner class per cluster; default :func:`match_clusters` on the labels. A cluster
            that a caller-given ``owners`` assigns to a class with no member in it has no CC sample and
            simply contributes no candidate target.
        orphan_policy: samples of a class owning no cluster get no target (``"skip"``, the original)
            or the mean of the k nearest other samples of their class (``"class_centroid"``; none if
            the class has a single sample).
        knn_backend: the k-NN backend (:mod:`latentcc.graph.knn`) of the searches among the CC samples;
            ``"auto"`` picks an exact one (torch for small searches, faiss for large ones when installed);
            an approximate one (``"hnsw"``, ``"ivf"``) makes the targets approximate too.
        name: label for error messages, e.g. the layer name.
        loss: the ``LCCConfig.loss`` variant the targets are for (docs/algorithms.md, LCC item 11):
            ``"paper"`` and ``"orthogonal"`` (which adds each target's tangent basis) target the MC
            samples as above; ``"scale_free"`` the same targets in the latents' normalised frame;
            ``"all_samples"`` every sample: the mean of its k nearest other CC samples of its class
            (samples of a class owning no cluster follow ``orphan_policy``).
        tangent_dim: ``loss="orthogonal"``: directions of each target's tangent basis (< k_target and < D).

    Returns:
        :class:`LCCTargets` with CPU tensors (move them with ``.to(device)``). Ties between equally
        near candidate centroids go to the lowest cluster id.
    """
    func = "lcc_targets" if name is None else f"lcc_targets (layer {name!r})"
    m = as_matrix(latents, "latents", func, min_rows=2)
    yt, yc = as_label_pair(y_true, y_clst, func)
    if yt.shape[0] != len(m):
        raise param_error(
            "y_true",
            func,
            f"one label per latent row ({len(m)}), in the same sample order",
            f"length {yt.size}",
        )
    k_target = check_int(k_target, "k_target", func, 1)
    orphan_policy = check_choice(orphan_policy, "orphan_policy", func, ORPHAN_POLICIES)
    knn_backend = check_choice(knn_backend, "knn_backend", func, BACKENDS)
    loss = check_choice(loss, "loss", func, LCC_LOSSES)
    tangent_dim = check_tangent_dim(tangent_dim, loss, k_target, m.shape[1], func)
    num_clusters = int(yc.max()) + 1
    if owners is None:
        check_table_size(int(yt.max()) + 1, num_clusters, func)
        own = match_clusters_trusted(yt, yc)
    else:
        own = as_owners(owners, func, num_clusters=num_clusters).copy()  # stored in the result
    return lcc_targets_trusted(
        m, yt, yc, own, cc_mask_trusted(yt, yc, own), k_target=k_target, orphan_policy=orphan_policy,
        knn_backend=knn_backend, loss=loss, tangent_dim=tangent_dim,
    )  # fmt: skip


def check_tangent_dim(tangent_dim: Any, loss: str, k_target: int, d: int, func: str) -> int:
    """``tangent_dim`` validated for the variant ``loss``, ``k_target`` neighbours and latents of width d."""
    tangent_dim = check_int(tangent_dim, "tangent_dim", func, 1)
    if loss != "orthogonal" and tangent_dim != LCCConfig.tangent_dim:
        raise param_error(
            "tangent_dim", func, f"left at its default ({LCCConfig.tangent_dim}) when loss={loss!r}", tangent_dim,
            "Only loss='orthogonal' estimates a tangent space.",
        )  # fmt: skip
    if loss == "orthogonal" and tangent_dim >= min(k_target, d):
        raise param_error(
            "tangent_dim", func,
            f"smaller than k_target ({k_target}) and the latent width D ({d}): the tangent space of a "
            f"target averaged from {k_target} neighbours has at most {min(k_target - 1, d)} directions",
            tangent_dim,
            "Fix: a smaller tangent_dim, or a larger k_target.",
        )  # fmt: skip
    return tangent_dim


def lcc_targets_trusted(
    m: Matrix,
    yt: np.ndarray,
    yc: np.ndarray,
    owners: np.ndarray,
    cc: np.ndarray,
    *,
    k_target: int,
    orphan_policy: str,
    knn_backend: str,
    loss: str,
    tangent_dim: int,
) -> LCCTargets:
    """:func:`lcc_targets` of validated inputs (the epoch start passes what it validated and computed:
    the latents, int64 labels, owners and the CC mask ``owners[yc] == yt``), in the units of the latents
    (``scale_free``: in their normalised frame).

    The search runs on the latents translated to centre each column's range on 0 (and rescaled by a
    power of two when extreme), computed in float64 before the float32 cast: neighbour ranks do not
    depend on where the latents sit in space. The centroids and the choice between candidate centroids
    use the same frame in the latents' working dtype (float64 for float64 latents, so their targets keep
    float64's precision). The translation and scale are undone at the end (:func:`_to_latent_units`).
    """
    x = m.centred()
    wide = m.work_dtype is np.float64
    xv = m.centred(np.float64) if wide else x  # same shift and scale, no float32 rounding
    assert isinstance(x, np.ndarray) and isinstance(xv, np.ndarray)  # validated without keep_device: numpy
    search = _Search(knn_backend)
    out = _lcc_targets(x, xv, yt, yc, owners, ~cc, k_target, orphan_policy, search, loss, tangent_dim)
    out.scale = m.scale
    if loss == "scale_free":
        # The normalised frame (centred on the latents' mean, divided by their RMS distance to it) does not
        # depend on the shift and power-of-two scale of the working frame xv, so no undoing: float64, then
        # the working dtype (values of order 1, nothing to lose).
        mu, radius = _mean_and_radius(xv)
        vec = (out.vectors.numpy().astype(np.float64) - mu) / (radius if radius > 0 else 1.0)
        out.vectors = torch.from_numpy(np.ascontiguousarray(vec, dtype=xv.dtype))
    elif out.vectors.shape[0]:
        out.vectors = torch.from_numpy(_to_latent_units(m, out.vectors.numpy(), wide))
    return out


def _to_latent_units(m: Matrix, vectors: np.ndarray, wide: bool) -> np.ndarray:
    """Targets in the working frame -> the units of the latents (float64, then their working dtype)."""
    with np.errstate(over="ignore", under="ignore"):
        vec = vectors.astype(np.float64) / m.scale + m.shift
        kept = vec.astype(np.float64 if wide else np.float32)
    lost = ~np.isfinite(kept) | ((kept == 0) & (vec != 0))
    if lost.any():  # an inf or 0 target would silently give an inf or 0 loss
        lo, hi = m.bounds()
        raise param_error(
            m.param,
            m.func,
            f"latents whose targets fit {kept.dtype} (finite, non-zero values not rounded to 0)",
            f"{int(lost.any(axis=1).sum())} of {len(kept)} targets beyond {kept.dtype}'s range "
            f"(column ranges {lo.min():.3g} to {hi.max():.3g})",
            "Fix: rescale the layer's output (e.g. a normalisation layer), or collect the latents in float64.",
        )
    return np.ascontiguousarray(kept)


# ---------------------------------------------------------------- private: trust their inputs


def _lcc_targets(
    x: np.ndarray,
    xv: np.ndarray,
    yt: np.ndarray,
    yc: np.ndarray,
    owners: np.ndarray,
    mc: np.ndarray,
    k: int,
    orphan_policy: str,
    search: _Search,
    loss: str,
    tangent_dim: int,
) -> LCCTargets:
    """``x``: the float32 rows the k-NN searches run on; ``xv``: the same rows in the dtype the centroids
    are averaged and compared in (``x`` itself for float32 latents, their float64 copy otherwise).

    Every target is the mean of ``xv`` over a set of neighbours, kept as (ids, (., k) neighbour ids padded
    with -1) so that ``orthogonal`` can estimate its tangent basis from the same rows."""
    n, d = x.shape
    num_classes = max(int(yt.max()), int(owners.max(initial=-1))) + 1
    orphans = orphan_classes_trusted(owners, num_classes)
    present = np.bincount(yt, minlength=num_classes) > 0
    orphans = orphans[present[orphans]]
    is_orphan = np.zeros(num_classes, dtype=bool)
    is_orphan[orphans] = True

    cc_idx = np.flatnonzero(~mc)
    cc_of_cluster = _groups(yc[cc_idx], owners.size, cc_idx)  # CC sample ids per cluster
    mc_idx = np.flatnonzero(mc)
    mc_of_class = _groups(yt[mc_idx], num_classes, mc_idx)  # MC sample ids per class
    valid = np.flatnonzero(owners >= 0)
    clusters_of_class = _groups(owners[valid], num_classes, valid)  # owned cluster ids per class

    got: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (ids, targets, neighbour ids) per group
    for a in range(num_classes):  # loop over classes and their clusters, never over samples
        q_ids = mc_of_class[a]
        if is_orphan[a]:
            # A class owning no cluster has no CC sample: its MC samples are all its members.
            if orphan_policy == "class_centroid" and q_ids.size > 1:
                nn = q_ids[_others(x[q_ids], k, search)]
                got.append((q_ids, _centroids(xv, nn), _pad(nn, k)))
            continue
        bases = [cc_of_cluster[j] for j in clusters_of_class[a]]  # CC samples per cluster the class owns
        if loss == "all_samples":
            cc_ids = np.sort(np.concatenate([*bases, np.zeros(0, dtype=np.int64)]))
            got.extend(_own_class_targets(x, xv, q_ids, cc_ids, k, search))
        elif q_ids.size:
            got.append(_nearest_cluster_targets(x, xv, q_ids, bases, k, search))

    ids_all = np.concatenate([g[0] for g in got] + [np.zeros(0, dtype=np.int64)])
    vecs_all = np.concatenate([g[1] for g in got] + [np.zeros((0, d), dtype=xv.dtype)])
    order = np.argsort(ids_all, kind="stable")  # targets stored in sample-index order
    slot = np.full(n, -1, dtype=np.int64)
    slot[ids_all[order]] = np.arange(order.size, dtype=np.int64)
    basis = None
    if loss == "orthogonal":
        nn_all = np.concatenate([g[2] for g in got] + [np.zeros((0, k), dtype=np.int64)])
        basis = torch.from_numpy(_tangent_bases(xv, nn_all[order], tangent_dim))
    return LCCTargets(
        mc_mask=torch.from_numpy(mc),
        slot=torch.from_numpy(slot),
        vectors=torch.from_numpy(np.ascontiguousarray(vecs_all[order], dtype=xv.dtype)),
        owners=owners,
        orphans=orphans,
        num_clusters=int(owners.size),
        loss=loss,
        basis=basis,
    )


def _nearest_cluster_targets(
    x: np.ndarray, xv: np.ndarray, q_ids: np.ndarray, bases: list[np.ndarray], k: int, search: _Search
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's targets of the MC samples ``q_ids`` of one class: over the CC samples of each cluster the
    class owns (``bases``), the centroid of the k nearest; the centroid nearest to the sample wins."""
    q = xv[q_ids]
    best_d = np.full(q_ids.size, np.inf, dtype=xv.dtype)
    best_t = np.zeros((q_ids.size, xv.shape[1]), dtype=xv.dtype)
    best_nn = np.full((q_ids.size, k), -1, dtype=np.int64)
    for base_ids in bases:
        if base_ids.size == 0:  # only with inconsistent caller-given owners
            continue
        nn = base_ids[search(x[base_ids], x[q_ids], min(k, base_ids.size))]
        t = _centroids(xv, nn)
        diff = q - t
        dist = np.einsum("ij,ij->i", diff, diff)
        better = dist < best_d  # strict: ties keep the lower cluster id
        best_d[better] = dist[better]
        best_t[better] = t[better]
        best_nn[better] = _pad(nn[better], k)
    has = np.isfinite(best_d)
    return q_ids[has], best_t[has], best_nn[has]


def _own_class_targets(
    x: np.ndarray, xv: np.ndarray, mc_ids: np.ndarray, cc_ids: np.ndarray, k: int, search: _Search
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``all_samples`` targets of one class: each sample's mean of its k nearest OTHER CC samples of the
    class (``cc_ids``, from every cluster the class owns); the MC samples ``mc_ids`` are never in the base,
    the CC samples exclude themselves (a class with a single CC sample leaves that one without target)."""
    out = []
    if cc_ids.size >= 2:
        nn = cc_ids[_others(x[cc_ids], k, search)]
        out.append((cc_ids, _centroids(xv, nn), _pad(nn, k)))
    if cc_ids.size and mc_ids.size:
        nn = cc_ids[search(x[cc_ids], x[mc_ids], min(k, cc_ids.size))]
        out.append((mc_ids, _centroids(xv, nn), _pad(nn, k)))
    return out


def _others(members: np.ndarray, k: int, search: _Search) -> np.ndarray:
    """(n, min(k, n - 1)) indices into ``members`` (n >= 2) of each row's nearest OTHER rows, nearest first."""
    n = members.shape[0]
    kk = min(k, n - 1)
    nn = search(members, members, kk + 1)
    # Drop the query itself (found by id, not position: duplicates may come first); otherwise drop the
    # farthest of the kk + 1, so every row keeps exactly kk neighbours.
    keep = nn != np.arange(n)[:, None]
    keep[keep.all(axis=1), -1] = False
    return nn[keep].reshape(n, kk)


def _mean_and_radius(xv: np.ndarray) -> tuple[np.ndarray, float]:
    """(D,) float64 mean of the rows and their RMS distance to it, accumulated in float64 over blocks of rows
    (no (N, D) float64 copy)."""
    mu = xv.mean(axis=0, dtype=np.float64)
    total = 0.0
    step = max(1, _BLOCK_ELEMS // max(1, 4 * xv.shape[1]))
    for s in range(0, xv.shape[0], step):
        dev = xv[s : s + step].astype(np.float64) - mu
        total += float(np.einsum("ij,ij->", dev, dev))
    return mu, float(np.sqrt(total / xv.shape[0]))


def _pad(nn: np.ndarray, k: int) -> np.ndarray:
    """(nq, kk <= k) neighbour ids as (nq, k), the missing ones -1."""
    return nn if nn.shape[1] == k else np.pad(nn, ((0, 0), (0, k - nn.shape[1])), constant_values=-1)


def _tangent_bases(xv: np.ndarray, nn: np.ndarray, r: int) -> np.ndarray:
    """(M, r, D) orthonormal tangent bases, in xv's dtype: for each row of ``nn`` ((M, k) sample ids, -1 =
    none), the top r principal directions of ``xv[ids]`` (centred on their mean, the target; computed in
    float64). A direction the neighbours do not span (fewer than r + 1 distinct rows) is a zero row:
    the loss then keeps that component instead of removing an arbitrary one."""
    m, k = nn.shape
    d = xv.shape[1]
    out = np.zeros((m, r, d), dtype=xv.dtype)
    step = max(1, _BLOCK_ELEMS // max(1, 4 * k * d))
    for s in range(0, m, step):  # blocks bound the (block, k, D) float64 arrays (a few of 32 MiB each)
        ids = nn[s : s + step]
        valid = (ids >= 0)[:, :, None]
        p = xv[np.maximum(ids, 0)].astype(np.float64)
        mean = (p * valid).sum(axis=1, keepdims=True) / valid.sum(axis=1, keepdims=True)
        c = (p - mean) * valid  # padded rows are 0: they add nothing to the covariance
        _, sv, vh = np.linalg.svd(c, full_matrices=False)  # vh: (b, min(k, D), D), rows by falling sv
        rr = min(r, sv.shape[1])
        tol = sv[:, :1] * max(k, d) * np.finfo(np.float64).eps
        # n distinct rows span at most n - 1 directions around their mean: a rounding-level singular value
        # beyond that (e.g. 2 neighbours, tangent_dim 2) is noise, not a direction
        rank = valid[:, :, 0].sum(axis=1, keepdims=True) - 1
        spanned = (sv[:, :rr] > tol) & (sv[:, :rr] > 0) & (np.arange(rr)[None, :] < rank)
        out[s : s + step, :rr] = vh[:, :rr, :] * spanned[:, :, None]
    return out


def _groups(labels: np.ndarray, n: int, ids: np.ndarray) -> list[np.ndarray]:
    """``ids`` split by ``labels`` into n groups (ids ascending within a group), via one stable sort."""
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=n))[:-1]
    return np.split(ids[order], bounds)


class _Search:
    """The exact (unless the caller chose an approximate backend) searches of the targets: ``search(base, q, k)``
    -> (nq, k) int64 indices into ``base`` of each query's k nearest rows (squared L2), nearest first."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __call__(self, base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
        # Centring on the base mean leaves distances unchanged and makes the |q|^2 - 2 q.b + |b|^2
        # expansion (used by faiss and by the torch backend) lose less float32 precision.
        mu = base.mean(axis=0, dtype=np.float64).astype(np.float32)
        b = np.ascontiguousarray(base - mu)
        qc = np.ascontiguousarray(q - mu)
        return choose_backend(self.backend, b, len(qc), exact=True).search(b, qc, k)[0]


def _centroids(base: np.ndarray, nn: np.ndarray) -> np.ndarray:
    """(nq, D) mean of ``base[nn[i]]`` per row, in base's dtype; gathered in blocks so (block, k, D)
    stays bounded."""
    nq, kk = nn.shape
    out = np.empty((nq, base.shape[1]), dtype=base.dtype)
    step = max(1, _BLOCK_ELEMS // max(1, kk * base.shape[1]))
    for s in range(0, nq, step):
        out[s : s + step] = base[nn[s : s + step]].mean(axis=1)
    return out
