"""Every default of latentcc lives here, in frozen dataclasses.

The CLI builds its flags from these fields (names, types, defaults, help), the library functions
take these objects, and run folders store them as JSON, so the three can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.validate import check_int

C = TypeVar("C")


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    """The fine-tuning loop (``latentcc.train.fit``)."""

    epochs: int = _f(3, "number of training epochs")
    batch_size: int = _f(64, "training batch size")
    eval_batch_size: int = _f(256, "batch size for validation/test passes")
    optimizer: Literal["adamw", "sgd"] = _f("adamw", "optimizer used when you do not pass your own")
    lr: float = _f(1e-3, "peak learning rate")
    weight_decay: float = _f(1e-4, "decoupled weight decay (AdamW) or L2 (SGD)")
    momentum: float = _f(0.9, "SGD momentum (ignored by AdamW)")
    scheduler: Literal["cosine", "none"] = _f("cosine", "learning-rate schedule, stepped every batch")
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value; 0 disables")
    seed: int = _f(0, "seed for python, numpy, torch and the data order")
    device: str = _f("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    num_workers: int = _f(0, "DataLoader worker processes")
    topk: int = _f(5, "report top-k accuracy besides top-1 (capped at the number of classes)")
    keep_checkpoints: int = _f(2, "how many epoch checkpoints to keep (the best weights are kept apart)")
    max_steps_per_epoch: int = _f(0, "stop each epoch after this many batches; 0 = the whole training set")
    drop_last: bool = _f(False, "skip each epoch's incomplete last batch (for BatchNorm, if it holds 1)")
    progress: bool = _f(True, "show progress bars")
    tensorboard: bool = _f(True, "also log to TensorBoard when the tensorboard package is installed")

    def __post_init__(self) -> None:
        f = "TrainConfig"
        _check_field_types(self, f)
        _check_int(self.epochs, "epochs", f, 1, _MAX_EPOCHS)
        _check_int(self.batch_size, "batch_size", f, 1)
        _check_int(self.eval_batch_size, "eval_batch_size", f, 1)
        _check_int(self.num_workers, "num_workers", f, 0, _MAX_WORKERS)
        _check_int(self.topk, "topk", f, 1)
        _check_int(self.keep_checkpoints, "keep_checkpoints", f, 1)
        _check_int(self.max_steps_per_epoch, "max_steps_per_epoch", f, 0)
        _check_int(self.seed, "seed", f, 0, _MAX_SEED)
        _check_float(self.lr, "lr", f, strictly_positive=True)
        _check_float(self.weight_decay, "weight_decay", f)
        _check_float(self.momentum, "momentum", f)
        if self.momentum >= 1:  # a velocity that never decays: SGD diverges
            raise param_error("momentum", f, "a float in [0, 1)", self.momentum)
        _check_float(self.grad_clip, "grad_clip", f)
        _check_choice(self.optimizer, "optimizer", f, ("adamw", "sgd"))
        _check_choice(self.scheduler, "scheduler", f, ("cosine", "none"))


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split (``latentcc.data.load_dataset``)."""

    data: str = _f(
        "animal-mnist",
        "embedded dataset name (see `latentcc datasets`), an image folder or a saved HF dataset",
    )
    val_fraction: float = _f(0.1, "fraction of the data held out for validation (model selection)")
    test_fraction: float = _f(
        0.2, "fraction held out for the final test (ignored when the dataset has its own test split)"
    )
    max_samples: int = _f(0, "use a stratified subset of this many samples; 0 = all")
    split_seed: int = _f(0, "seed of the deterministic stratified split")
    label_column: str = _f("label", "saved Hugging Face datasets: the column holding the class labels")
    input_column: str = _f("", "saved Hugging Face datasets: the column holding the inputs; empty = detect")

    def __post_init__(self) -> None:
        f = "DataConfig"
        _check_field_types(self, f)
        _check_int(self.max_samples, "max_samples", f, 0)
        _check_int(self.split_seed, "split_seed", f, 0, _MAX_SEED)
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise param_error(name, f, "a float in [0, 1)", v)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise param_error(
                "val_fraction", f, "such that val_fraction + test_fraction < 1", self.val_fraction
            )


