"""PIL images of any mode and bit depth -> ``(C, H, W)`` pixel arrays on one scale, [0, 1].

Pillow's ``convert("L")`` / ``convert("RGB")`` clips deeper images to 8 bits instead of scaling them:
every pixel of a 16-bit PNG above 255 becomes 255, so a 16-bit image would read as all 1.0. Each
mode is therefore read at its own range here:

======================================  ==========================================================
Pillow mode                              how its values reach [0, 1]
======================================  ==========================================================
1, L, P, RGB, RGBX, CMYK, YCbCr, HSV     8-bit: converted to L or RGB by Pillow, then / 255 (stored
                                         as uint8)
LAB                                      8-bit CIE L*a*b* (a*, b* signed bytes, as TIFF CIELab):
                                         converted to sRGB by Pillow, then as above (a* = b* = 0
                                         is gray: L* = 20 / 80 -> 48 / 198)
LA, PA, RGBA, RGBa, a transparency key   8-bit with alpha: composited onto white (as a browser
                                         shows them), then as above
I;16, I;16L, I;16B, I;16N                16-bit unsigned: / 65535 (stored as float32); pixels equal
                                         to a transparent-colour key (PNG tRNS) are white, as at 8 bits
I (32-bit int)                           a TIFF: / (2**bits - 1) of its declared unsigned bits; a
                                         PNG or PNM (16-bit samples that Pillow widens): / 65535;
                                         signed TIFFs and other sources: refused (no fixed range)
F (32-bit float)                         kept when every value is finite and in [0, 1]; else refused
======================================  ==========================================================

Grayscale results are repeated to 3 channels for RGB; RGB becomes gray with Pillow's ITU-R 601-2 luma.

Arrays of pixels (``from_arrays``, array columns of Hugging Face datasets) follow the same rule with the
dtype in place of the mode (:func:`array_pixels`): an integer dtype is scaled by its own range, never by
the values it happens to hold, so a dark 16-bit image is not mistaken for a bright 8-bit one.

======================================  ==========================================================
array dtype                              how its values reach [0, 1]
======================================  ==========================================================
uint8                                    / 255 (stored as uint8)
uint16                                   / 65535 (stored as float32), as a 16-bit PNG
other integers (int8..int64, uint32,     no pixel range of their own: values in 0..255 are read as
uint64)                                  8-bit (/ 255; an int 0/1 mask becomes 0 and 1/255 =
                                         0.0039), other values are refused
float16, float32, float64                kept when every value is finite and in [0, 1]; else refused
bool                                     refused (a mask: say what True means, see the fix)
======================================  ==========================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentcc.plumbing.errors import LatentccError, param_error

# Modes holding 16-bit unsigned samples.
_UINT16 = ("I;16", "I;16L", "I;16B", "I;16N")
# Formats whose "I" images hold 16-bit samples widened to 32 bits by Pillow (PNM scales any maxval to 65535).
_SIXTEEN_BIT_AS_I = ("PNG", "PPM")
# Modes with an alpha channel; other modes may name a transparent colour in info["transparency"].
_ALPHA_MODES = ("LA", "PA", "RGBA", "RGBa", "La")
_RESAVE = (
    "Fix: save it as 8-bit (L or RGB), 16-bit unsigned (I;16) or 32-bit float (F) with values in [0, 1]."
)
# Full intensity of the integer pixel dtypes that declare a range (8-bit and 16-bit unsigned, as the modes
# L and I;16). Every other integer dtype is read on the 8-bit scale and must hold values in 0..255.
UINT8_TOP = 255
UINT16_TOP = 65535


def pil_to_chw(img: Any, mode: str, hw: tuple[int, int], where: str) -> np.ndarray:
    """``(C, H, W)`` pixels of a PIL image as ``mode`` ("L": C = 1, "RGB": C = 3), resized to ``hw``.

    uint8 (0..255, i.e. value / 255) for 8-bit images, float32 in [0, 1] for deeper ones; see the module
    docs for each mode. ``where`` names the image in errors (a file path, a dataset row).
    """
    deep = _deep_plane(img, where)
    if deep is not None:
        return _float_chw(deep, 1 if mode == "L" else 3, hw)
    return _uint8_chw(img, mode, hw, where)


def _deep_plane(img: Any, where: str) -> np.ndarray | None:
    """The (H, W) float64 values in [0, 1] of a 16-bit, 32-bit int or float image; None for 8-bit modes."""
    if img.mode in _UINT16:
        values = np.asarray(img).astype(np.float64)  # np.asarray honours the byte order (I;16B)
        return _key_to_white(img, values, values / UINT16_TOP)
    if img.mode == "I":
        top = _int_range(img, where)
        values = np.asarray(img).astype(np.float64)
        lo, hi = _range(values)
        if lo < 0 or hi > top:  # e.g. a PNM's widened samples can never exceed 65535; a guard, not a guess
            raise LatentccError(
                f"The image {where} has mode 'I' with values from {lo:g} to {hi:g}, outside its range 0..{top}. "
                + _RESAVE
            )
        return _key_to_white(img, values, values / float(top))
    if img.mode == "F":
        values = np.asarray(img).astype(np.float64)
        finite = bool(np.isfinite(values).all())
        lo, hi = _range(values)
        if not finite or lo < 0.0 or hi > 1.0:
            got = "non-finite values (NaN or inf)" if not finite else f"values from {lo:g} to {hi:g}"
            raise LatentccError(
                f"The image {where} has mode 'F' (32-bit float) with {got}; float pixels must lie in [0, 1], "
                "since a float image declares no range to scale by. Fix: rescale the file to [0, 1], or save "
                "it as 8-bit (L or RGB) or 16-bit unsigned (I;16) integers."
            )
        return values
    return None


def _key_to_white(img: Any, raw: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``unit`` with the pixels whose ``raw`` value is the image's transparent-colour key set to white (1.0).

    A grayscale PNG may name one sample value transparent (a tRNS chunk, ``info["transparency"]``) at any bit
    depth. The 8-bit path composites such pixels onto white through Pillow's RGBA conversion; Pillow has no
    such conversion for 16-bit images, so the key is applied here and every bit depth reads the same.
    """
    key = img.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):  # a gray key; bytes/tuples belong to other modes
        unit = unit.copy()
        unit[raw == key] = 1.0
    return unit


