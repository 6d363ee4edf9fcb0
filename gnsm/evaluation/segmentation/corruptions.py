"""Seeded, realistic corruptions of segmentation label maps (2-D masks, 3-D label volumes).

Segmentation quality control needs imperfect predictions whose quality is known exactly.
This module damages ground-truth label maps (2-D masks or 3-D label volumes; every operation is
rank-generic) with a documented family of realistic errors at a ``severity`` in ``[0, 1]`` and
measures each result against its ground truth.

Kinds (:data:`CORRUPTIONS`) and how a severity ``s`` maps to damage. ``s = 0`` returns the ground
truth unchanged; every amount below grows monotonically with ``s``. Each kind draws its random
choices (class order, component order, blob positions, ...) independently of ``s``, so for one
seed a larger ``s`` mostly extends the same damage. Lengths are in units of the finest voxel
spacing (see ``spacing``) and scale with the map's characteristic length
``L = (product of the physical extents) ** (1 / ndim)`` (416 px for a 360 x 480 map), so a severity
means the same relative damage at any resolution. ``P`` is the number of (non-ignore) classes
present in the map.

``erosion``
    ``ceil(s (P - 1) / 2)`` random classes shrink by a radius ``max(1, 0.045 s L)``; the freed
    pixels take the nearest label that is not being eroded.
``dilation``
    ``ceil(s (P - 1) / 2)`` random classes grow by ``max(1, 0.045 s L)`` into their neighbours
    (a grown pixel takes the nearest dilated class).
``class_swap``
    Connected components (random order, larger ones more likely first) are relabelled as a class
    they touch in the map until ``0.45 s`` of the swappable area is relabelled; the last one may
    be relabelled only in part (its pixels nearest to a random seed point of it). A component
    covering more than half of the valid area (a background) is never relabelled and does not
    count in the swappable area.
``missing_object``
    ``ceil(0.8 s n)`` of the ``n`` objects (connected components of ``1e-4`` to 5 % of the valid
    area; at least one) are removed, each filled with the majority label of the 2-voxel shell
    around it (its own class and ``ignore_index`` excluded).
``spurious_object``
    ``1 + floor(5 s)`` blobs (randomly rotated ellipsoids, semi-axes 0.6-1.4 times a radius
    ``(0.03 + 0.10 s) L``) of random insertable classes are painted where that class is not
    (centred where no voxel of the class lies within the radius, if there is such a place).
``blob_noise``
    ``max(1, round(s N))`` small blobs (radii uniform in ``[1, 0.015 L]``), each of a random
    insertable class other than the label at its centre; ``N`` is set so that ``s = 1`` covers
    about 20 % of the valid area.
``shift``
    ``1 + floor(s (P - 1) / 3)`` random whole classes each move by ``max(1, 0.07 s L)`` in a
    random direction; the pixels they leave take the nearest remaining label.

Insertable classes are the non-ignore labels present in the map, or ``classes`` when given (for
example every label of the dataset, so that a spurious class may be absent from the truth).
Pixels whose ground truth is ``ignore_index`` keep that label in the prediction and never count as
errors; no other pixel is ever given ``ignore_index``. A kind that finds nothing to act on (for
example ``class_swap`` on a one-class map) returns the map unchanged.

Evaluation sets built from these are in :mod:`gnsm.evaluation.segmentation.cases`, their Dice / IoU
in :mod:`gnsm.evaluation.segmentation.overlap`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from .overlap import check_ignore_index, check_label_map

__all__ = ["CORRUPTIONS", "DEFAULT_SEVERITIES", "KIND_CODES", "check_kind", "check_severity", "corrupt"]

CORRUPTIONS: tuple[str, ...] = (
    "erosion",
    "dilation",
    "class_swap",
    "missing_object",
    "spurious_object",
    "blob_noise",
    "shift",
)

# Stable codes that enter the per-case seed; never renumber (append new kinds).
KIND_CODES: dict[str, int] = {"clean": 0, "erosion": 1, "dilation": 2, "class_swap": 3,
                              "missing_object": 4, "spurious_object": 5, "blob_noise": 6, "shift": 7}

DEFAULT_SEVERITIES: tuple[float, ...] = (0.1, 0.25, 0.45, 0.7, 1.0)

# Severity-to-damage constants (documented in the module docstring).
_ERODE_R = 0.045         # erosion / dilation radius at s = 1, as a fraction of L
_GROW_CLASSES = 0.5      # erosion / dilation: fraction of the P - 1 classes at s = 1
_SWAP_AREA = 0.45        # class_swap: relabelled fraction of the swappable area at s = 1
_MISS_FRAC = 0.8         # missing_object: fraction of candidate objects removed at s = 1
_OBJ_MIN, _OBJ_MAX = 1e-4, 0.05   # object size range (fraction of the valid area)
_SPUR_MAX = 6            # spurious_object: number of blobs at s = 1
_SPUR_R0, _SPUR_R1 = 0.03, 0.10   # spurious blob radius (0.03 + 0.10 s) * L
_NOISE_R = 0.015         # blob_noise: largest blob radius, fraction of L
_NOISE_AREA = 0.2        # blob_noise: covered fraction of the valid area at s = 1
_SHIFT_D = 0.07          # shift distance at s = 1, fraction of L


# ----------------------------------------------------------------------------- validation
def check_kind(kind) -> str:
    """``kind`` when it is one of :data:`CORRUPTIONS`; else a ValueError naming it."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind: unknown corruption {kind!r}; expected one of {', '.join(CORRUPTIONS)}")
    return kind