@dataclass(frozen=True)
class ModelConfig:
    """Which model (``latentcc.models.load_model``)."""

    model: str = _f(
        "mnist-cnn", "embedded model name (see `latentcc models`) or a local Hugging Face model folder"
    )
    pretrained: bool = _f(True, "start from the pretrained weights (False: random init, same architecture)")
    input_size: int = _f(0, "image side the model sees (inputs are resized); 0 = the model's default")

    def __post_init__(self) -> None:
        f = "ModelConfig"
        _check_field_types(self, f)
        if not self.model:
            raise param_error("model", f, "a model name (see `latentcc models`) or a folder", self.model)
        _check_int(self.input_size, "input_size", f, 0, _MAX_IMAGE_SIDE)


# LCCConfig.loss: the per-step loss variants (docs/algorithms.md, LCC item 11)
LCC_LOSSES = ("paper", "scale_free", "orthogonal", "all_samples")


@dataclass(frozen=True)
class LCCConfig:
    """Latent Cluster Correction (definitions: docs/algorithms.md; paper grid w in {1e-4, 1e-2}, k in {5, 50, 500})."""

    layers: tuple[str, ...] = _f(
        (), "layers to correct: exact names, dotted suffixes or 're:<regex>' (see `latentcc layers`)"
    )
    weight: float | Literal["auto"] = _f(
        1e-2,
        "w in  loss = CE + w * mean over layers of the LCC loss; 'auto': set after each refresh so that "
        "w * ||grad LCC|| / ||grad CE|| = grad_ratio on the parameters both reach (latentcc.train.fit only)",
    )
    grad_ratio: float = _f(
        0.1, "weight='auto': target ratio of the weighted LCC gradient norm to the CE gradient norm"
    )
    calibration_batches: int = _f(
        4, "weight='auto': training batches (seeded) over which the gradient norms are measured"
    )
    k: int = _f(5, "neighbours per sample in the k-NN graph")
    k_target: int | None = _f(None, "correctly clustered neighbours averaged into a target; None = k")
    warmup: int = _f(1, "epochs of plain fine-tuning before the first correction epoch")
    interval: int = _f(1, "recompute clusters and targets every this many epochs")
    community: Literal["leiden", "louvain", "leidenalg"] = _f(
        "leiden",
        "community detection algorithm (modularity): igraph Leiden, igraph Louvain, or the leidenalg package",
    )
    resolution: float = _f(1.0, "modularity resolution (higher: more, smaller clusters)")
    leiden_iterations: int = _f(
        2,
        "Leiden passes per correction epoch (-1: until stable; on a poorly clustered 50k graph that took 117 s "
        "instead of 5 s for +0.003 modularity; warm starts keep refining across epochs)",
    )
    pool: Literal["avg", "flatten"] = _f("avg", "how a layer output becomes one vector per sample")
    dim: int | None = _f(
        None, "random projection of collected latents to this width (bounds memory for 'flatten')"
    )
    graph_dim: int | None = _f(
        128, "PCA to this width before the k-NN graph only (targets and loss use full latents); None = no PCA"
    )
    knn_backend: Literal["auto", "faiss", "hnsw", "ivf", "torch", "faiss-gpu"] = _f(
        "auto",
        "k-NN backend of the graph (auto: exact faiss up to 30k samples, above it IVF calibrated to recall@k >= 0.96 "
        "on a 1000-row sample, deterministic; torch on a CUDA tensor) and of the targets' searches (always exact: "
        "hnsw and ivf mean exact faiss there)",
    )
    metric: Literal["l2", "cosine"] = _f("l2", "k-NN distance")
    weighted: bool = _f(False, "UMAP-style fuzzy edge weights (the paper's graph is unweighted)")
    orphan_policy: Literal["skip", "class_centroid"] = _f(
        "skip",
        "MC samples of classes that own no cluster: no target (paper) or their class neighbours' centroid",
    )
    loss: Literal["paper", "scale_free", "orthogonal", "all_samples"] = _f(
        "paper",
        "LCC loss variant (docs/algorithms.md, LCC item 11): the paper's distance, a distance in normalised "
        "frames (no gain from rescaling the latent space), only the pull off the target's local tangent space, "
        "or every sample pulled toward its k_target nearest correctly clustered same-class samples",
    )
    tangent_dim: int = _f(
        2, "loss='orthogonal': dimension of the local tangent space (PCA of a target's neighbours)"
    )
    warm_start: bool = _f(True, "start each correction epoch's partition from the previous one")
    latent_source: Literal["train_pass", "eval_pass"] = _f(
        "train_pass",
        "latents clustered at each refresh: those the training steps since the last refresh captured (no extra "
        "pass; unwritten rows get an eval pass), or an eval-mode pass over the training set (the paper)",
    )
    diagnostic: bool = _f(
        False,
        "each epoch, cluster the validation split's latents and log top-1 of correctly clustered vs "
        "misclustered samples (val_<layer>/cc_top1, mc_top1), timed apart as lcc/time_diagnostic_s",
    )
    seed: int = _f(0, "seed of PCA, approximate k-NN and community detection")

    def __post_init__(self) -> None:
        f = "LCCConfig"
        _check_field_types(self, f)
        object.__setattr__(self, "layers", _as_names(self.layers, "layers", f))
        _check_weight(self, f)
        _check_int(self.k, "k", f, 1)
        if self.k_target is not None:
            _check_int(self.k_target, "k_target", f, 1)
        _check_int(self.warmup, "warmup", f, 0, _MAX_EPOCHS)
        _check_int(self.interval, "interval", f, 1, _MAX_EPOCHS)
        _check_float(self.resolution, "resolution", f, strictly_positive=True)
        if (
            isinstance(self.leiden_iterations, bool)
            or not isinstance(self.leiden_iterations, int)
            or self.leiden_iterations == 0
            or not -1 <= self.leiden_iterations <= _MAX_COUNT
        ):
            req = f"-1 (until stable) or an int in 1..{_MAX_COUNT}"
            raise param_error("leiden_iterations", f, req, self.leiden_iterations)
        for name in ("dim", "graph_dim"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, f, 1)
        _check_int(self.seed, "seed", f, 0, _MAX_SEED)
        _check_choice(self.community, "community", f, ("leiden", "louvain", "leidenalg"))
        default_iterations = type(self).__dataclass_fields__["leiden_iterations"].default
        if self.community == "louvain" and self.leiden_iterations != default_iterations:
            raise param_error(
                "community", f, f"'leiden' or 'leidenalg' when leiden_iterations={self.leiden_iterations} is set "
                "(--lcc-leiden-iterations)", self.community,
                "Louvain always runs to convergence, so that setting would be ignored. Fix: community='leiden' "
                "(--lcc-community leiden), or leave leiden_iterations at its default.",
            )  # fmt: skip
        _check_choice(self.pool, "pool", f, ("avg", "flatten"))
        _check_choice(
            self.knn_backend, "knn_backend", f, ("auto", "faiss", "hnsw", "ivf", "torch", "faiss-gpu")
        )
        _check_choice(self.metric, "metric", f, ("l2", "cosine"))
        _check_choice(self.orphan_policy, "orphan_policy", f, ("skip", "class_centroid"))
        _check_choice(self.latent_source, "latent_source", f, ("train_pass", "eval_pass"))
        _check_loss_variant(self, f)


