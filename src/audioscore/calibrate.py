"""Score calibration: raw scorer outputs -> the label scale (e.g. 50-99), strictly increasing.

A scorer trained with a ranking loss outputs logits on no particular scale. After training,
`fit_calibration(raw, labels)` fits a monotone map from raw scores to the labelled `score`s and
the export stores it (`config.yaml` section `calibration:`, plain numbers), so `Scorer.score`
prints label-scale scores. Every kind is strictly increasing, so rank metrics (SRCC, Kendall,
pair accuracy) are identical on raw and calibrated scores.

Kinds (`Calibration.from_dict` reads either):
- `isotonic` (fitted here): sklearn's isotonic regression, its blocks reduced to knots (block
  mean raw score -> block level) joined linearly; beyond the knots it continues with the overall
  slope and saturates towards the lowest / highest label the fit saw (`lo`, `hi`), so scores
  stay inside the labelled range and strictly increasing. Where an end knot already sits on the
  range's edge (no room left), that tail flattens logarithmically (`tail` label units per
  e-fold) past it: `extrapolated()` tells which scores left the range (the score CLI reports
  them). A section without `lo`/`hi` (older exports) has logarithmic tails on both ends.
- `tanh`: `offset + scale * tanh(raw)` (written by the legacy-checkpoint converter to reproduce
  the original's printed numbers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike


class CalibrationError(ValueError):
    """A calibration section that is malformed or not strictly increasing."""


class Calibration(ABC):
    """A strictly increasing map raw score -> label scale; `to_dict` gives plain numbers."""

    kind: ClassVar[str]

    @abstractmethod
    def __call__(self, raw: ArrayLike) -> np.ndarray:
        """Raw scores (any shape) -> calibrated scores (float64, same shape; NaN stays NaN)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """`{kind: ..., ...}` of plain floats and lists (yaml-safe)."""

    def extrapolated(self, scores: ArrayLike) -> np.ndarray:
        """Which calibrated scores lie outside the range the calibration was fitted on."""
        return np.zeros(np.shape(scores), dtype=bool)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Calibration:
        """Read a stored calibration section; CalibrationError names what is wrong."""
        if not isinstance(d, Mapping):
            raise CalibrationError(f"calibration must be a mapping, got {type(d).__name__}")
        kinds: dict[str, type[Calibration]] = {
            IsotonicCalibration.kind: IsotonicCalibration,
            TanhCalibration.kind: TanhCalibration,
        }
        kind = d.get("kind")
        if kind not in kinds:
            raise CalibrationError(f"calibration kind must be one of {sorted(kinds)}, got {kind!r}")
        return kinds[kind].parse(d)

    @classmethod
    @abstractmethod
    def parse(cls, d: Mapping[str, Any]) -> Calibration:
        """The kind's own keys -> an instance (validated)."""


def _number(d: Mapping[str, Any], key: str) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise CalibrationError(f"calibration {d.get('kind')}: {key} must be a finite number")
    return float(value)


