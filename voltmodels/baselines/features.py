"""Matminer descriptors of the discharged structure, and their on-disk cache.

Matminer's own NaN imputation is off: missing elemental data stays NaN and is imputed inside each
sklearn Pipeline (median of the training rows), so a served model imputes exactly as in training.
A featurizer that fails on a structure leaves NaN for its block instead of raising.

Features are cached on disk (``cache_dir()/features/<feature-set key>.parquet``), one row per
structure content digest; the key changes when the featurizer list, this module's feature version
or the matminer version changes, so a stale cache is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from voltmodels.config import cache_dir
from voltmodels.graphs.convert import parse_structure, structure_digest  # one content hash for every cache

#: Bump when featurize_structure's output changes for the same featurizer list (invalidates caches).
FEATURE_VERSION = 2  # 2: rows keyed by the graph cache's structure digest
_CHECKPOINT_EVERY = 500

# (block name, matminer class, kwargs, input: "composition" | "structure")
FEATURIZERS: tuple[tuple[str, str, dict, str], ...] = (
    ("magpie", "composition.ElementProperty", {"preset": "magpie", "impute_nan": False}, "composition"),
    ("stoichiometry", "composition.Stoichiometry", {}, "composition"),
    ("valence_orbital", "composition.ValenceOrbital", {"impute_nan": False}, "composition"),
    ("ion_property", "composition.IonProperty", {"fast": True, "impute_nan": False}, "composition"),
    ("band_center", "composition.BandCenter", {"impute_nan": False}, "composition"),
    ("tmetal_fraction", "composition.TMetalFraction", {}, "composition"),
    ("density", "structure.DensityFeatures", {}, "structure"),
    (
        "symmetry",
        "structure.GlobalSymmetryFeatures",
        {"desired_features": ["spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops"]},
        "structure",
    ),
)


@lru_cache(maxsize=1)
def _featurizers() -> tuple[tuple[str, object, str, tuple[str, ...]], ...]:
    """(block, featurizer, input kind, labels) for every block; matminer loads its data tables once."""
    import importlib

    built = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matminer warns about impute_nan defaults
        for block, path, kwargs, kind in FEATURIZERS:
            module_name, class_name = path.rsplit(".", 1)
            cls = getattr(importlib.import_module(f"matminer.featurizers.{module_name}"), class_name)
            kwargs = dict(kwargs)
            preset = kwargs.pop("preset", None)
            featurizer = cls.from_preset(preset, **kwargs) if preset else cls(**kwargs)
            built.append((block, featurizer, kind, tuple(featurizer.feature_labels())))
    return tuple(built)


def feature_names() -> list[str]:
    """Matminer's labels, in column order (unique across blocks)."""
    names = [label for _, _, _, labels in _featurizers() for label in labels]
    if len(set(names)) != len(names):
        raise RuntimeError("feature labels of the baseline featurizers collide")
    return names


def feature_blocks() -> dict[str, str]:
    """Feature name -> featurizer block."""
    return {label: block for block, _, _, labels in _featurizers() for label in labels}


def feature_set_key() -> str:
    """Short hash of everything that determines a feature vector: featurizers, FEATURE_VERSION, matminer."""
    from importlib.metadata import version

    spec = {"version": FEATURE_VERSION, "featurizers": FEATURIZERS, "matminer": version("matminer")}
    return hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def featurize_structure(structure) -> np.ndarray:
    """Feature vector (float64, NaN where a featurizer has no value) of one pymatgen Structure."""
    composition = structure.composition
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _block, featurizer, kind, labels in _featurizers():
            try:
                values = featurizer.featurize(composition if kind == "composition" else structure)
                row = np.array([float(v) if v is not None else np.nan for v in values], dtype=np.float64)
                if row.shape != (len(labels),):
                    raise ValueError("unexpected feature count")
            except Exception:  # a block without a value is imputed downstream, never fatal
                row = np.full(len(labels), np.nan)
            row[~np.isfinite(row)] = np.nan
            parts.append(row)
    return np.concatenate(parts)


def featurize_structures(structures: Sequence) -> np.ndarray:
    """Feature matrix (n_structures x n_features) of Structures, uncached (the served models' path)."""
    if not structures:
        return np.zeros((0, len(feature_names())))
    return np.vstack([featurize_structure(s) for s in structures])


class FeatureCache:
    """Baseline feature vectors on disk, keyed by structure content digest and the feature-set key.

    One parquet file per feature set (index: digest). Writers take an exclusive lock, merge their new
    rows into the current file and ``os.replace`` a temporary file over it, so readers never see a
    partial file and concurrent writers never lose each other's rows.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.directory = Path(root) if root is not None else cache_dir() / "features"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"v{FEATURE_VERSION}-{feature_set_key()}.parquet"
        self.last_featurized = 0  # structures featurized (cache misses) by the last get_many

    def load(self) -> pd.DataFrame:
        if not self.path.is_file():
            return pd.DataFrame(columns=feature_names(), dtype=np.float64)
        table = pd.read_parquet(self.path)
        if list(table.columns) != feature_names():  # cannot happen with a matching key; be safe anyway
            return pd.DataFrame(columns=feature_names(), dtype=np.float64)
        return table

    def __len__(self) -> int:
        return len(self.load())

    def get_many(self, structures: Mapping[str, object], progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
        """Features of {id: Structure} as a DataFrame indexed by id (cached rows read, the rest computed)."""
        keys = list(structures)
        digest_of = {key: structure_digest(structures[key]) for key in keys}
        cached = self.load()
        missing: dict[str, object] = {}
        for key in keys:
            digest = digest_of[key]
            if digest not in cached.index and digest not in missing:
                missing[digest] = structures[key]
        self.last_featurized = len(missing)
        if missing:
            names = feature_names()
            new_rows: dict[str, np.ndarray] = {}
            for done, (digest, structure) in enumerate(missing.items(), 1):
                new_rows[digest] = featurize_structure(structure)
                if len(new_rows) >= _CHECKPOINT_EVERY:  # an interrupted run keeps its work
                    cached = self._store(pd.DataFrame.from_dict(new_rows, orient="index", columns=names))
                    new_rows = {}
                if progress is not None:
                    progress(done, len(missing))
            if new_rows:
                cached = self._store(pd.DataFrame.from_dict(new_rows, orient="index", columns=names))
        frame = cached.loc[[digest_of[key] for key in keys]]
        frame.index = pd.Index(keys, name="id")
        return frame.astype(np.float64)

    def _store(self, rows: pd.DataFrame) -> pd.DataFrame:
        with self._lock():
            current = self.load()
            merged = pd.concat([current, rows[~rows.index.isin(current.index)]]) if len(current) else rows
            merged.index.name = "digest"
            temporary = self.directory / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
            try:
                merged.to_parquet(temporary)
                os.replace(temporary, self.path)
            finally:
                temporary.unlink(missing_ok=True)
        return merged

    @contextlib.contextmanager
    def _lock(self):
        import fcntl

        with open(self.directory / f".{self.path.stem}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def dataset_features(dataset, ions: Iterable[str] | None = None, cache: FeatureCache | None = None, progress=None) -> pd.DataFrame:
    """Features of the discharged structures of the dataset's electrodes (of `ions`), indexed by id_discharge."""
    table = dataset.table if ions is None else dataset.table[dataset.table["working_ion"].isin(list(ions))]
    ids = sorted(set(table["id_discharge"]))
    compact = dataset.compact_structures
    return (cache if cache is not None else FeatureCache()).get_many({mid: parse_structure(compact[mid]) for mid in ids}, progress=progress)