@dataclass(frozen=True)
class MethodConfig:
    """Which parameters train, and how (``latentcc.train.methods.apply_method``); definitions: docs/methods.md.

    A layer name left empty ("") means "not set": the method uses its documented default (``head``: the last
    nn.Linear; ``gc_layer``: the head's input), and a method that needs a ``block`` refuses it by name.
    """

    method: Literal["ft", "lp", "layer_ft", "scl_ft", "gc_reg"] = _f(
        "ft",
        "ft: every parameter; lp: the head only; layer_ft: --block + head; scl_ft: --block + head + a skip "
        "from the block to the head's input; gc_reg: every parameter + a geometric-complexity penalty",
    )
    block: str = _f("", "layer_ft/scl_ft: the one intermediate layer that trains (see `latentcc layers`)")
    head: str = _f("", "the classifier layer; empty = the last nn.Linear of the model")
    skip: Literal["add", "concat"] = _f(
        "add",
        "scl_ft: h + P b at the head's input (P = identity if widths match), or [h, b] and a wider head",
    )
    skip_pool: Literal["avg", "flatten"] = _f("avg", "scl_ft: how the block's output becomes a vector")
    gc_weight: float = _f(1e-3, "gc_reg: weight of the GC penalty (aim for 1-10 percent of the task loss)")
    gc_layer: str = _f("", "gc_reg: the embedding whose GC is penalised; empty = the head's input")
    gc_projections: int = _f(1, "gc_reg: Hutchinson random projections per training step")

    def __post_init__(self) -> None:
        f = "MethodConfig"
        _check_field_types(self, f)
        _check_choice(self.method, "method", f, ("ft", "lp", "layer_ft", "scl_ft", "gc_reg"))
        _check_choice(self.skip, "skip", f, ("add", "concat"))
        _check_choice(self.skip_pool, "skip_pool", f, ("avg", "flatten"))
        for name in ("block", "head", "gc_layer"):
            if not isinstance(getattr(self, name), str):
                raise param_error(name, f, "a layer name (str; empty = unset)", getattr(self, name))
        _check_float(self.gc_weight, "gc_weight", f)
        _check_int(self.gc_projections, "gc_projections", f, 1)


