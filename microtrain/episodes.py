"""Few-shot episodes (DESIGN §6): N-way K-shot and Meta-Dataset's varying-way varying-shot samplers, the
P>M>F / DiffAugment-style augmentation of support images, and the 95% confidence interval over episodes.

Sampling is split in two so the rules can be checked cheaply: `describe_*` draws which images form an
episode (class ids and per-class image indices, from a numpy Generator), `load_episode` loads them. The
same Generator state gives the same episode.
"""

import math
from dataclasses import dataclass

import numpy as np

from microtrain.errors import DataError, InputError

# Meta-Dataset's test-time episode defaults (Triantafillou et al. 2020; google-research/meta-dataset
# data/config.py EpisodeDescriptionConfig, as used by P>M>F datasets/meta_dataset/sampling.py).
MAX_SUPPORT_CONTRIB_PER_CLASS = 100
MIN_LOG_WEIGHT = math.log(0.5)
MAX_LOG_WEIGHT = math.log(2.0)


@dataclass(frozen=True)
class EpisodeDescription:
    """Which images form an episode. class_ids: int64 (ways,) dataset classes, label l is class_ids[l];
    support[l], query[l]: int64 image indices within class class_ids[l] (disjoint); group: the group drawn
    first by a bilevel sampler, else None."""
    class_ids: np.ndarray
    support: tuple
    query: tuple
    group: object = None

    @property
    def ways(self):
        return len(self.class_ids)

    @property
    def shots(self):
        """int64 (ways,): support images per class."""
        return np.array([len(s) for s in self.support], np.int64)

    @property
    def queries(self):
        """int64 (ways,): query images per class."""
        return np.array([len(q) for q in self.query], np.int64)


@dataclass(frozen=True)
class Episode:
    """A loaded episode, support and query ordered by label, each class's images in drawn order.

    support_x uint8 (Ns, S, S, 3), support_y int64 (Ns,) in [0, ways); query_x uint8 (Nq, S, S, 3),
    query_y int64 (Nq,); class_ids int64 (ways,): dataset class of each label; support_index,
    query_index int64 (Ns,), (Nq,): each image's index within its class; group as in EpisodeDescription.
    """
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    class_ids: np.ndarray
    support_index: np.ndarray
    query_index: np.ndarray
    group: object = None

    @property
    def ways(self):
        return len(self.class_ids)


# ---------------------------------------------------------------------------------------------------- N-way K-shot

def describe_nway_kshot(dataset, ways, shots, queries, rng):
    """EpisodeDescription of `ways` classes drawn uniformly without replacement from all classes, each with
    `shots` support and `queries` query images drawn without replacement (disjoint).

    Raises DataError if the dataset has fewer than `ways` classes, or any class fewer than shots + queries
    images (checked over all classes, so whether it fails does not depend on the seed).
    """
    ways, shots, queries = int(ways), int(shots), int(queries)
    if ways < 1 or shots < 1 or queries < 0:
        raise DataError(f"an episode needs ways >= 1, shots >= 1, queries >= 0; got {ways}, {shots}, {queries}")
    if dataset.num_classes < ways:
        raise DataError(f"{dataset.name} has {dataset.num_classes} classes; a {ways}-way episode needs at least {ways}")
    need = shots + queries
    _require_images(dataset, np.arange(dataset.num_classes), need,
                    f"a {shots}-shot episode with {queries} queries per class needs {need} (shots + queries); "
                    "lower shots or queries")
    class_ids = rng.choice(dataset.num_classes, ways, replace=False).astype(np.int64)
    support, query = [], []
    for c in class_ids:
        perm = rng.permutation(int(dataset.class_sizes[c]))[:need]
        query.append(perm[:queries].astype(np.int64))
        support.append(perm[queries:].astype(np.int64))
    return EpisodeDescription(class_ids, tuple(support), tuple(query))


