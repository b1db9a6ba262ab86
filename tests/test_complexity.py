"""Geometric complexity: exact vs full-batch Jacobians, unbiased estimators, stderr, layers, penalty."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from latentcc.metrics.complexity import (
    ESTIMATORS,
    gc_penalty,
    geometric_collapse,
    geometric_complexity,
    layer_fn,
    per_class_gc,
)
from latentcc.plumbing.errors import LatentccError

RANDOMIZED = ("hutchinson", "outputs")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 4)).double().eval()


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 3, 3),
            bn=nn.BatchNorm2d(3),  # eval mode: per-example, works under vmap
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flat=nn.Flatten(),
            fc=nn.Linear(27, 5),
        )
    ).double()
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(kind: str, n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 5) if kind == "mlp" else (n, 1, 8, 8)
    return torch.randn(shape, generator=g, dtype=torch.float64)


MODELS = {"mlp": _mlp, "cnn": _cnn}


def _reference_per_example(fn, x: torch.Tensor) -> np.ndarray:
    """‖J_i‖²_F from the Jacobian of the FULL batch function: its diagonal blocks (N, m, N, d)."""
    n = len(x)
    jac = torch.autograd.functional.jacobian(lambda z: fn(z).reshape(n, -1), x)
    jac = jac.reshape(n, -1, n, x[0].numel())
    diag = torch.stack([jac[i, :, i, :] for i in range(n)])
    # examples are independent: off-diagonal blocks vanish
    assert float(jac.abs().sum()) == pytest.approx(float(diag.abs().sum()), rel=1e-12)
    return diag.pow(2).sum((1, 2)).numpy()


# --- exact ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_exact_equals_full_batch_jacobian(kind):
    model, x = MODELS[kind](), _inputs(kind, n=8)
    ref = _reference_per_example(model, x)
    res = geometric_complexity(model, x, estimator="exact", batch_size=3)  # chunks of 3, 3, 2
    np.testing.assert_allclose(res.per_example, ref, rtol=1e-10)
    assert res.mean == pytest.approx(ref.mean(), rel=1e-10)
    assert res.stderr == 0.0 and res.n_examples == 8 and res.n_projections == 1
    np.testing.assert_array_equal(res.indices, np.arange(8))


def test_exact_linear_map_is_frobenius_norm():
    a = torch.randn(7, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = torch.randn(10, 4, dtype=torch.float64)
    res = geometric_complexity(lambda z: z @ a.T, x, estimator="exact")
    assert res.mean == pytest.approx(float(a.pow(2).sum()), rel=1e-12)
    np.testing.assert_allclose(res.per_example, float(a.pow(2).sum()), rtol=1e-12)


def test_constant_fn_has_zero_gc():
    x = torch.randn(6, 3, dtype=torch.float64)
    for est in ESTIMATORS:
        res = geometric_complexity(lambda z: torch.ones(len(z), 2, dtype=z.dtype), x, estimator=est)
        assert res.mean == 0.0, est


# --- randomized estimators -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("estimator", RANDOMIZED)
def test_randomized_within_3_stderr_of_exact(kind, estimator):
    model, x = MODELS[kind](), _inputs(kind)
    exact = geometric_complexity(model, x, estimator="exact").mean
    res = geometric_complexity(model, x, estimator=estimator, n_projections=64, seed=1)
    assert res.n_projections == 64 and res.n_examples == 16
    assert 0 < res.stderr < 0.05 * exact
    assert abs(res.mean - exact) < 3 * res.stderr


@pytest.mark.parametrize(
    ("estimator", "n_examples"),
    [
        ("hutchinson", None),
        ("outputs", None),
        ("exact", 6),
        ("hutchinson", 6),
        ("outputs", 6),
        ("hutchinson", 12),  # f = 3/4: the projection share of the two-stage variance matters
    ],
)
def test_unbiased_and_stderr_calibrated_over_seeds(estimator, n_examples):
    model, x = _mlp(), _inputs("mlp")
    exact = geometric_complexity(model, x, estimator="exact").mean
    runs = [
        geometric_complexity(model, x, estimator=estimator, n_projections=2, n_examples=n_examples, seed=s)
        for s in range(50)
    ]
    means = np.array([r.mean for r in runs])
    se_of_avg = means.std(ddof=1) / math.sqrt(len(means))
    assert abs(means.mean() - exact) < 3 * se_of_avg
    # the reported stderr is the spread of `mean` over repetitions (50 runs: ~10 % noise on a std)
    ratio = np.mean([r.stderr for r in runs]) / means.std(ddof=1)
    assert 0.7 < ratio < 1.4, ratio


# --- example subsampling -------------------------------------------------------------------------


def test_example_subsampling_fpc_and_accuracy():
    model, x = _mlp(), _inputs("mlp", n=40)
    full = geometric_complexity(model, x, estimator="exact")
    sub = geometric_complexity(model, x, n_examples=10, seed=2, estimator="exact")
    assert sub.n_examples == 10 and len(np.unique(sub.indices)) == 10
    np.testing.assert_allclose(sub.per_example, full.per_example[sub.indices], rtol=1e-12)
    expected = sub.per_example.std(ddof=1) / math.sqrt(10) * math.sqrt(1 - 10 / 40)
    assert sub.stderr == pytest.approx(expected, rel=1e-12)
    assert abs(sub.mean - full.mean) < 3 * sub.stderr
    assert (
        geometric_complexity(model, x, n_examples=40, estimator="exact").stderr == 0.0
    )  # all examples: no sampling error


def test_n_examples_equal_n_keeps_only_projection_noise():
    model, x = _mlp(), _inputs("mlp")
    a = geometric_complexity(model, x, estimator="hutchinson", n_projections=8, n_examples=16, seed=4)
    b = geometric_complexity(model, x, estimator="hutchinson", n_projections=8, seed=4)
    assert a == b
    # the pooled per-example projection variance has the expectation of std(full-set means)/√S
    one_draw = geometric_complexity(model, x, estimator="hutchinson", n_projections=1)
    assert math.isnan(one_draw.stderr) and one_draw.as_dict()["stderr"] is None


# --- layers --------------------------------------------------------------------------------------


def test_layer_fn_intermediate_layer_and_hooks_removed():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(lin0=nn.Linear(4, 6), relu=nn.ReLU(), lin1=nn.Linear(6, 3))).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    res = geometric_complexity(layer_fn(model, "lin0"), x, estimator="exact")
    assert res.mean == pytest.approx(float(model.lin0.weight.detach().pow(2).sum()), rel=1e-12)
    last = geometric_complexity(layer_fn(model, "lin1", pool="flatten"), x, estimator="outputs", seed=3)
    assert last == geometric_complexity(model, x, estimator="outputs", seed=3)
    gc_penalty(layer_fn(model, "lin0"), x).backward()
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_fn_conv_avg_pool_equals_subnetwork():
    model, x = _cnn(), _inputs("cnn", n=5)
    sub = nn.Sequential(model.conv, model.bn)
    res = geometric_complexity(layer_fn(model, "bn", pool="avg"), x, estimator="exact")
    ref = geometric_complexity(lambda z: sub(z).mean((2, 3)), x, estimator="exact")
    np.testing.assert_allclose(res.per_example, ref.per_example, rtol=1e-12)
    flat = geometric_complexity(layer_fn(model, "re:b.", pool="flatten"), x, estimator="exact")
    np.testing.assert_allclose(flat.per_example, _reference_per_example(sub, x), rtol=1e-10)
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_fn_errors():
    model = _cnn()
    with pytest.raises(LatentccError, match="'pool'"):
        layer_fn(model, "conv", pool="max")
    with pytest.raises(
        LatentccError, match=r"'layer' parameter of layer_fn must be a name that selects exactly"
    ):
        layer_fn(model, "re:.*")
    # the parameter is named 'layer' (one name), whatever the lookup found
    with pytest.raises(
        LatentccError, match=r"'layer' parameter of layer_fn must be the name of one layer.*Got 'nope'"
    ):
        layer_fn(model, "nope")
    with pytest.raises(LatentccError, match=r"'layer' parameter of layer_fn.*Did you mean 'conv'"):
        layer_fn(model, "convv")


# --- per class / geometric collapse --------------------------------------------------------------


def test_geometric_collapse_brute_force():
    model, x = _mlp(), _inputs("mlp", n=12)
    labels = np.array([0, 2, 5] * 4)
    got = geometric_collapse(model, x, labels, estimator="exact")
    classes = [0, 2, 5]
    gc, mu = {}, {}
    for c in classes:
        xc = x[torch.from_numpy(labels == c)]
        gc[c] = _reference_per_example(model, xc).mean()
        with torch.no_grad():
            mu[c] = model(xc).reshape(len(xc), -1).mean(0).numpy()
    pairs = [(gc[i] + gc[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2)) for i in classes for j in classes if i != j]
    assert got == pytest.approx(np.mean(pairs), rel=1e-10)
    per = per_class_gc(model, x, torch.from_numpy(labels), estimator="exact")
    assert list(per) == classes
    assert [per[c].mean for c in classes] == pytest.approx([gc[c] for c in classes], rel=1e-10)
    with pytest.raises(LatentccError, match="'labels'"):
        geometric_collapse(model, x, np.zeros(12, dtype=int), estimator="exact")


# --- GC penalty ----------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", RANDOMIZED)
def test_gc_penalty_gradient_and_expectation(estimator):
    model, x = _mlp(), _inputs("mlp")
    exact = geometric_complexity(model, x, estimator="exact").mean
    p = gc_penalty(model, x, estimator=estimator, generator=torch.Generator().manual_seed(0))
    assert p.ndim == 0 and p.requires_grad
    p.backward()
    # every parameter but the last bias (a constant shift: no effect on the Jacobian) gets a gradient
    for param in [model[0].weight, model[0].bias, model[2].weight]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    assert model[2].bias.grad is None
    assert x.grad is None
    vals = np.array(
        [
            float(
                gc_penalty(model, x, estimator=estimator, generator=torch.Generator().manual_seed(s)).detach()
            )
            for s in range(50)
        ]
    )
    assert abs(vals.mean() - exact) < 3 * vals.std(ddof=1) / math.sqrt(len(vals))


def test_gc_penalty_training_lowers_gc():
    model, x = _mlp(), _inputs("mlp", n=32)
    before = geometric_complexity(model, x, estimator="exact").mean
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        opt.zero_grad()
        gc_penalty(model, x, n_projections=4, generator=g).backward()
        opt.step()
    after = geometric_complexity(model, x, estimator="exact").mean
    assert after < 0.8 * before


# --- seeds, caller state, result type ------------------------------------------------------------


def test_seeds_reproducible_and_global_rng_untouched():
    model, x = _mlp(), _inputs("mlp")
    state = torch.get_rng_state()
    a = geometric_complexity(model, x, estimator="hutchinson", n_examples=8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = geometric_complexity(model, x, estimator="hutchinson", n_examples=8, seed=7)
    c = geometric_complexity(model, x, estimator="hutchinson", n_examples=8, seed=8)
    assert a == b and np.array_equal(a.per_example, b.per_example)
    assert a.mean != c.mean


def test_caller_state_untouched_and_numpy_input():
    model = _mlp()
    x = _inputs("mlp").requires_grad_(True)
    for est in ESTIMATORS:
        geometric_complexity(model, x, estimator=est)
    assert x.grad is None and all(p.grad is None for p in model.parameters())
    res = geometric_complexity(model, x.detach().numpy(), estimator="exact")
    assert res.mean == geometric_complexity(model, x, estimator="exact").mean
    with torch.no_grad():  # works inside a caller's no_grad block
        assert geometric_complexity(model, x, estimator="outputs").mean > 0


def test_result_unpacks_and_serialises():
    res = geometric_complexity(_mlp(), _inputs("mlp"), estimator="outputs", n_projections=4)
    mean, stderr = res
    assert (mean, stderr) == (res.mean, res.stderr)
    d = res.as_dict()
    assert set(d) == {"mean", "stderr", "estimator", "n_examples", "n_projections"}
    json.dumps(d, allow_nan=False)


# --- validation ----------------------------------------------------------------------------------


def _call(**kw):
    model, x = _mlp(), _inputs("mlp", n=4)
    args = {"fn": model, "x": x, "estimator": "exact"} | kw  # each case names the other estimators it means
    return geometric_complexity(args.pop("fn"), args.pop("x"), **args)


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"estimator": "jacobian"}, "estimator"),
        ({"n_projections": 0}, "n_projections"),
        ({"n_projections": 2.0}, "n_projections"),
        ({"n_examples": 0}, "n_examples"),
        ({"n_examples": 5}, "n_examples"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"x": torch.zeros(0, 5, dtype=torch.float64)}, "x"),
        ({"x": torch.ones(4, 5, dtype=torch.int64)}, "x"),
        ({"x": [[1.0, 2.0]]}, "x"),
        ({"fn": lambda z: z.sum()}, "fn"),
        ({"fn": lambda z: z.sum(0)}, "fn"),
        ({"fn": lambda z: z.sum(0), "estimator": "hutchinson"}, "fn"),
        ({"fn": lambda z: z[:, :0]}, "fn"),
        ({"fn": lambda z: z / 0.0}, "fn"),
        ({"fn": lambda z: z / 0.0, "estimator": "outputs"}, "fn"),
        ({"fn": lambda z: z.abs().sqrt(), "x": torch.zeros(2, 3, dtype=torch.float64)}, "fn"),
    ],
)
def test_validation_errors(kw, param):
    with pytest.raises(LatentccError, match=f"'{param}'"):
        _call(**kw)


def test_gc_penalty_validation():
    model, x = _mlp(), _inputs("mlp", n=4)
    with pytest.raises(LatentccError, match="'estimator'"):
        gc_penalty(model, x, estimator="exact")
    with pytest.raises(LatentccError, match="'n_projections'"):
        gc_penalty(model, x, n_projections=0)
    with pytest.raises(LatentccError, match="'fn'"):
        gc_penalty(lambda z: z.mean(), x)


# --- the model behind fn: dtype, mode, meta ---------------------------------------------------


def _bn_model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).double()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float32_inputs_to_a_float64_model_take_its_dtype(estimator):
    """A model (or layer_fn) shows its dtype: x is upcast exactly, so GC is that of x.double()."""
    model, x = _mlp(), _inputs("mlp", n=6)
    for fn in (model, layer_fn(model, "2"), model.forward):
        got = geometric_complexity(fn, x.float(), estimator=estimator, n_projections=4, seed=1)
        ref = geometric_complexity(fn, x.float().double(), estimator=estimator, n_projections=4, seed=1)
        assert got.mean == ref.mean > 0


@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
def test_a_callable_hiding_a_float64_model_gets_a_clear_dtype_error(estimator):
    model = _mlp()
    with pytest.raises(LatentccError, match=r"'x' parameter of geometric_complexity.*dtype.*Fix: cast x"):
        geometric_complexity(lambda z: model(z), _inputs("mlp").float(), estimator=estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_train_mode_batchnorm_is_refused_and_left_untouched(estimator):
    model = _bn_model().train()
    stats = model[1].running_mean.clone()
    x = _inputs("mlp", n=8)
    for fn in (model, layer_fn(model, "3")):
        with pytest.raises(
            LatentccError, match=r"'fn' parameter.*eval mode.*\['1'\].*Fix: call model.eval\(\)"
        ):
            geometric_complexity(fn, x, estimator=estimator, n_projections=2)
    with pytest.raises(LatentccError, match=r"'fn' parameter of per_class_gc.*eval mode"):
        per_class_gc(model, x, np.arange(8) % 2, estimator=estimator, n_projections=2)
    assert torch.equal(model[1].running_mean, stats)  # refused before any forward pass
    # a closure hides the model: its batch of one (the exact path's first call) names the same fix
    with pytest.raises(
        LatentccError, match=r"'fn' parameter.*eval mode.*per channel.*Fix: call model.eval\(\)"
    ):
        geometric_complexity(lambda z: model(z), x[:1], estimator=estimator, n_projections=2)
    r = geometric_complexity(model.eval(), x, estimator=estimator, n_projections=2)
    assert math.isfinite(r.mean) and r.mean > 0


def test_modes_that_change_nothing_are_allowed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(p=0.0), nn.Tanh()).double().train()
    x = _inputs("mlp", n=4)
    assert (
        geometric_complexity(model, x, estimator="exact").mean
        == geometric_complexity(model.eval(), x, estimator="exact").mean
    )


def test_meta_and_non_numeric_inputs():
    model = _mlp()
    with pytest.raises(LatentccError, match=r"'x' parameter of geometric_complexity.*meta.*Fix"):
        geometric_complexity(model, torch.zeros(4, 5, device="meta"))
    with pytest.raises(
        LatentccError, match=r"'fn' parameter of geometric_complexity.*meta device.*Fix: load"
    ):
        geometric_complexity(model.to("meta"), _inputs("mlp"))
    with pytest.raises(LatentccError, match=r"'x' parameter of geometric_complexity.*dtype object.*Fix"):
        geometric_complexity(_mlp(), np.array([[1, "a", 2, 3, 4]] * 3, dtype=object))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
            r"'x' parameter of geometric_complexity must be on the device of fn's parameters.*Fix: move x",
        ),
        ("expected scalar type Double but found Float", r"'x' parameter.*dtype.*Fix: cast x"),
        ("shape '[2, 7]' is invalid for input of size 10", r"'fn' parameter.*invalid for input.*Fix: check"),
    ],
)
def test_errors_inside_a_callable_are_named(message, match):
    """A callable that hides its model (CUDA model, CPU x: no GPU needed to see the message mapping)."""

    def fn(z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(message)

    for estimator in ("exact", "hutchinson"):
        with pytest.raises(LatentccError, match=match):
            geometric_complexity(fn, _inputs("mlp"), estimator=estimator)


def test_function_defaults_are_the_configs_defaults():
    """One home per default: the probe's GC settings (ProbeConfig) and the GC regulariser's (MethodConfig)."""
    import inspect

    from latentcc.config import MethodConfig, ProbeConfig

    probe, method = ProbeConfig(), MethodConfig()
    for fn in (geometric_complexity, per_class_gc, geometric_collapse):
        params = inspect.signature(fn).parameters
        assert params["estimator"].default == probe.gc_estimator == "hutchinson", fn.__name__
        assert params["n_projections"].default == probe.gc_projections == 8, fn.__name__
    assert inspect.signature(gc_penalty).parameters["n_projections"].default == method.gc_projections == 1
    # and the default call is the Hutchinson estimate with 8 projections
    model, x = _mlp(), _inputs("mlp")
    assert geometric_complexity(model, x) == geometric_complexity(
        model, x, estimator="hutchinson", n_projections=8
    )