@dataclass(frozen=True)
class ProbeConfig:
    """Latent-geometry probes (``latentcc.profile``, ``latentcc probe``); definitions in docs/probes.md.

    ``layers`` and ``metrics`` select: ``("all",)`` (the default) or at least one name; an empty selection is
    refused (it has no meaning here). The metric family names are those of the probes' registry
    (``latentcc.probes.registry.FAMILIES``), checked where a profile starts (``profile``, ``latentcc probe``).
    """

    layers: tuple[str, ...] = _f(
        ("all",), "layers to profile: 'all' (every layer with a per-sample float output) or names, dotted "
        "suffixes, 're:<regex>' (see docs/probes.md)",
    )  # fmt: skip
    metrics: tuple[str, ...] = _f(
        ("all",), "metric families to compute: 'all' or names (listed by `latentcc probe --help`)"
    )
    max_samples_per_split: int = _f(
        0, "stratified subset of at most this many samples in each split; 0 = all"
    )
    pool: Literal["avg", "flatten"] = _f("avg", "how a layer output becomes one vector per sample")
    dim: int | None = _f(
        None, "seeded random projection of each layer's latents to this width (for 'flatten')"
    )
    clustering: Literal["ward", "kmeans", "leiden"] = _f(
        "ward", "clustering algorithm of clusterability and the report's views: Ward (the probing paper), "
        "k-means, or Leiden on a k-NN graph",
    )  # fmt: skip
    overcluster: int = _f(1, "clusterability: clusters per class (1-5; ward and kmeans, not leiden)")
    knn_k: int = _f(20, "k-NN probe: neighbours voting (cosine distance); below the training samples probed")
    gc_estimator: Literal["exact", "hutchinson", "outputs"] = _f(
        "hutchinson", "geometric complexity estimator (exact = full Jacobian, slow for wide layers)"
    )
    gc_examples: int = _f(256, "geometric complexity: training examples used (it needs gradients)")
    gc_projections: int = _f(8, "geometric complexity: random projections per example")
    view_points: int = _f(2000, "report: training points in each 2-D projection and contingency map")
    batch_size: int = _f(256, "batch size of the latent pass")
    seed: int = _f(0, "seed of subsets, projections, clustering and estimators")
    device: str = _f("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda', ...")
    progress: bool = _f(True, "show progress bars")

    def __post_init__(self) -> None:
        f = "ProbeConfig"
        _check_field_types(self, f)
        for name in ("layers", "metrics"):
            object.__setattr__(self, name, _as_selection(getattr(self, name), name, f))
        _check_int(self.max_samples_per_split, "max_samples_per_split", f, 0)
        if self.dim is not None:
            _check_int(self.dim, "dim", f, 1)
        _check_choice(self.pool, "pool", f, ("avg", "flatten"))
        _check_choice(self.clustering, "clustering", f, ("ward", "kmeans", "leiden"))
        _check_int(self.overcluster, "overcluster", f, 1)
        if self.overcluster > 5:
            raise param_error("overcluster", f, "an int in 1..5 (clusters per class)", self.overcluster)
        _check_int(self.knn_k, "knn_k", f, 1)
        _check_choice(self.gc_estimator, "gc_estimator", f, ("exact", "hutchinson", "outputs"))
        _check_int(self.gc_examples, "gc_examples", f, 1)
        _check_int(self.gc_projections, "gc_projections", f, 1)
        _check_int(self.view_points, "view_points", f, 10)
        _check_int(self.batch_size, "batch_size", f, 1)
        _check_int(self.seed, "seed", f, 0, _MAX_SEED)