def _range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values, (0, 0) when there are none."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def _int_range(img: Any, where: str) -> int:
    """The largest value of an "I" (32-bit int) image's samples, from what its file declares."""
    tags = getattr(img, "tag_v2", None)
    if tags is not None:  # a TIFF declares its sample format: 1 unsigned, 2 signed, 3 float
        bits = int(tags.get(258, (32,))[0])
        fmt = int(tags.get(339, (1,))[0])
        if fmt == 1:
            return 2**bits - 1
        kind = "signed integers" if fmt == 2 else f"samples of format {fmt}"
        raise LatentccError(
            f"The image {where} is a TIFF of {bits}-bit {kind} (mode 'I'): they have no fixed range to scale "
            f"to [0, 1]. {_RESAVE}"
        )
    if img.format in _SIXTEEN_BIT_AS_I:
        return 65535
    raise LatentccError(
        f"The image {where} has mode 'I' (32-bit integers, format {img.format or 'unknown'}), which declares no "
        f"range to scale to [0, 1]. {_RESAVE}"
    )


def _float_chw(plane: np.ndarray, channels: int, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if plane.shape != hw:
        # Pillow's "F" mode resizes float data without quantising it
        resized = Image.fromarray(plane.astype(np.float32), mode="F").resize(
            (hw[1], hw[0]), Image.Resampling.BILINEAR
        )
        plane = np.asarray(resized, dtype=np.float64)
    out = np.clip(plane, 0.0, 1.0).astype(np.float32)  # interpolation rounding must not leave [0, 1]
    return np.repeat(out[None], channels, axis=0)


def _uint8_chw(img: Any, mode: str, hw: tuple[int, int], where: str) -> np.ndarray:
    from PIL import Image

    try:
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            # Under a transparent pixel any colour may be stored; white is what a viewer shows there.
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba).convert("RGB")
        elif img.mode not in ("1", "L", "P", "RGB"):
            # colour spaces (CMYK, YCbCr, HSV, LAB...): Pillow converts them to RGB; LAB colour-managed (Pillow
            # >= 9.3 gives the same sRGB as littleCMS; older ones refuse, caught below)
            img = img.convert("RGB")
        img = img.convert(mode)
    except ValueError as e:  # "conversion from X to Y not supported"
        raise LatentccError(
            f"The image {where} has mode {img.mode!r}, which cannot be converted to {mode} ({e}). {_RESAVE}"
        ) from e
    if (img.height, img.width) != hw:
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# ----------------------------------------------------------------------------- arrays of pixels


