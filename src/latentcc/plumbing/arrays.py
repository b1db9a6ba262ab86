"""The float64-exact frames that the engine computes on: :class:`Matrix`, a validated (N, D) matrix.

Validation (which containers and dtypes are accepted) is :func:`latentcc.plumbing.validate.as_matrix`, the
one door that builds a :class:`Matrix`. k-NN search and graph, PCA, LCC targets, the epoch start, clustering,
probes and neural collapse all compute on its views, so they share the precision guarantees below.
float64 and integers wider than 16 bits are worked on in float64 (float32 holds integers exactly only up
to 2^24), everything else in float32.

Precision. Searches and clusterings compute squared distances as ``|a|^2 + |b|^2 - 2 a.b``, whose
rounding error grows with ``|a|^2``, not with the distances: in float32, latents around 1e5 with a
spread of 1e-3 all tie at distance 0 and get arbitrary neighbours. Distances, k-NN graphs, PCA scores,
Ward and k-means do not change when the data is translated, so :meth:`Matrix.centred` subtracts each
column's midrange in float64 *before* the float32 cast (and multiplies by the exact power of two of
:func:`latentcc.plumbing.scaling.pow2_scale` when the centred values would overflow or vanish in squares). The
float32 matrix then holds the geometry of the data to float32's relative precision wherever it sits.

Cosine similarity does depend on where the data sits, so cosine searches never translate the data:
:meth:`Matrix.unit_rows` forms the unit rows ``u = x / |x|`` of the rows *as given* and translates
*them* instead. A translation of the unit vectors keeps their squared distances ``|u - v|^2 =
2 - 2 cos``, so a float32 L2 search on them ranks neighbours exactly by cosine. Data far from the
origin has nearly parallel rows (around 1e4 with a spread of 1 the unit rows differ by 1e-4, around
1e12 with a spread of 1e-2 by 1e-14): float32 would round all their unit rows to the same vector.
So each unit row's difference to the direction of the column midranges is computed in float64 without
cancellation (formula in :meth:`Matrix.unit_rows`), centred and rescaled by a power of two before the
float32 cast: the cosine neighbours are those of the data to float64's precision.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from latentcc.plumbing.errors import param_error
from latentcc.plumbing.scaling import pow2_scale

# Elements per row block of a conversion pass (32 MiB of float64): memory maps are never read whole.
_BLOCK_ELEMS = 1 << 22
# (anchor, shift, scale) of the unit rows of a cosine search: see Matrix.unit_rows.
UnitFrame = tuple[np.ndarray | None, np.ndarray, float]


class Matrix:
    """A validated (N, D) matrix and the float32 views of it that the engine computes on.

    ``data`` is the input as given: a numpy array (float16/32/64, integer or bool; a bfloat16 tensor
    becomes float32, an object array float64), or a detached tensor left on its accelerator when the
    caller asked for that (``as_matrix(..., keep_device=True)``). ``work_dtype`` is float64 for float64
    and wide-integer inputs, float32 otherwise.
    """

    __slots__ = ("_centred", "_hi", "_lo", "_unit", "data", "func", "param", "work_dtype")

    def __init__(self, data: np.ndarray | torch.Tensor, param: str, func: str, work_dtype: type) -> None:
        self.data = data
        self.param = param
        self.func = func
        self.work_dtype = work_dtype
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None
        self._centred: np.ndarray | torch.Tensor | None = None
        self._unit: tuple[np.ndarray | None, np.ndarray, np.ndarray] | None = None  # anchor, lo, hi

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def shift(self) -> np.ndarray:
        """(D,) float64 column midranges: the translation :meth:`centred` removes."""
        lo, hi = self.bounds()
        return lo / 2 + hi / 2  # halves first: no overflow near float64's limit

    @property
    def scale(self) -> float:
        """The power of two :meth:`centred` multiplies by (1.0 unless the centred values are extreme)."""
        lo, hi = self.bounds()
        return pow2_scale(float((hi / 2 - lo / 2).max()))

    def values(self) -> np.ndarray:
        """The data as a numpy array of ``work_dtype`` (no copy when it already is one)."""
        src = self.data.cpu().numpy() if isinstance(self.data, torch.Tensor) else self.data
        return np.asarray(src, dtype=self.work_dtype)

    def centred(
        self, dtype: type = np.float32, *, shift: np.ndarray | None = None, scale: float | None = None
    ) -> np.ndarray | torch.Tensor:
        """``(x - shift) * scale`` as a C-contiguous ``dtype`` matrix, computed in float64 row blocks.

        Defaults: this matrix's own :attr:`shift` and :attr:`scale` (the float32 result is cached, so
        the stages of one epoch start share one copy). A tensor kept on its accelerator stays there
        (float64 arithmetic where the device has it, float32 on MPS).
        """
        default = shift is None and scale is None and dtype is np.float32
        if default and self._centred is not None:
            return self._centred
        c = self.shift if shift is None else shift
        s = self.scale if scale is None else scale
        out = _affine(self.data, c, s, dtype)
        if default:
            self._centred = out
        return out

    @property
    def unit_anchor(self) -> np.ndarray | None:
        """The (D,) vector whose direction :meth:`unit_rows` subtracts from every unit row: the column
        midranges (:attr:`shift`) when the rows sit far from the origin relative to their spread (each
        row within half the midranges' norm of them), else None (plain unit rows suffice)."""
        return self._unit_cache()[0]

    def unit_frame(self) -> UnitFrame:
        """(anchor, shift, scale) of :meth:`unit_rows`: :attr:`unit_anchor`, then the column midranges of
        the anchored unit rows and the power of two that brings their spread into [1, 2) if it is
        below 2^-24 (nearly parallel rows)."""
        anchor, lo, hi = self._unit_cache()
        return anchor, lo / 2 + hi / 2, pow2_scale(float((hi / 2 - lo / 2).max()))

    def unit_rows(
        self, dtype: type = np.float32, *, frame: UnitFrame | None = None
    ) -> np.ndarray | torch.Tensor:
        """``(x / |x| - anchor / |anchor| - shift) * scale`` for ``frame = (anchor, shift, scale)``
        (default :meth:`unit_frame`; no anchor term when it is None), as a C-contiguous ``dtype`` matrix:
        the input of cosine searches.

        Every row is translated by the same vector, so squared L2 distances of the result are
        ``scale^2 (2 - 2 cos)`` and an L2 search on it ranks by the cosine of the rows as given. The
        difference to the anchor is computed without cancellation (``x = c + a`` with ``a = x - c``:
        ``x/|x| - c/|c| = a/|x| - (c/|c|) (2 c.a + |a|^2) / (|x| (|c| + |x|))``), so directions that
        differ by 1e-14 keep their differences to float64's relative precision; then the translation
        keeps the float32 cast from rounding them together (module docstring). Computed in float64
        row blocks (float32 on MPS) after exact power-of-two rescales, so norms neither overflow nor
        vanish. All-zero rows have no direction and raise.
        """
        anchor, shift, scale = self.unit_frame() if frame is None else frame
        return _affine(self.data, anchor, self._norm_scale(anchor), dtype, unit=True, then=(shift, scale))

    def _norm_scale(self, anchor: np.ndarray | None) -> float:
        """The power of two that brings max |x| into [1, 2) if extreme, so squares of norms stay finite,
        for anchored unit rows (1.0 without an anchor: then each row gets its own power of two)."""
        if anchor is None:
            return 1.0
        lo, hi = self.bounds()
        return pow2_scale(float(max(np.abs(lo).max(), np.abs(hi).max())))

    def _unit_cache(self) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(anchor, column minima, column maxima) of the anchored unit rows, computed once."""
        if self._unit is None:
            lo, hi = self.bounds()
            c = self.shift
            s = self._norm_scale(c)
            n0 = float(np.linalg.norm(c * s))  # scaled: the norms of extreme data stay finite
            anchor = c if n0 > 0 and float(np.linalg.norm((hi / 2 - lo / 2) * s)) <= n0 / 2 else None
            self._unit = (anchor, *self._unit_bounds(anchor))
        return self._unit

    def _unit_bounds(self, anchor: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Column minima and maxima of the float64 unit rows anchored at ``anchor`` (one blocked pass);
        all-zero rows raise."""
        zero: list[np.ndarray] = []
        lo, hi = _unit_bounds(self.data, anchor, self._norm_scale(anchor), zero)
        rows = np.concatenate(zero) if zero else np.zeros(0, dtype=np.int64)
        if rows.size:
            raise param_error(
                self.param,
                self.func,
                "free of all-zero rows when metric='cosine' (their cosine distance is undefined)",
                f"{rows.size} all-zero rows (first: {', '.join(str(i) for i in rows[:5])})",
                "Fix: use metric='l2', or drop those samples.",
            )
        return lo, hi

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(D,) float64 column minima and maxima of the finite rows (one blocked pass, computed once)."""
        if self._lo is None or self._hi is None:
            self._scan(check_finite=False)
        assert self._lo is not None and self._hi is not None
        return self._lo, self._hi

    def check_finite(self) -> None:
        """Raise (naming the first rows) if any row holds NaN/inf; the same pass finds the column ranges."""
        self._scan(check_finite=True)

    def _scan(self, *, check_finite: bool) -> None:
        """One pass: column minima and maxima, and (``check_finite``) the rows holding NaN/inf."""
        bad, self._lo, self._hi = _scan(self.data)
        if check_finite and bad.size:
            raise param_error(
                self.param,
                self.func,
                "finite",
                f"{bad.size} of {len(self)} rows with NaN/inf (first: {', '.join(str(i) for i in bad[:5])})",
                "Check the layer for overflow (e.g. float16) or a diverged model (lower the learning "
                "rate). Fix: drop or repair those rows.",
            )


def joint_frame(first: Matrix, *others: Matrix) -> tuple[np.ndarray, float]:
    """(shift, scale) of ``first``, with a scale that also keeps ``others`` finite once shifted by it.

    For two sets searched against each other (train and test features): one translation for both.
    """
    shift = first.shift
    extent = 0.0
    for m in (first, *others):
        lo, hi = m.bounds()
        extent = max(extent, float(np.abs(hi - shift).max()), float(np.abs(lo - shift).max()))
    return shift, pow2_scale(extent)


def joint_unit_frame(first: Matrix, *others: Matrix) -> UnitFrame:
    """:meth:`Matrix.unit_frame` of ``first``, with a scale that also covers the unit rows of ``others``
    (anchored alike): the frame of two sets searched against each other by cosine."""
    anchor, shift, _ = first.unit_frame()
    extent = 0.0
    for m in (first, *others):
        lo, hi = m._unit_cache()[1:] if m is first else m._unit_bounds(anchor)
        extent = max(extent, float(np.abs(hi - shift).max()), float(np.abs(lo - shift).max()))
    return anchor, shift, pow2_scale(extent)


def _step(d: int) -> int:
    return max(1, _BLOCK_ELEMS // max(1, d))


def _scan(data: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows with NaN/inf, column minima, column maxima as float64), in one pass of row blocks."""
    if isinstance(data, torch.Tensor):
        t = data if data.dtype != torch.bool else data.to(torch.uint8)
        bad_t = ~torch.isfinite(t).all(dim=1) if t.is_floating_point() else None
        lo_t, hi_t = torch.aminmax(t, dim=0)
        # sync point, once per call
        bad = torch.nonzero(bad_t).flatten().cpu().numpy() if bad_t is not None else np.zeros(0, np.int64)
        return bad, lo_t.double().cpu().numpy(), hi_t.double().cpu().numpy()
    n, d = data.shape
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    bad_parts: list[np.ndarray] = []
    is_float = data.dtype.kind == "f"
    step = _step(d)
    for s in range(0, n, step):
        blk = data[s : s + step]
        if blk.dtype == np.bool_:
            blk = blk.view(np.uint8)
        if is_float:
            ok = np.isfinite(blk).all(axis=1)
            if not ok.all():
                bad_parts.append(np.flatnonzero(~ok) + s)
                blk = blk[ok]
                if not len(blk):
                    continue
        np.minimum(lo, blk.min(axis=0), out=lo)
        np.maximum(hi, blk.max(axis=0), out=hi)
    if not np.isfinite(lo).all():  # every row non-finite: any finite frame will do, the caller raises
        lo, hi = np.zeros(d), np.zeros(d)
    bad = np.concatenate(bad_parts) if bad_parts else np.zeros(0, dtype=np.int64)
    return bad, lo, hi


def _unit_bounds(
    data: np.ndarray | torch.Tensor, anchor: np.ndarray | None, scale: float, zero_rows: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 column minima and maxima of the anchored unit rows (:meth:`Matrix.unit_rows`);
    all-zero rows go to ``zero_rows``."""
    d = data.shape[1]
    lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
    if isinstance(data, torch.Tensor):
        for _, b in _blocks_torch(data, anchor, scale, True, zero_rows):
            b_lo, b_hi = torch.aminmax(b, dim=0)
            np.minimum(lo, b_lo.double().cpu().numpy(), out=lo)  # sync point, once per row block
            np.maximum(hi, b_hi.double().cpu().numpy(), out=hi)
    else:
        for _, blk in _blocks(data, anchor, scale, True, zero_rows):
            np.minimum(lo, blk.min(axis=0), out=lo)
            np.maximum(hi, blk.max(axis=0), out=hi)
    return lo, hi


def _affine(
    data: np.ndarray | torch.Tensor,
    shift: np.ndarray | None,
    scale: float,
    dtype: type,
    *,
    unit: bool = False,
    then: tuple[np.ndarray, float] | None = None,
) -> np.ndarray | torch.Tensor:
    """The blocks of :func:`_blocks`, then translated by ``then[0]`` and multiplied by ``then[1]``, in
    float64 into a new C-contiguous ``dtype`` array (a tensor on an accelerator stays there)."""
    n, d = data.shape
    if isinstance(data, torch.Tensor):
        tdt = torch.float64 if dtype is np.float64 else torch.float32
        out_t = torch.empty((n, d), dtype=tdt, device=data.device)
        for s, b in _blocks_torch(data, shift, scale, unit, None):
            if then is not None:
                b = (b - torch.as_tensor(then[0], dtype=b.dtype, device=b.device)) * then[1]
            out_t[s : s + len(b)] = b
        return out_t
    out: np.ndarray = np.empty((n, d), dtype=dtype)
    for s, blk in _blocks(data, shift, scale, unit, None):
        if then is not None:
            blk -= then[0]
            blk *= then[1]
        with np.errstate(over="ignore"):  # beyond float32's range: inf, as the caller documents
            out[s : s + len(blk)] = blk
    return out


def _blocks(
    data: np.ndarray,
    shift: np.ndarray | None,
    scale: float,
    unit: bool,
    zero_rows: list[np.ndarray] | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float64 block): ``(x - shift) * scale``; or with ``unit`` the unit rows minus the
    unit anchor ``shift / |shift|`` (:meth:`Matrix.unit_rows`; plain unit rows when shift is None),
    with all-zero rows collected in ``zero_rows``."""
    n, d = data.shape
    step = _step(d)
    c = None if shift is None else shift * scale  # exact: scale is a power of two
    for s in range(0, n, step):
        blk = data[s : s + step].astype(np.float64)  # a copy: the caller's array is never written
        if unit:
            if scale != 1.0:
                blk *= scale
            blk, nx = _unit_np(blk, c)
            if zero_rows is not None:
                zero_rows.append(np.flatnonzero(nx == 0) + s)
        else:
            if shift is not None:
                blk -= shift
            if scale != 1.0:
                blk *= scale
        yield s, blk


def _unit_np(x: np.ndarray, c: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(x/|x| - c/|c| row by row, or x/|x| when c is None; the norms |x|, 0 for all-zero rows)."""
    if c is None:
        # each row times the power of two that brings its largest |entry| into [0.5, 1): exact, and
        # the squares of the norm can neither overflow nor vanish (rows of 1e-200 and 1e200 alike)
        x = np.ldexp(x, -np.frexp(np.abs(x).max(axis=1))[1][:, None])
    nx = np.sqrt(np.einsum("ij,ij->i", x, x))
    safe = np.where(nx > 0, nx, 1.0)[:, None]
    if c is None:
        return x / safe, nx
    # x/|x| - c/|c| without cancellation, with a = x - c exact to its own precision (Matrix.unit_rows)
    a = x - c
    n0 = float(np.sqrt(c @ c))
    radial = (2.0 * (a @ c) + np.einsum("ij,ij->i", a, a))[:, None] / (safe * (n0 + safe))
    return a / safe - (c / n0) * radial, nx


def _blocks_torch(
    data: torch.Tensor,
    shift: np.ndarray | None,
    scale: float,
    unit: bool,
    zero_rows: list[np.ndarray] | None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`_blocks` on the tensor's own device (float32 arithmetic on MPS, which has no float64)."""
    n, d = data.shape
    calc = torch.float32 if data.device.type == "mps" else torch.float64
    c = None if shift is None else torch.as_tensor(shift, dtype=calc, device=data.device)
    step = _step(d)
    for s in range(0, n, step):
        b = data[s : s + step].to(calc)
        if unit:
            if scale != 1.0:
                b = b * scale
            b, nx = _unit_torch(b, None if c is None else c * scale)
            if zero_rows is not None:
                zero_rows.append(torch.nonzero(nx == 0).flatten().cpu().numpy() + s)
        else:
            if c is not None:
                b = b - c
            if scale != 1.0:
                b = b * scale
        yield s, b


def _unit_torch(x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_unit_np` on the tensor's device."""
    if c is None:
        # ldexp multiplies by 2**e, so e is clamped to keep 2**e finite: subnormal rows get most of the way
        lim = 1000 if x.dtype == torch.float64 else 120
        e = torch.frexp(x.abs().amax(dim=1, keepdim=True)).exponent.clamp(-lim, lim)
        x = torch.ldexp(x, -e.to(x.dtype))
    nx = torch.linalg.vector_norm(x, dim=1)
    safe = torch.where(nx > 0, nx, torch.ones_like(nx))[:, None]
    if c is None:
        return x / safe, nx
    a = x - c
    n0 = torch.linalg.vector_norm(c)
    radial = (2.0 * (a @ c) + (a * a).sum(dim=1))[:, None] / (safe * (n0 + safe))
    return a / safe - (c / n0) * radial, nx
