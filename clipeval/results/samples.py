"""Per-sample outcomes behind records, kept in the results document so runs can be compared sample by sample.

A :class:`Samples` holds one scored sample set in sorted-sample-id order: a hash of the ids,
the labels and ranked predictions (``topk``) when the evaluator has them, named boolean
outcomes (``correct``) for what is not a prediction (an attack's "still right after the attack"),
and named per-sample numbers (``scores``: a prediction's confidence, an anomaly score) that a
record computed from scores (calibration error, AUPR) and its figures are drawn from.
A record points at it by key (``Record.samples``) and, for a named outcome, by name
(``Record.outcome``). :meth:`Samples.value` recomputes a record's value from them, by the
metric's definition; the regression gate checks that it matches before it trusts them.

JSON: ``ids_sha256``, ``n``, ``labels`` and ``topk`` as base64 of zlib-compressed little-endian
integers (``dtype``, ``shape``, ``zlib_base64``), ``correct`` as base64 of packed bits per name,
``scores`` as the same packed form of little-endian float32 (``dtype`` ``<f4``) per name.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipeval.errors import ClipevalError, kind_of, quoted
from clipeval.results.record import metric_info
from clipeval.results.statistics import STATISTICS


def _pack_ints(array: np.ndarray) -> dict[str, Any]:
    dtype = "<u2" if array.size == 0 or (array.min() >= 0 and array.max() < 2**16) else "<i8"
    data = zlib.compress(np.ascontiguousarray(array, dtype=dtype).tobytes(), 6)
    return {"dtype": dtype, "shape": list(array.shape), "zlib_base64": base64.b64encode(data).decode()}


PACKED = "packed integers {dtype, shape, zlib_base64}, as clipeval writes them"


def _unpack_ints(packed: Any, where: str) -> np.ndarray:
    """The integers ``packed`` holds; ClipevalError naming ``where`` and what is wrong with them, in words."""
    if not isinstance(packed, Mapping):
        raise ClipevalError(f"{where} is {kind_of(packed)}, not {PACKED}.")
    absent = [k for k in ("dtype", "shape", "zlib_base64") if k not in packed]
    if absent:
        raise ClipevalError(f"{where} has no {', '.join(absent)}: it must be {PACKED}.")
    try:
        dtype = np.dtype(packed["dtype"]) if isinstance(packed["dtype"], str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "iu":
        raise ClipevalError(f'{where}: dtype is {quoted(packed["dtype"])}, not an integer type such as "<u2" or "<i8".')
    shape = packed["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ClipevalError(f"{where}: shape is {quoted(shape)}, not a list of whole numbers.")
    try:
        data = base64.b64decode(packed["zlib_base64"], validate=True)
    except (TypeError, ValueError):
        raise ClipevalError(f"{where}: zlib_base64 is not base64 text.") from None
    try:
        data = zlib.decompress(data)
    except zlib.error:
        raise ClipevalError(f"{where}: zlib_base64 does not decompress (zlib): the data are damaged.") from None
    size = int(np.prod(shape))
    if len(data) != size * dtype.itemsize:
        raise ClipevalError(
            f"{where} holds {len(data) / dtype.itemsize:g} values of dtype {quoted(packed['dtype'])}, and its shape "
            f"{quoted(shape)} needs {size}."
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.int64)


def _pack_floats(array: np.ndarray) -> dict[str, Any]:
    data = zlib.compress(np.ascontiguousarray(array, dtype="<f4").tobytes(), 6)
    return {"dtype": "<f4", "shape": list(array.shape), "zlib_base64": base64.b64encode(data).decode()}


def _unpack_floats(packed: Any, where: str, n: int) -> np.ndarray:
    """The float32 numbers ``packed`` holds; ClipevalError naming ``where`` when they are not n finite float32."""
    if not isinstance(packed, Mapping) or packed.get("dtype") != "<f4" or packed.get("shape") != [n]:
        raise ClipevalError(f'{where} is not {n} packed float32 numbers {{dtype: "<f4", shape: [{n}], zlib_base64}}.')
    try:
        data = zlib.decompress(base64.b64decode(packed.get("zlib_base64"), validate=True))
    except (TypeError, ValueError, zlib.error):
        raise ClipevalError(
            f"{where}: zlib_base64 is not base64 of zlib-compressed data: the data are damaged."
        ) from None
    if len(data) != 4 * n:
        raise ClipevalError(f"{where} holds {len(data) / 4:g} float32 numbers, not n = {n}.")
    values = np.frombuffer(data, dtype="<f4").astype(np.float64)
    if not np.isfinite(values).all():
        raise ClipevalError(f"{where} holds NaN or infinite numbers; per-sample scores are finite.")
    return values


def _pack_bits(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()).decode()


def _unpack_bits(text: Any, n: int, where: str) -> np.ndarray:
    try:
        raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    except (TypeError, ValueError):
        raise ClipevalError(f"{where} is not base64 text of packed bits.") from None
    if len(raw) * 8 < n:
        raise ClipevalError(f"{where} holds {len(raw) * 8} bits, fewer than its n = {n} samples.")
    return np.unpackbits(raw)[:n].astype(bool)


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 of the sorted sample ids joined by newlines: equal hashes, same sample set."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@dataclass
class Samples:
    """Per-sample data of one sample set, in sorted-sample-id order.

    ``labels``: [n] int and ``topk``: [n, k] ranked class indices, when predictions were made;
    ``correct``: {outcome name: [n] bool} for outcomes that are not predictions; ``scores``: {name: [n]
    float} per-sample numbers (kept as float32).
    """

    ids_sha256: str
    n: int
    labels: np.ndarray | None = None
    topk: np.ndarray | None = None
    correct: dict[str, np.ndarray] | None = None
    scores: dict[str, np.ndarray] | None = None

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str],
        labels: Any = None,
        topk: Any = None,
        correct: Mapping[str, Any] | None = None,
        scores: Mapping[str, Any] | None = None,
    ) -> Samples:
        """From arrays in any order of ``ids`` (tensors or arrays); sorts them by sample id."""
        order = np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")
        take = lambda a: None if a is None else np.asarray(a)[order]  # noqa: E731
        labels_, topk_ = take(labels), take(topk)
        return cls(
            ids_sha256(list(ids)),
            len(ids),
            None if labels_ is None else labels_.astype(np.int64),
            None if topk_ is None else topk_.astype(np.int64).reshape(len(ids), -1),
            {name: take(bits).astype(bool) for name, bits in correct.items()} if correct else None,
            # float32 as stored, so that a number computed from them here equals the one computed from the document
            {name: take(v).astype(np.float32).astype(np.float64) for name, v in scores.items()} if scores else None,
        )

    def outcome(self, metric: str, outcome: str | None = None) -> np.ndarray | None:
        """[n] bool: each sample right under the named ``outcome``, or top-k by ``metric``; [n] float: the named
        ``outcome`` when it is a per-sample score (a Jaccard index), whose mean is the metric; None if unknown."""
        if outcome is not None:
            found = (self.correct or {}).get(outcome)
            return (self.scores or {}).get(outcome) if found is None else found
        if self.topk is not None and self.labels is not None and metric in ("top1", "top5"):
            k = int(metric[3:])
            return None if self.topk.shape[1] < k else (self.topk[:, :k] == self.labels[:, None]).any(axis=1)
        return None

    def weights(self) -> np.ndarray | None:
        """[n] weight 1 / (C * n_c) of each sample, so that sum(w * correct) is the mean per-class recall."""
        if self.labels is None:
            return None
        _, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        return 1.0 / (len(counts) * counts[inverse])

    def has(self, metric: str, outcome: str | None = None, class_weighted: bool | None = None) -> bool:
        """Whether the samples define ``metric`` (with ``outcome``). ``class_weighted``: the metric's definition
        (None: look it up in the registry; a results document passes its own)."""
        if metric in STATISTICS:
            return STATISTICS[metric].vectors(self, outcome) is not None
        if _weighted(metric, class_weighted):
            return self.labels is not None and self.outcome("top1", outcome) is not None
        return self.outcome(metric, outcome) is not None

    def per_sample(self, metric: str, outcome: str | None = None, class_weighted: bool | None = None) -> np.ndarray:
        """[n] the metric's per-sample outcomes (top-1 for a class-weighted metric)."""
        return self.outcome("top1" if _weighted(metric, class_weighted) and outcome is None else metric, outcome)

    def value(self, metric: str, outcome: str | None = None, class_weighted: bool | None = None) -> float:
        """The metric recomputed from the samples (clipeval.results.metrics defines it; a metric of per-sample sums,
        clipeval.results.statistics)."""
        if metric in STATISTICS:
            return STATISTICS[metric].value(self, outcome)
        correct = self.per_sample(metric, outcome, class_weighted)
        if _weighted(metric, class_weighted):
            return float(np.sum(self.weights() * correct))
        return float(np.mean(correct))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ids_sha256": self.ids_sha256, "n": self.n}
        if self.labels is not None:
            out["labels"] = _pack_ints(self.labels)
        if self.topk is not None:
            out["topk"] = _pack_ints(self.topk)
        if self.correct:
            out["correct"] = {name: _pack_bits(bits) for name, bits in self.correct.items()}
        if self.scores:
            out["scores"] = {name: _pack_floats(values) for name, values in self.scores.items()}
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "samples") -> Samples:
        """ClipevalError naming ``where`` and the field when the data are malformed or inconsistent."""
        if not isinstance(data, Mapping):
            raise ClipevalError(f"{where} is {kind_of(data)}, not an object.")
        n = data.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ClipevalError(f"{where}: n is {quoted(n)}; a number of samples is a positive integer.")
        if not isinstance(data.get("ids_sha256"), str):
            raise ClipevalError(f"{where}: ids_sha256 is missing.")
        if "topk" in data and "labels" not in data:
            raise ClipevalError(f"{where}: labels is missing; ranked predictions ('topk') need the labels they rank.")
        outcomes = data.get("correct") or data.get("scores")
        if "labels" in data and "topk" not in data and not outcomes:
            raise ClipevalError(
                f"{where}: topk is missing; labels come with ranked predictions ('topk') or named outcomes ('correct', "
                "'scores')."
            )
        if "labels" not in data and not outcomes:
            raise ClipevalError(
                f"{where}: labels and topk are missing; per-sample data hold labels with ranked predictions ('topk') "
                "or named outcomes ('correct', 'scores')."
            )
        labels = _unpack_ints(data["labels"], f"{where}: labels") if "labels" in data else None
        topk = _unpack_ints(data["topk"], f"{where}: topk") if "topk" in data else None
        correct_json = data.get("correct") or {}
        if not isinstance(correct_json, Mapping):
            raise ClipevalError(f"{where}: correct is not an object of named outcomes.")
        correct = {m: _unpack_bits(v, n, f"{where}: correct.{m}") for m, v in correct_json.items()} or None
        scores_json = data.get("scores") or {}
        if not isinstance(scores_json, Mapping):
            raise ClipevalError(f"{where}: scores is not an object of named per-sample numbers.")
        scores = {m: _unpack_floats(v, f"{where}: scores.{m}", n) for m, v in scores_json.items()} or None
        for name, array in (("labels", labels), ("topk", topk), *(correct or {}).items()):
            if array is not None and len(array) != n:
                raise ClipevalError(f"{where}: '{name}' has {len(array)} entries, not n = {n}.")
        return cls(data["ids_sha256"], n, labels, topk, correct, scores)


def _weighted(metric: str, class_weighted: bool | None) -> bool:
    return metric_info(metric).class_weighted if class_weighted is None else class_weighted