def _check_weight(c: LCCConfig, f: str) -> None:
    """weight: a float >= 0 or "auto"; grad_ratio and calibration_batches are read only with "auto"."""
    w = c.weight
    number = isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
    if not (number or (isinstance(w, str) and w == "auto")):
        raise param_error("weight", f, "a finite float >= 0 or 'auto'", w)
    _check_float(c.grad_ratio, "grad_ratio", f, strictly_positive=True)
    _check_int(c.calibration_batches, "calibration_batches", f, 1, _MAX_COUNT)
    fields = type(c).__dataclass_fields__
    for name in ("grad_ratio", "calibration_batches"):  # set, but a numeric weight ignores them
        if c.weight != "auto" and getattr(c, name) != fields[name].default:
            flag = "--lcc-" + name.replace("_", "-")
            raise param_error(
                name, f, f"left at its default when weight is a number ({c.weight!r})", getattr(c, name),
                f"It only applies to weight='auto', which calibrates the weight at each refresh. Fix: "
                f"weight='auto' (--lcc-weight auto), or leave {name} out ({flag}).",
            )  # fmt: skip


def _check_loss_variant(c: LCCConfig, f: str) -> None:
    """loss: one of LCC_LOSSES; tangent_dim is read only by loss='orthogonal', and a tangent space estimated
    from k_target neighbours has at most k_target - 1 directions."""
    _check_choice(c.loss, "loss", f, LCC_LOSSES)
    _check_int(c.tangent_dim, "tangent_dim", f, 1)
    default = type(c).__dataclass_fields__["tangent_dim"].default
    if c.loss != "orthogonal" and c.tangent_dim != default:
        raise param_error(
            "tangent_dim", f, f"left at its default ({default}) when loss={c.loss!r}", c.tangent_dim,
            "Only loss='orthogonal' estimates a tangent space. Fix: loss='orthogonal' (--lcc-loss orthogonal), "
            "or leave tangent_dim out (--lcc-tangent-dim).",
        )  # fmt: skip
    k = c.k_target or c.k
    if c.loss == "orthogonal" and c.tangent_dim >= k:
        raise param_error(
            "tangent_dim", f, f"smaller than k_target (here {k}): {k} neighbours span at most {k - 1} directions",
            c.tangent_dim,
            f"Fix: tangent_dim <= {k - 1} (--lcc-tangent-dim), or average more neighbours into each target "
            f"(k_target >= {c.tangent_dim + 1}, --lcc-k-target).",
        )  # fmt: skip


def _as_selection(v: Any, name: str, func: str) -> tuple[str, ...]:
    """``("all",)`` or a non-empty tuple of names without "all" (ProbeConfig's layers and metrics)."""
    names = _as_names(v, name, func)
    if not names or ("all" in names and len(names) > 1):
        raise param_error(
            name, func, "'all' or a non-empty list of names ('all' alone: it already selects everything)", v,
            f"Fix: {name}='all' (--{name} all), or name what to include.",
        )  # fmt: skip
    return names