def sample_nway_kshot(dataset, ways, shots, queries, rng):
    """Episode with `ways` classes, `shots` support and `queries` query images each; see describe_nway_kshot."""
    return load_episode(dataset, describe_nway_kshot(dataset, ways, shots, queries, rng))


# ---------------------------------------------------------------------------------------------------- Meta-Dataset

def describe_meta_dataset(dataset, rng, max_ways=50, max_support=500, max_query_per_class=10, min_ways=5,
                          bilevel=None):
    """EpisodeDescription from Meta-Dataset's varying-way varying-shot test sampler.

    Source: Triantafillou et al., "Meta-Dataset", ICLR 2020, §3.2, as implemented in google-research/
    meta-dataset `data/sampling.py` (EpisodeDescriptionSampler, compute_num_query, sample_support_set_size,
    sample_num_support_per_class), which P>M>F (Hu et al. 2022) and TinyTrain (Kwon et al. 2024) use for
    their Meta-Dataset results; rules as in background/tinytrain-paper.md §2.3:

    1. ways ~ UniformInt[min_ways, min(max_ways, #classes)], classes uniformly without replacement.
       Bilevel (default when the dataset has groups, i.e. Omniglot): first a group (alphabet) uniformly,
       then ways ~ UniformInt[min_ways, min(max_ways, #classes in the group)] and classes within it.
    2. query per class q = min(max_query_per_class, min_c floor(|c| / 2)), the same for every class.
    3. support size, beta ~ U[0, 1): |S| = min(max_support, sum_c floor(beta * min(100, |c| - q) + 1)).
       The +1 is per class (Meta-Dataset's `np.floor(beta * contributions + 1).sum()`), which guarantees
       |S| >= ways; the one-line formula in the notes reads as if it were added once.
    4. shots: w_c = |c| * exp(U[log 0.5, log 2]), p_c = w_c / sum w,
       k_c = min(floor(p_c * (|S| - ways)) + 1, |c| - q), so every class has 1 <= k_c and sum k_c <= |S|.
    Each class's q query and k_c support images are drawn without replacement (disjoint).

    Random draws, in order: [group], ways, classes, beta, the ways log-weights, one permutation per class.
    Differences from Meta-Dataset, both outside its own use: a bilevel draw picks only among groups with at
    least min_ways classes (Meta-Dataset fails on a smaller one; every Omniglot alphabet has >= 14), and
    classes with fewer than 2 images are rejected up front with a DataError naming them.
    """
    max_ways, max_support, min_ways = int(max_ways), int(max_support), int(min_ways)
    max_query_per_class = int(max_query_per_class)
    if not 1 <= min_ways <= max_ways or max_query_per_class < 1:
        raise DataError(f"need 1 <= min_ways <= max_ways and max_query_per_class >= 1; got min_ways={min_ways}, "
                        f"max_ways={max_ways}, max_query_per_class={max_query_per_class}")
    if max_support < max_ways:
        raise DataError(f"max_support ({max_support}) must be >= max_ways ({max_ways}): each class needs a shot")
    if dataset.num_classes < min_ways:
        raise DataError(f"{dataset.name} has {dataset.num_classes} classes; Meta-Dataset episodes need at least "
                        f"min_ways={min_ways}")
    _require_images(dataset, np.arange(dataset.num_classes), 2,
                    "Meta-Dataset episodes need at least 2 (one query, one support)")
    if bilevel is None:
        bilevel = dataset.groups is not None
    group = None
    if bilevel:
        if dataset.groups is None:
            raise DataError(f"{dataset.name} has no class groups; bilevel sampling needs them (e.g. Omniglot)")
        eligible = [(g, cs) for g, cs in dataset.group_classes().items() if len(cs) >= min_ways]
        if not eligible:
            raise DataError(f"{dataset.name}: no group has min_ways={min_ways} classes for bilevel sampling")
        group, pool = eligible[int(rng.integers(len(eligible)))]
    else:
        pool = np.arange(dataset.num_classes, dtype=np.int64)
    ways = int(rng.integers(min_ways, min(max_ways, len(pool)), endpoint=True))
    class_ids = rng.choice(pool, ways, replace=False).astype(np.int64)

    n = dataset.class_sizes[class_ids]  # |c|
    q = int(min(max_query_per_class, (n // 2).min()))
    remaining = n - q
    beta = rng.uniform()
    contrib = np.minimum(MAX_SUPPORT_CONTRIB_PER_CLASS, remaining)
    support_size = int(min(np.floor(beta * contrib + 1).sum(), max_support))
    w = n * np.exp(rng.uniform(MIN_LOG_WEIGHT, MAX_LOG_WEIGHT, size=ways))
    shots = np.minimum(np.floor(w / w.sum() * (support_size - ways)).astype(np.int64) + 1, remaining)

    support, query = [], []
    for c, k in zip(class_ids, shots):
        perm = rng.permutation(int(dataset.class_sizes[c]))[:q + k]
        query.append(perm[:q].astype(np.int64))
        support.append(perm[q:].astype(np.int64))
    return EpisodeDescription(class_ids, tuple(support), tuple(query), group)


def sample_meta_dataset(dataset, rng, max_ways=50, max_support=500, max_query_per_class=10, min_ways=5,
                        bilevel=None):
    """Episode from Meta-Dataset's varying-way varying-shot sampler; see describe_meta_dataset."""
    return load_episode(dataset, describe_meta_dataset(dataset, rng, max_ways, max_support, max_query_per_class,
                                                       min_ways, bilevel))


def _require_images(dataset, class_ids, need, why):
    short = [c for c in class_ids if dataset.class_sizes[c] < need]
    if short:
        listed = ", ".join(f"{dataset.class_names[c]!r} has {dataset.class_sizes[c]}" for c in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise DataError(f"{dataset.name}: too few images in {len(short)} class(es): {listed}{more}; {why}")


def load_episode(dataset, description):
    """Episode: the images of an EpisodeDescription, loaded from (and resized by) the dataset."""
    d = description

    def gather(parts):  # one entry per label, in label order
        x = np.concatenate([dataset.images(c, idx) for c, idx in zip(d.class_ids, parts)])
        y = np.concatenate([np.full(len(idx), label, np.int64) for label, idx in enumerate(parts)])
        return x, y, np.concatenate([np.asarray(idx, np.int64) for idx in parts])

    sx, sy, si = gather(d.support)
    qx, qy, qi = gather(d.query)
    return Episode(sx, sy, qx, qy, np.asarray(d.class_ids, np.int64), si, qi, d.group)


# ---------------------------------------------------------------------------------------------------- augmentation

def augment(batch, rng, flip=True, translate=0.125, brightness=0.5, contrast=(0.5, 1.5), p=0.9, *,
            saturation=(0.0, 2.0), fill="border", dtype=np.uint8):
    """DiffAugment-style augmentation as P>M>F fine-tunes with (Hu et al. 2022, `models/deploy.py`; Zhao et al.
    2020 DiffAugment `color` + `translation`), vectorised over the batch.

    batch: uint8 (N, H, W, 3). Each image independently, with probability p (P>M>F draws one coin per batch),
    gets in this order:
      flip        mirrored left-right with probability 1/2 (only if flip; pass flip=dataset.flip_ok);
      brightness  + U(-brightness, brightness) in the model's real units (x_real = 2 u / 255 - 1, so the
                  shift is that times 127.5 on the 0..255 scale), as DiffAugment adds U(-0.5, 0.5) on [-1, 1];
      saturation  (x - per-pixel channel mean) * U(saturation) + that mean (no effect on grey images);
      contrast    (x - image mean) * U(contrast) + image mean;
      translate   shifted by integers dy, dx ~ UniformInt[-t, t], t = round(translate * side), the uncovered
                  border filled with `fill`: "border" = each image's per-channel mean of its outermost ring
                  of pixels after the colour steps (white for characters on white; DiffAugment pads zeros, the
                  mean colour of its normalised images), or a number on the 0..255 scale.
    Values are clipped to [0, 255] (the int8 input quantization saturates there anyway). The other images are
    returned unchanged, so p = 0 is the identity. Every random number is drawn for every image whether used or
    not, so a given rng state gives the same result for any p.

    dtype: np.uint8 (rounded half up) or np.float32 (unrounded, 0..255 scale). Returns a new array.
    """
    x = np.asarray(batch)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise InputError(f"augment expects a uint8 (N, H, W, 3) batch, got {x.dtype} {x.shape}")
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.float32):
        raise InputError(f"augment returns uint8 or float32, not {dtype}")
    if not 0.0 <= p <= 1.0:
        raise InputError(f"augment: p must be in [0, 1], got {p}")
    if not (fill == "border" if isinstance(fill, str) else 0 <= float(fill) <= 255):
        raise InputError(f"augment: fill must be 'border' or a number in 0..255, got {fill!r}")
    n, h, w, _ = x.shape
    ty, tx = int(math.floor(translate * h + 0.5)), int(math.floor(translate * w + 0.5))
    chosen = rng.random(n) < p
    flips = (rng.random(n) < 0.5) & bool(flip)
    shift = rng.uniform(-brightness, brightness, n) * 127.5
    sat = rng.uniform(saturation[0], saturation[1], n)
    con = rng.uniform(contrast[0], contrast[1], n)
    dy = rng.integers(-ty, ty, n, endpoint=True)
    dx = rng.integers(-tx, tx, n, endpoint=True)

    out = x.astype(np.float32) if dtype == np.float32 else x.copy()
    idx = np.flatnonzero(chosen)
    if idx.size == 0:
        return out
    y = x[idx].astype(np.float32)  # (M, H, W, 3)
    f = flips[idx]
    y[f] = y[f, :, ::-1]
    y += shift[idx, None, None, None].astype(np.float32)
    m = (y[..., 0:1] + y[..., 1:2] + y[..., 2:3]) * np.float32(1 / 3)  # channel mean (faster than .mean(axis=3))
    y = (y - m) * sat[idx, None, None, None].astype(np.float32) + m
    m = y.mean(axis=(1, 2, 3), keepdims=True)
    y = (y - m) * con[idx, None, None, None].astype(np.float32) + m
    np.clip(y, 0.0, 255.0, out=y)

    if isinstance(fill, str):
        ring = np.concatenate([y[:, 0], y[:, -1], y[:, 1:-1, 0], y[:, 1:-1, -1]], axis=1)  # (M, 2W + 2H - 4, 3)
        pad = ring.mean(axis=1)  # (M, 3)
    else:
        pad = np.full((idx.size, 3), fill, np.float32)
    # translation: moved[i, r, c] = y[i, r - dy, c - dx] where inside, else the fill colour (a loop over
    # images, each one slice copy)
    moved = np.empty_like(y)
    moved[:] = pad[:, None, None, :]
    for i, (sy, sx) in enumerate(zip(dy[idx], dx[idx])):
        r0, r1, c0, c1 = max(0, sy), min(h, h + sy), max(0, sx), min(w, w + sx)
        moved[i, r0:r1, c0:c1] = y[i, r0 - sy:r1 - sy, c0 - sx:c1 - sx]
    y = moved
    out[idx] = np.floor(y + 0.5) if dtype == np.uint8 else y
    return out


# ---------------------------------------------------------------------------------------------------- statistics

def mean_ci95(values):
    """(mean, half-width of the 95% confidence interval) of per-episode accuracies: 1.96 * s / sqrt(n), s the
    sample standard deviation (ddof = 1), as few-shot papers report "mean ± CI95". Half-width is nan for n = 1.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise InputError("mean_ci95 needs at least one value")
    if not np.all(np.isfinite(v)):
        raise InputError("mean_ci95: values must be finite")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))