def array_pixels(arr: np.ndarray, param: str, func: str) -> np.ndarray:
    """Image pixels of any numeric dtype on the one scale: uint8 (meaning value / 255) or float32 in [0, 1].

    The dtype decides (module docs): uint8 kept; uint16 / 65535; other integer dtypes 0..255 as 8-bit, other
    values refused; floats kept when finite and in [0, 1]. ``param`` / ``func`` name the array in errors.
    Works on numpy (torch has no arithmetic for uint16), any shape; the result may share memory with ``arr``.
    """
    kind = arr.dtype.kind
    if kind == "b":
        raise param_error(
            param, func, "numeric image pixels (uint8 0..255, uint16 0..65535 or floats in [0, 1])",
            f"an array of dtype {arr.dtype}",
            "A bool mask has no brightness of its own. Fix: x.astype(np.float32) for black 0.0 / white 1.0.",
        )  # fmt: skip
    if kind == "f":
        values = arr.astype(np.float32, copy=False)  # float16 and float64 too: the storage is float32
        finite = bool(np.isfinite(values).all())
        lo, hi = (float(values.min()), float(values.max())) if finite and values.size else (0.0, 0.0)
        if not finite or lo < 0.0 or hi > 1.0:
            raise param_error(
                param, func, "float images with values in [0, 1] (unnormalised; models normalise themselves)",
                "non-finite values (NaN or inf)" if not finite else f"values from {lo:g} to {hi:g}",
                "Fix: pass uint8 pixels 0..255 (or uint16 0..65535), or divide by the maximum pixel value.",
            )  # fmt: skip
        return values
    if kind not in "iu":
        raise param_error(param, func, "numeric image pixels", f"an array of dtype {arr.dtype}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:  # the dtype declares 16 bits, whatever values this array holds
        return to_unit(arr, UINT16_TOP)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > UINT8_TOP:
        raise param_error(
            param, func, f"integer pixels in 0..255 for dtype {arr.dtype} (only uint8 and uint16 declare a "
            "pixel range; other integer dtypes are read as 8-bit)", f"values from {lo} to {hi}",
            "Fix: x.astype(np.uint16) for 16-bit pixels (0..65535), or floats in [0, 1] (x / the maximum "
            "possible value).",
        )  # fmt: skip
    return arr.astype(np.uint8)


def to_unit(values: np.ndarray, top: float) -> np.ndarray:
    """``values / top`` as float32 in [0, 1] (computed in float64: 65535 levels are exact)."""
    return (values.astype(np.float64) / float(top)).astype(np.float32)


def unit_pixels(pixels: np.ndarray) -> np.ndarray:
    """Stored pixels (uint8 or float32, as :func:`array_pixels` returns) as float32 in [0, 1]."""
    return to_unit(pixels, UINT8_TOP) if pixels.dtype == np.uint8 else pixels.astype(np.float32, copy=False)


__all__ = ["UINT8_TOP", "UINT16_TOP", "array_pixels", "pil_to_chw", "to_unit", "unit_pixels"]
