"""Outliers among tabular samples (pure): a numeric feature far from what the model's recent accepted
rows hold, by the robust z-score |x - median| / (1.4826 MAD) (1.4826 MAD estimates the standard
deviation of normal data, and neither the median nor the MAD moves with the outliers themselves).
A feature whose reference MAD is 0 (a constant, or mostly one value) is not judged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from curation.config import OutliersConfig


class OutlierCheck:
    """Per-feature median and MAD of a reference of stored inputs (``{"features": {...}}``)."""

    def __init__(self, reference: Sequence[Mapping[str, object]], config: OutliersConfig) -> None:
        self.config = config
        columns: dict[str, list[float]] = {}
        for item in reference:
            for name, value in _features(item).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    columns.setdefault(name, []).append(float(value))
        self.centre: dict[str, tuple[float, float]] = {}
        for name, values in columns.items():
            if len(values) < config.min_reference:
                continue
            arr = np.asarray(values)
            median = float(np.median(arr))
            mad = float(np.median(np.abs(arr - median)))
            if mad > 0:
                self.centre[name] = (median, 1.4826 * mad)

    def outlying(self, item: Mapping[str, object] | None) -> list[str]:
        """The numeric features of ``item`` beyond ``robust_z`` (empty: not an outlier, or not judged)."""
        found = []
        for name, value in _features(item).items():
            centre = self.centre.get(name)
            if centre is None or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            median, scale = centre
            if abs(float(value) - median) / scale > self.config.robust_z:
                found.append(name)
        return found


def _features(item: Mapping[str, object] | None) -> Mapping[str, object]:
    features = (item or {}).get("features")
    return features if isinstance(features, Mapping) else {}