def check_severity(severity) -> float:
    """``severity`` as a float in ``[0, 1]``; else a ValueError naming it."""
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, Real):
        raise ValueError(f"severity: expected a number in [0, 1], got {severity!r}")
    s = float(severity)
    if not 0.0 <= s <= 1.0:  # also rejects nan
        raise ValueError(f"severity: expected a number in [0, 1], got {severity!r}")
    return s


def _sampling(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.shape != (ndim,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing: expected {ndim} positive numbers (one per axis), got {spacing!r}")
    return sp / sp.min()


# ----------------------------------------------------------------------------- helpers
def _encode(mask: np.ndarray, extra: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous label ids: ``(ids, labels)`` with ``labels[ids] == mask``; ``extra`` labels added."""
    extra = np.asarray([int(e) for e in extra], dtype=np.int64)
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    mn, mx = int(mask.min()), int(mask.max())
    if mn >= 0 and mx < 1 << 16:
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=mx + 1))
        labels = np.union1d(present, extra).astype(np.int64)
        lut = np.zeros(max(mx, 0) + 1, dtype=np.int32)
        lut[present] = np.searchsorted(labels, present)
        return lut[mask], labels
    labels, inv = np.unique(mask.ravel(), return_inverse=True)
    ids = inv.reshape(mask.shape).astype(np.int32)
    labels = labels.astype(np.int64)
    if extra.size:
        merged = np.union1d(labels, extra)
        ids = np.searchsorted(merged, labels)[ids].astype(np.int32)
        labels = merged
    return ids, labels


def _nearest(source: np.ndarray, sampling: np.ndarray):
    """Distance to, and flat index of, the nearest ``source`` pixel (None when there is none)."""
    if not source.any():
        return None, None
    ind = np.empty((source.ndim, *source.shape), dtype=np.int32)
    dist = ndimage.distance_transform_edt(~source, sampling=sampling, return_indices=True,
                                          indices=ind)
    flat = np.ravel_multi_index(tuple(ind), source.shape)
    return dist, flat


def _bbox(mask: np.ndarray, pad) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``pad[axis]`` voxels (None if ``mask`` is empty)."""
    sl = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == np.bool_ else mask)
    if not sl or sl[0] is None:
        return None
    return tuple(slice(max(0, q.start - int(p)), min(n, q.stop + int(p)))
                 for q, p, n in zip(sl[0], pad, mask.shape))


def _components(ids: np.ndarray, classes: np.ndarray, valid: np.ndarray):
    """Face-connected components of every class: ``(comp, comp_class, sizes)``; comp 0 = none."""
    structure = ndimage.generate_binary_structure(ids.ndim, 1)
    comp = np.zeros(ids.shape, dtype=np.int32)
    comp_class = [-1]
    offset = 0
    boxes = ndimage.find_objects(ids + 1)          # bounding box of every class id
    for c in classes:
        sl = boxes[int(c)] if int(c) < len(boxes) else None
        if sl is None:
            continue
        lab, n = ndimage.label((ids[sl] == c) & valid[sl], structure=structure)
        if n:
            sel = lab > 0
            comp[sl][sel] = lab[sel] + offset
            comp_class.extend([int(c)] * n)
            offset += n
    comp_class = np.asarray(comp_class, dtype=np.int64)
    sizes = np.bincount(comp.ravel(), minlength=offset + 1)
    return comp, comp_class, sizes


def _component_neighbours(comp: np.ndarray, ids: np.ndarray, comp_class: np.ndarray,
                          valid: np.ndarray) -> dict[int, np.ndarray]:
    """For each component, the (sorted) class ids that touch it across a face, ignore excluded."""
    k = int(ids.max()) + 1
    keys = []
    for ax in range(comp.ndim):
        lo = [slice(None)] * comp.ndim
        hi = [slice(None)] * comp.ndim
        lo[ax] = slice(None, -1)
        hi[ax] = slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        for a, b in ((lo, hi), (hi, lo)):
            ca, lb, vb = comp[a], ids[b], valid[b]
            sel = (ca > 0) & vb
            ca, lb = ca[sel], lb[sel]
            diff = comp_class[ca] != lb
            keys.append(ca[diff].astype(np.int64) * k + lb[diff])
    keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    comps, labs = keys // k, keys % k
    out: dict[int, np.ndarray] = {}
    if comps.size:
        starts = np.flatnonzero(np.r_[True, comps[1:] != comps[:-1]])
        for i, st in enumerate(starts):
            en = starts[i + 1] if i + 1 < len(starts) else comps.size
            out[int(comps[st])] = labs[st:en]
    return out


def _char_length(shape, sampling) -> float:
    ext = np.asarray(shape, dtype=np.float64) * sampling
    return float(np.exp(np.log(ext).mean()))


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    return q * np.sign(np.diag(r))


def _ellipsoid(shape, center, axes, rot, sampling):
    """Bool mask (within its bounding box) of a rotated ellipsoid; returns (slices, inside)."""
    reach = float(np.max(axes))
    sl, grids = [], []
    for ax, n in enumerate(shape):
        h = int(math.ceil(reach / sampling[ax]))
        lo, hi = max(0, center[ax] - h), min(n, center[ax] + h + 1)
        sl.append(slice(lo, hi))
        grids.append((np.arange(lo, hi) - center[ax]) * sampling[ax])
    mesh = np.meshgrid(*grids, indexing="ij", sparse=True)
    # coordinates in the ellipsoid frame: y = R^T x
    acc = 0.0
    for j in range(len(shape)):
        y = sum(rot[i, j] * mesh[i] for i in range(len(shape)))
        acc = acc + (y / axes[j]) ** 2
    return tuple(sl), acc <= 1.0


@dataclass
class _Ctx:
    ids: np.ndarray            # contiguous class ids
    labels: np.ndarray         # original label of each id
    valid: np.ndarray          # gt != ignore
    ign: int | None            # id of ignore_index (None if absent / not given)
    present: np.ndarray        # ids present on valid pixels (ignore excluded)
    insertable: np.ndarray     # ids that spurious_object / blob_noise may insert
    sampling: np.ndarray
    L: float
    n_valid: int


# ----------------------------------------------------------------------------- kinds
def _n_classes(s: float, p: int, frac: float) -> int:
    return max(1, min(p - 1, int(math.ceil(s * (p - 1) * frac - 1e-9))))


def _grow(ctx: _Ctx, s: float, rng: np.random.Generator, erode: bool) -> np.ndarray:
    """Erosion (chosen classes shrink) or dilation (chosen classes grow) by one radius."""
    out = ctx.ids.copy()
    p = len(ctx.present)
    order = rng.permutation(ctx.present)
    if p < 2:
        return out
    chosen = order[:_n_classes(s, p, _GROW_CLASSES)]
    radius = max(1.0, _ERODE_R * s * ctx.L)
    in_c = np.isin(ctx.ids, chosen) & ctx.valid
    # only voxels within `radius` of the chosen classes can change: work in that box
    sl = _bbox(in_c, np.ceil(radius / ctx.sampling) + 1)
    if sl is None:
        return out
    in_c, valid, ids = in_c[sl], ctx.valid[sl], ctx.ids[sl]
    source = (~in_c & valid) if erode else in_c
    dist, near = _nearest(source, ctx.sampling)
    if dist is None:
        return out
    sel = (in_c if erode else ~in_c & valid) & (dist <= radius)
    out[sl][sel] = ids.ravel()[near[sel]]
    return out


def _erosion(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    return _grow(ctx, s, rng, erode=True)


def _dilation(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    return _grow(ctx, s, rng, erode=False)


def _class_swap(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    out = ctx.ids.copy()
    comp, comp_class, sizes = _components(ctx.ids, ctx.present, ctx.valid)
    nbrs = _component_neighbours(comp, ctx.ids, comp_class, ctx.valid)
    if ctx.ign is not None:
        nbrs = {c: v[v != ctx.ign] for c, v in nbrs.items()}
    min_size = max(4, int(_OBJ_MIN * ctx.n_valid))
    max_size = ctx.n_valid // 2      # a component covering half the map is background: kept
    cand = np.asarray([c for c, v in nbrs.items() if v.size and min_size <= sizes[c] <= max_size],
                      dtype=np.int64)
    cand.sort()
    u_order = rng.random(cand.size)
    u_nbr = rng.random(cand.size)
    u_seed = rng.random(cand.size)
    if cand.size == 0:
        return out
    # size-weighted random order (Efraimidis-Spirakis keys with weight sqrt(size))
    keys = np.log(np.maximum(u_order, 1e-300)) / np.sqrt(sizes[cand])
    order = np.argsort(-keys, kind="stable")
    swappable = ctx.n_valid - int(sizes[1:][sizes[1:] > max_size].sum())
    budget = max(1, int(round(_SWAP_AREA * s * swappable)))
    slices = ndimage.find_objects(comp)
    done = 0
    for j in order:
        if done >= budget:
            break
        c = int(cand[j])
        nb = nbrs[c]
        new = int(nb[min(int(u_nbr[j] * nb.size), nb.size - 1)])
        sl = slices[c - 1]
        sub = comp[sl] == c
        size = int(sizes[c])
        if size <= budget - done:
            out[sl][sub] = new
            done += size
            continue
        # part of the component: its pixels nearest to a random seed pixel of it
        need = budget - done
        coords = np.nonzero(sub)
        pts = np.stack(coords, axis=1).astype(np.float64) * ctx.sampling
        seed_pt = pts[min(int(u_seed[j] * size), size - 1)]
        d2 = ((pts - seed_pt) ** 2).sum(axis=1)
        take = np.argpartition(d2, need - 1)[:need] if need < size else np.arange(size)
        view = out[sl]
        view[tuple(c_[take] for c_ in coords)] = new
        done += need
    return out


def _missing_object(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    out = ctx.ids.copy()
    comp, comp_class, sizes = _components(ctx.ids, ctx.present, ctx.valid)
    lo = max(4, int(_OBJ_MIN * ctx.n_valid))
    hi = max(lo, int(_OBJ_MAX * ctx.n_valid))
    cand = np.flatnonzero((sizes >= lo) & (sizes <= hi))
    cand = cand[cand > 0]
    order = rng.permutation(cand)
    if cand.size == 0:
        return out
    n = max(1, int(math.ceil(_MISS_FRAC * s * cand.size - 1e-9)))
    slices = ndimage.find_objects(comp)
    structure = ndimage.generate_binary_structure(ctx.ids.ndim, 1)
    k = len(ctx.labels)
    for c in order[:n]:
        c = int(c)
        sl = tuple(slice(max(0, q.start - 2), q.stop + 2) for q in slices[c - 1])
        sub = comp[sl] == c
        shell = ndimage.binary_dilation(sub, structure=structure, iterations=2) & ~sub
        view = out[sl]
        labs = view[shell & ctx.valid[sl]]
        counts = np.bincount(labs, minlength=k)
        counts[comp_class[c]] = 0
        if ctx.ign is not None:
            counts[ctx.ign] = 0
        if counts.sum() == 0:
            continue
        view[sub] = int(np.argmax(counts))
    return out


def _spurious_object(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    out = ctx.ids.copy()
    ins = ctx.insertable
    nd = ctx.ids.ndim
    u_cls = rng.random(_SPUR_MAX)
    u_pos = rng.random(_SPUR_MAX)
    axes_f = rng.uniform(0.6, 1.4, size=(_SPUR_MAX, nd))
    rots = [_random_rotation(rng, nd) for _ in range(_SPUR_MAX)]
    if ins.size == 0:
        return out
    n = 1 + int(math.floor((_SPUR_MAX - 1) * s + 1e-9))
    radius = (_SPUR_R0 + _SPUR_R1 * s) * ctx.L
    for b in range(n):
        c = int(ins[min(int(u_cls[b] * ins.size), ins.size - 1)])
        is_c = ctx.ids == c
        where = ctx.valid & ~is_c
        if is_c.any():
            # centres whose surrounding box (half-width = radius) holds none of class c
            size = 2 * np.ceil(radius / ctx.sampling).astype(np.int64) + 1
            far = where & ~ndimage.maximum_filter(is_c.view(np.uint8), size=tuple(size)).view(bool)
            if far.any():
                where = far
        flat = np.flatnonzero(where)
        if flat.size == 0:
            continue
        center = np.unravel_index(flat[min(int(u_pos[b] * flat.size), flat.size - 1)], ctx.ids.shape)
        sl, inside = _ellipsoid(ctx.ids.shape, center, radius * axes_f[b], rots[b], ctx.sampling)
        view = out[sl]
        view[inside] = c
    return out


def _blob_noise(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    out = ctx.ids.copy()
    ins = ctx.insertable
    nd = ctx.ids.ndim
    r_max = max(1.0, _NOISE_R * ctx.L)
    # mean blob volume for radii uniform in [1, r_max] (ball of the rank)
    unit = math.pi ** (nd / 2) / math.gamma(nd / 2 + 1)
    mean_vol = unit * np.mean(np.linspace(1.0, r_max, 64) ** nd)
    n_max = max(1, int(round(_NOISE_AREA * ctx.n_valid / mean_vol)))
    valid_flat = np.flatnonzero(ctx.valid)
    u_pos = rng.random(n_max)
    u_r = rng.random(n_max)
    u_cls = rng.random(n_max)
    if ins.size == 0 or valid_flat.size == 0:
        return out
    n = max(1, int(round(s * n_max)))
    centers = valid_flat[np.minimum((u_pos[:n] * valid_flat.size).astype(np.int64), valid_flat.size - 1)]
    radii = 1.0 + (r_max - 1.0) * u_r[:n]
    # class of each blob: an insertable class other than the label at its centre
    at = ctx.ids.ravel()[centers]
    pos = np.searchsorted(ins, at)
    in_ins = (pos < ins.size) & (ins[np.minimum(pos, ins.size - 1)] == at)
    if ins.size > 1:
        off = 1 + np.minimum((u_cls[:n] * (ins.size - 1)).astype(np.int64), ins.size - 2)
        cls = np.where(in_ins, ins[(pos + off) % ins.size],
                       ins[np.minimum((u_cls[:n] * ins.size).astype(np.int64), ins.size - 1)])
    else:
        cls = np.full(n, ins[0])
    # one distance transform: each pixel joins its nearest centre's blob when within its radius
    seeds = np.zeros(ctx.ids.shape, dtype=bool)
    seeds.ravel()[centers] = True
    owner = np.full(ctx.ids.size, -1, dtype=np.int64)
    owner[centers] = np.arange(n)          # duplicate centres: the last blob wins
    dist, near = _nearest(seeds, ctx.sampling)
    who = owner[near.ravel()]
    sel = (dist.ravel() <= radii[who]) & ctx.valid.ravel()
    flat_out = out.ravel()
    flat_out[sel] = cls[who[sel]]
    return flat_out.reshape(out.shape)


def _shift_mask(m: np.ndarray, offset) -> np.ndarray:
    res = np.zeros_like(m)
    src, dst = [], []
    for o, n in zip(offset, m.shape):
        o = int(o)
        if abs(o) >= n:
            return res
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    res[tuple(dst)] = m[tuple(src)]
    return res


def _shift(ctx: _Ctx, s: float, rng: np.random.Generator) -> np.ndarray:
    out = ctx.ids.copy()
    p = len(ctx.present)
    nd = ctx.ids.ndim
    order = rng.permutation(ctx.present)
    dirs = rng.standard_normal((max(p, 1), nd))
    if p < 2:
        return out
    n = 1 + int(math.floor(s * (p - 1) / 3 + 1e-9))
    dist = max(1.0, _SHIFT_D * s * ctx.L)
    vacated = np.zeros(out.shape, dtype=bool)
    covered = np.zeros(out.shape, dtype=bool)
    for i in range(n):
        c = int(order[i])
        d = dirs[i] / (np.linalg.norm(dirs[i]) or 1.0)
        off = np.rint(dist * d / ctx.sampling).astype(np.int64)
        if not off.any():
            a = int(np.argmax(np.abs(d)))
            off[a] = 1 if d[a] >= 0 else -1
        m = (ctx.ids == c) & ctx.valid
        moved = _shift_mask(m, off) & ctx.valid
        out[moved] = c
        vacated |= m
        covered |= moved
    holes = vacated & ~covered
    # the pixels a class left (and no moved class covers) take the nearest remaining label
    sl = _bbox(holes, np.ceil(dist / ctx.sampling) + 2)
    if sl is not None:
        h = holes[sl]
        _, near = _nearest(~h & ctx.valid[sl], ctx.sampling)
        if near is not None:
            view = out[sl]
            view[h] = view.ravel()[near[h]]
    return out


_KIND_FN = {
    "erosion": _erosion,
    "dilation": _dilation,
    "class_swap": _class_swap,
    "missing_object": _missing_object,
    "spurious_object": _spurious_object,
    "blob_noise": _blob_noise,
    "shift": _shift,
}


# ----------------------------------------------------------------------------- public API
def corrupt(mask: np.ndarray, kind: str, severity: float, rng=None, ignore_index: int | None = None,
            *, spacing: Sequence[float] | None = None, classes: Iterable[int] | None = None) -> np.ndarray:
    """A corrupted copy of the label map ``mask`` (same shape and dtype).

    Args:
        mask: integer (or bool) label map of any rank (2-D mask, 3-D volume).
        kind: one of :data:`CORRUPTIONS` (see the module docstring for each kind's severity mapping).
        severity: in ``[0, 1]``; 0 returns an unchanged copy, damage grows monotonically with it.
        rng: a ``numpy.random.Generator``, or anything ``numpy.random.default_rng`` accepts.
        ignore_index: label of void pixels; they keep their label and are never given to others.
        spacing: physical voxel spacing per axis (default isotropic); distances and shift
            directions are measured in units of the finest spacing.
        classes: labels that ``spurious_object`` and ``blob_noise`` may insert (default: the
            non-ignore labels present in ``mask``).

    Raises:
        ValueError: unknown ``kind``, ``severity`` outside ``[0, 1]``, non-integer or empty
            ``mask``, bad ``spacing`` or ``ignore_index``.
    """
    mask = check_label_map(mask)
    kind = check_kind(kind)
    s = check_severity(severity)
    ignore = check_ignore_index(ignore_index)
    sampling = _sampling(spacing, mask.ndim)
    if s == 0.0:
        return mask.copy()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    cls = [] if classes is None else [int(c) for c in classes if ignore is None or int(c) != ignore]
    if classes is not None and not cls:
        raise ValueError("classes: expected at least one insertable label other than ignore_index")
    ids, labels = _encode(mask, cls + ([ignore] if ignore is not None else []))
    ign = int(np.searchsorted(labels, ignore)) if ignore is not None else None
    valid = ids != ign if ign is not None else np.ones(mask.shape, dtype=bool)
    present = np.unique(ids[valid]) if valid.any() else np.zeros(0, np.int64)
    insertable = present if classes is None else np.searchsorted(labels, np.unique(cls))
    ctx = _Ctx(ids=ids, labels=labels, valid=valid, ign=ign, present=present.astype(np.int64),
               insertable=np.asarray(insertable, dtype=np.int64), sampling=sampling,
               L=_char_length(mask.shape, sampling), n_valid=int(valid.sum()))
    out_ids = _KIND_FN[kind](ctx, s, rng)
    if ign is not None:
        # void stays void, and nothing else becomes void
        out_ids[~valid] = ign
        bad = valid & (out_ids == ign)
        out_ids[bad] = ids[bad]
    out = labels[out_ids]
    if mask.dtype == np.bool_:
        return out.astype(np.bool_)
    return out.astype(mask.dtype, copy=False)
