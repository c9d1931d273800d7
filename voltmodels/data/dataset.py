"""The curated dataset: a versioned folder of tables + structures, stored as MLflow run artifacts.

Layout of a dataset folder (the `dataset/` artifact of a curate run):
    electrodes.csv        curated rows, with split_random / split_framework
    structures.json.gz    {material id: compact structure} for every id_discharge and id_charge
    dropped.csv           every dropped row and the rule that dropped it
    counts.csv            per-ion counts raw / after each rule / per split
    manifest.json         source, curation params, digest
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
from pymatgen.core import Structure

from voltmodels.config import VoltmodelsError
from voltmodels.data.curation import SPLIT_STRATEGIES, CurationResult, assign_splits, calibration_rows
from voltmodels.graphs.convert import parse_structure, structure_to_compact


class ParsedStructures(Mapping):
    """A read-only {material id: Structure} over compact structures, parsing each once, when asked."""

    def __init__(self, compact: Mapping[str, dict]):
        self._compact = compact
        self._parsed: dict[str, Structure] = {}

    def __getitem__(self, mid: str) -> Structure:
        if mid not in self._parsed:
            self._parsed[mid] = parse_structure(self._compact[mid])
        return self._parsed[mid]

    def __contains__(self, mid) -> bool:  # without parsing
        return mid in self._compact

    def __iter__(self) -> Iterator[str]:
        return iter(self._compact)

    def __len__(self) -> int:
        return len(self._compact)


ELECTRODES = "electrodes.csv"
STRUCTURES = "structures.json.gz"
DROPPED = "dropped.csv"
COUNTS = "counts.csv"
MANIFEST = "manifest.json"
ARTIFACT_PATH = "dataset"
CURATE_STEP = "curate"


def _digest(table_csv: bytes, structures_json: bytes) -> str:
    return hashlib.sha256(table_csv + b"\0" + structures_json).hexdigest()[:16]


def save_dataset(result: CurationResult, folder: Path, source: str) -> str:
    """Write the curated dataset; returns its digest (equal for equal content, whatever the run)."""
    folder.mkdir(parents=True, exist_ok=True)
    table_csv = result.table.to_csv(index=False, float_format="%.10g").encode()
    compact = {mid: structure_to_compact(s) for mid, s in sorted(result.structures.items())}
    structures_json = json.dumps(compact, sort_keys=True, separators=(",", ":")).encode()
    digest = _digest(table_csv, structures_json)
    (folder / ELECTRODES).write_bytes(table_csv)
    # mtime=0 keeps the gzip bytes identical across reruns.
    with gzip.GzipFile(folder / STRUCTURES, "wb", mtime=0) as fh:
        fh.write(structures_json)
    result.dropped.to_csv(folder / DROPPED, index=False)
    result.counts.to_csv(folder / COUNTS)
    manifest = {"digest": digest, "source": source, "params": result.params.to_dict(), "n_electrodes": len(result.table)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return digest


@dataclass
class CuratedDataset:
    folder: Path

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.folder / MANIFEST).read_text())

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @cached_property
    def table(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / ELECTRODES)

    @cached_property
    def compact_structures(self) -> dict[str, dict]:
        """{material id: compact dict} (discharged and charged): what the graph cache reads without building Structures."""
        with gzip.open(self.folder / STRUCTURES, "rt") as fh:
            return json.load(fh)

    @cached_property
    def structures(self) -> Mapping[str, Structure]:
        """{material id: Structure}, each parsed on first access (a model's input example needs two;
        parsing all 6,500 costs 12 s)."""
        return ParsedStructures(self.compact_structures)

    @property
    def ions(self) -> list[str]:
        return sorted(self.table["working_ion"].unique())

    def rows(self, ion: str) -> pd.DataFrame:
        rows = self.table[self.table["working_ion"] == ion]
        if rows.empty:
            raise VoltmodelsError(f"The dataset {self.digest} has no electrodes for working ion {ion!r}; it has {', '.join(self.ions)}.")
        return rows.reset_index(drop=True)

    def subsample(self, max_per_ion: int, seed: int = 0) -> CuratedDataset:
        """A view with at most `max_per_ion` seeded-random rows of each ion (their stored split labels kept).

        Its digest names the subsample, so models fitted on it are never compared with full-data ones.
        """
        if max_per_ion <= 0 or (self.table["working_ion"].value_counts() <= max_per_ion).all():
            return self
        picked = [rows.sample(n=min(len(rows), max_per_ion), random_state=seed) for _, rows in self.table.groupby("working_ion", sort=True)]
        view = CuratedDataset(self.folder)
        view.__dict__.update(
            table=pd.concat(picked).sort_values(["working_ion", "battery_id"]).reset_index(drop=True),
            manifest={**self.manifest, "digest": f"{self.digest}-max{max_per_ion}-seed{seed}"},
            compact_structures=self.compact_structures,
        )
        return view

    def split(self, ion: str, strategy: str = "random", repeat: int = 0) -> pd.DataFrame:
        """The ion's rows with a `split` column (repeat 0 is the curated split, repeat k reseeds it) and a
        `calibration` column: the training rows that models selecting on validation rows keep out
        for their conformal interval (`calibration_rows`); the other families train on them."""
        rows = self.rows(ion)
        if strategy not in SPLIT_STRATEGIES:
            raise VoltmodelsError(f"Unknown split strategy {strategy!r}; use one of {', '.join(SPLIT_STRATEGIES)}.")
        if repeat == 0:
            labels = rows[f"split_{strategy}"]
        else:
            params = self.manifest["params"]
            labels = assign_splits(rows, strategy, params["seed"] + 1000 * repeat, tuple(params["fractions"]))
        params = self.manifest["params"]
        calibration = calibration_rows(rows, labels.to_numpy(), strategy, params["seed"] + 1000 * repeat)
        return rows.assign(split=labels.to_numpy(), calibration=calibration)


def load_dataset(reference: str | None = None) -> CuratedDataset:
    """A curated dataset from a folder path, a curate run id, or (None/'latest') the latest finished curate run."""
    if reference and reference != "latest" and Path(reference).expanduser().is_dir():
        folder = Path(reference).expanduser().resolve()
        if (folder / ARTIFACT_PATH / MANIFEST).is_file():
            folder = folder / ARTIFACT_PATH
        if not (folder / MANIFEST).is_file():
            raise VoltmodelsError(f"{folder} is not a curated dataset folder (no {MANIFEST}).")
        return CuratedDataset(folder)
    from voltmodels.tracking import curate_run_dataset_folder  # the one MLflow adapter

    return CuratedDataset(curate_run_dataset_folder(reference))