@dataclass(frozen=True)
class TanhCalibration(Calibration):
    """`offset + scale * tanh(raw)`, scale > 0 (higher stays better)."""

    scale: float
    offset: float
    kind: ClassVar[str] = "tanh"

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise CalibrationError(f"calibration tanh: scale must be > 0, got {self.scale}")

    def __call__(self, raw: ArrayLike) -> np.ndarray:
        return self.offset + self.scale * np.tanh(np.asarray(raw, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": float(self.scale), "offset": float(self.offset)}

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> TanhCalibration:
        return cls(scale=_number(d, "scale"), offset=_number(d, "offset"))


@dataclass(frozen=True)
class IsotonicCalibration(Calibration):
    """Piecewise-linear through strictly increasing knots (x raw, y label) + logarithmic tails.

    Args:
        x, y: knots, both strictly increasing, at least 2.
        tail: label units the tails gain per e-fold of distance past the end knots (> 0).
        n: clips the fit saw; source: which clips (`val` / `train`); for the record.
        lo, hi: the label range the fit saw (None: unbounded logarithmic tails).
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    tail: float
    n: int = 0
    source: str = ""
    lo: float | None = None
    hi: float | None = None
    kind: ClassVar[str] = "isotonic"

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, float), np.asarray(self.y, float)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
            raise CalibrationError("calibration isotonic: x and y need the same length, >= 2")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise CalibrationError("calibration isotonic: knots must be finite")
        if not ((np.diff(x) > 0).all() and (np.diff(y) > 0).all()):
            raise CalibrationError("calibration isotonic: knots must be strictly increasing")
        if not (np.isfinite(self.tail) and self.tail > 0):
            raise CalibrationError(f"calibration isotonic: tail must be > 0, got {self.tail}")
        if (self.lo is None) != (self.hi is None):
            raise CalibrationError("calibration isotonic: lo and hi come together")
        if self.lo is not None and not (self.lo <= y[0] and y[-1] <= self.hi):
            raise CalibrationError(
                f"calibration isotonic: knots [{y[0]}, {y[-1]}] outside lo..hi "
                f"[{self.lo}, {self.hi}]"
            )

    @property
    def slope(self) -> float:
        """Overall slope (label units per raw unit), the tails' starting slope."""
        return (self.y[-1] - self.y[0]) / (self.x[-1] - self.x[0])

    def __call__(self, raw: ArrayLike) -> np.ndarray:
        r = np.asarray(raw, dtype=np.float64)
        out = np.interp(r, self.x, self.y)
        up, down = r > self.x[-1], r < self.x[0]
        out[up] = self.y[-1] + self._tail(r[up] - self.x[-1], self.hi, self.y[-1])
        out[down] = self.y[0] - self._tail(self.x[0] - r[down], self.lo, self.y[0])
        return out

    def _tail(self, dist: np.ndarray, edge: float | None, end: float) -> np.ndarray:
        """Label units gained `dist` raw units past an end knot: starts at the overall slope,
        saturates at the range's edge when there is room, else grows logarithmically."""
        k = self.slope
        room = None if edge is None else abs(edge - end)
        if room:  # room > 0: u / (1 + u) saturates at the edge slowly enough that far-out
            # raw scores still differ in float64 (an exponential would tie them)
            u = k * dist / room
            return room * u / (1.0 + u)
        return self.tail * np.log1p(k * dist / self.tail)

    def extrapolated(self, scores: ArrayLike) -> np.ndarray:
        """Which calibrated scores lie outside the labelled range (none when it is unknown)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.lo is None or self.hi is None:
            return np.zeros(s.shape, dtype=bool)
        return (s < self.lo) | (s > self.hi)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "x": [float(v) for v in self.x],
            "y": [float(v) for v in self.y],
            "tail": float(self.tail),
            "n": int(self.n),
            "source": self.source,
            **({} if self.lo is None else {"lo": float(self.lo), "hi": float(self.hi or 0.0)}),
        }

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> IsotonicCalibration:
        for key in ("x", "y"):
            v = d.get(key)
            if not isinstance(v, list) or not all(
                isinstance(e, int | float) and not isinstance(e, bool) for e in v
            ):
                raise CalibrationError(f"calibration isotonic: {key} must be a list of numbers")
        return cls(
            x=tuple(float(v) for v in d["x"]),
            y=tuple(float(v) for v in d["y"]),
            tail=_number(d, "tail"),
            n=int(d.get("n") or 0),
            source=str(d.get("source") or ""),
            lo=_number(d, "lo") if "lo" in d else None,
            hi=_number(d, "hi") if "hi" in d else None,
        )


def labelled(raw: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The (raw, label) pairs where both are finite (unscored clips carry NaN labels)."""
    r, t = np.asarray(raw, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
    if r.shape != t.shape:
        raise ValueError(f"raw scores {r.shape} and labels {t.shape} differ in length")
    ok = np.isfinite(r) & np.isfinite(t)
    return r[ok], t[ok]


def fit_calibration(
    raw: ArrayLike, labels: ArrayLike, source: str = "", tail_frac: float = 0.1
) -> IsotonicCalibration | None:
    """Fit raw -> label on the pairs with a label; None when no clip has one.

    Isotonic regression (non-decreasing, with plateaus) is reduced to one knot per block: the
    block's mean raw score and its level. Levels of successive blocks strictly increase, and so
    do the block means, so the knots define a strictly increasing map. When raw scores do not
    rise with the labels at all (one block) the map is that level plus a tiny ramp, which keeps
    the order. `tail_frac`: the tails' scale as a share of the label range.
    """
    # scikit-learn: ~0.8 s of import that scoring (applying stored knots) does not need
    from sklearn.isotonic import IsotonicRegression

    r, t = labelled(raw, labels)
    if len(r) == 0:
        return None
    fitted = IsotonicRegression(increasing=True).fit(r, t).predict(r)
    order = np.argsort(r, kind="stable")
    r, f = r[order], fitted[order]
    # non-decreasing in sorted order: each distinct level is one contiguous block
    _, start = np.unique(f, return_index=True)
    bounds = np.append(start, len(r))
    x = np.array([r[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    y = f[start]
    span = float(np.ptp(t))
    tail = tail_frac * span if span > 0 else 1.0
    if len(x) == 1:  # no rise to fit: keep the level, break ties by a tiny ramp
        half = max(float(np.ptp(r)) / 2, 1.0)
        eps = 1e-6 * tail
        x = np.array([x[0] - half, x[0] + half])
        y = np.array([y[0] - eps, y[0] + eps])
    return IsotonicCalibration(
        x=tuple(map(float, x)),
        y=tuple(map(float, y)),
        tail=tail,
        n=len(r),
        source=source,
        lo=min(float(t.min()), float(y[0])),
        hi=max(float(t.max()), float(y[-1])),
    )


def cross_fitted_mae(raw: ArrayLike, labels: ArrayLike, folds: int = 5, seed: int = 0) -> float:
    """Mean absolute error of calibrated scores, each clip calibrated by a fit on the other
    folds (out of sample, unlike the MAE of a fit on all clips); NaN with < 4 labelled clips."""
    from sklearn.model_selection import KFold  # ~0.8 s of import, as in fit_calibration

    r, t = labelled(raw, labels)
    if len(r) < 4:
        return float("nan")
    errors = np.empty(len(r))
    for fit_idx, held in KFold(min(folds, len(r)), shuffle=True, random_state=seed).split(r):
        cal = fit_calibration(r[fit_idx], t[fit_idx])
        assert cal is not None  # every fold has labelled clips
        errors[held] = np.abs(cal(r[held]) - t[held])
    return float(errors.mean())