def _as_names(v: Any, name: str, func: str) -> tuple[str, ...]:
    """A tuple of strings from one string (a common slip: accepted) or a list/tuple of strings."""
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list | tuple) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise param_error(name, func, "a name or a list of names (strings)", v)


# Upper bounds of int fields: far beyond any real run, and low enough that what they feed (DataLoader and
# itertools sizes, faiss and igraph C ints, numpy seeds) never overflows into a raw error mid-run.
_MAX_COUNT = 2**31 - 1  # samples, batches, steps, neighbours, widths
_MAX_SEED = 2**32 - 1  # numpy's np.random.seed and scikit-learn's random_state take 0..2**32 - 1
_MAX_EPOCHS = 1_000_000  # epochs (and epoch counts such as LCC's warmup): more would never finish
_MAX_WORKERS = 1024  # DataLoader worker processes
_MAX_IMAGE_SIDE = 4096  # pixels: one 4096 x 4096 image already takes GBs of activations


def _check_int(v: Any, name: str, func: str, minimum: int, maximum: int = _MAX_COUNT) -> None:
    # a plain int: numpy ints would not survive the JSON of a run folder's config.json
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise param_error(name, func, f"an int >= {minimum}", v)
    check_int(v, name, func, minimum, maximum)


def _check_field_types(cfg: Any, func: str) -> None:
    """bool and str fields hold exactly that type (a JSON config's "false" is a str, and truthy); a path
    given for a str field (a data or model folder) is kept as its string, so the config stays JSON."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.type in ("bool", bool) and not isinstance(v, bool):
            raise param_error(f.name, func, "True or False", v)
        if f.type in ("str", str) and isinstance(v, os.PathLike):
            object.__setattr__(cfg, f.name, os.fspath(v))
        elif f.type in ("str", str) and not isinstance(v, str):
            raise param_error(f.name, func, "a string", v)


def _check_float(v: Any, name: str, func: str, *, strictly_positive: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > 0 if strictly_positive else v >= 0)
    if not ok:
        raise param_error(name, func, "a finite float " + ("> 0" if strictly_positive else ">= 0"), v)


def _check_choice(v: Any, name: str, func: str, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise param_error(name, func, f"one of {list(choices)}", v)


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build a config from a plain dict (e.g. parsed JSON), refusing unknown keys by name (and naming the new
    name of a renamed one)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        renamed = RENAMED_FIELDS.get(cls.__name__, {})
        hint = "".join(f" '{k}' was renamed '{renamed[k]}'." for k in unknown if k in renamed)
        raise LatentccError(
            f"Unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(names)}.{hint}"
        )
    return cls(**values)


# Settings renamed in 0.1 (docs/glossary.md, "Renamed settings"): the API and the CLI take only the new names;
# a run folder's config.json recorded with an old name is read with the new one
# (latentcc.train.resume.with_legacy_values), and any other use of an old name is refused, naming the new one.
RENAMED_FIELDS: dict[str, dict[str, str]] = {
    "LCCConfig": {"method": "community"},
    "MethodConfig": {"gc_lambda": "gc_weight", "gc_draws": "gc_projections"},
    "ProbeConfig": {
        "cluster_method": "clustering", "max_samples": "max_samples_per_split", "gc_samples": "gc_examples",
        "gc_draws": "gc_projections",
    },
}  # fmt: skip
# the config.json sections of a run (latentcc.app.finetune) whose keys were renamed
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "lcc": RENAMED_FIELDS["LCCConfig"],
    "method": RENAMED_FIELDS["MethodConfig"],
}


# What a run recorded before a setting existed did: a config.json without the key is read with this value on
# resume (not with today's default, which may differ: old LCC runs collected latents by an eval pass and always
# ran the validation CC/MC diagnostic).
LEGACY_VALUES: dict[str, dict[str, Any]] = {"lcc": {"latent_source": "eval_pass", "diagnostic": True}}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
