"""Query by Materials Project id: a `material_id` column instead of `structure`.

The router bundles a compact index of the curated dataset it was built with (every end member's
structure, and which charged end member belongs to each discharged one), so an id such as `mp-19017`
is answered without any network: the discharged structure from the index, and, for a known electrode,
its charged structure too (mode a for the potential families). An id that is not in the index is
fetched from the MP API when `MP_API_KEY` is set (mp-api's MPRester; one call per id, kept in memory),
otherwise it is a 400 naming the id.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd

from voltmodels.config import VoltmodelsError

FORMAT_VERSION = 1
ARTIFACT = "structure_index"


def mp_client():
    """An MP API client (mp-api), or None without MP_API_KEY. Tests replace this function."""
    key = os.environ.get("MP_API_KEY")
    if not key:
        return None
    from mp_api.client import MPRester

    return MPRester(api_key=key)


class StructureIndex:
    """{material id: compact structure} and {discharged id: charged id} of one curated dataset."""

    def __init__(self, structures: dict[str, dict], charged_of: dict[str, str], dataset_digest: str):
        self.structures = structures
        self.charged_of = charged_of
        self.dataset_digest = dataset_digest
        self._fetched: dict[str, str] = {}

    @classmethod
    def from_dataset(cls, dataset, ions=None) -> "StructureIndex":
        table = dataset.table if ions is None else dataset.table[dataset.table["working_ion"].isin(list(ions))]
        ids = set(table["id_discharge"]) | set(table["id_charge"])
        structures = {mid: s for mid, s in dataset.compact_structures.items() if mid in ids}
        charged_of = {d: c for d, c in zip(table["id_discharge"], table["id_charge"]) if d in structures and c in structures}
        return cls(structures, charged_of, dataset.digest)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with gzip.open(path, "wt") as fh:
            json.dump({"format_version": FORMAT_VERSION, "dataset_digest": self.dataset_digest, "structures": self.structures, "charged_of": self.charged_of}, fh)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StructureIndex":
        with gzip.open(path, "rt") as fh:
            data = json.load(fh)
        if data.get("format_version") != FORMAT_VERSION:
            raise VoltmodelsError(f"{path} is a structure index of format {data.get('format_version')}; this code reads {FORMAT_VERSION}")
        return cls(data["structures"], data["charged_of"], data["dataset_digest"])

    def _fetch(self, material_id: str) -> str:
        if material_id not in self._fetched:
            client = mp_client()
            if client is None:
                raise VoltmodelsError(f"material_id {material_id!r} is not among the {len(self.structures):,} structures of dataset {self.dataset_digest} bundled with the model, and MP_API_KEY is not set to fetch it")
            try:
                structure = client.get_structure_by_material_id(material_id)
            except Exception as exc:  # mp-api raises its own types for unknown ids and network errors
                raise VoltmodelsError(f"material_id {material_id!r} is not in the model's index and the MP API did not return it ({type(exc).__name__}: {exc})") from None
            self._fetched[material_id] = structure.to_json()
        return self._fetched[material_id]

    def resolve(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """The frame with `structure` (and, for a known electrode, `structure_charged`) filled in for
        rows that give a `material_id`, and the problems ("row i: ...") of ids that cannot be resolved."""
        if "material_id" not in frame.columns:
            return frame, []
        frame = frame.copy()
        if "structure" not in frame.columns:
            frame["structure"] = None
        if "structure_charged" not in frame.columns:
            frame["structure_charged"] = None
        problems = []
        for row, mid, given in zip(frame.index, frame["material_id"], frame["structure"]):
            if _blank(mid):
                continue
            mid = str(mid).strip()
            if not _blank(given):
                problems.append(f"row {row}: give either structure or material_id, not both")
                continue
            try:
                frame.at[row, "structure"] = json.dumps(self.structures[mid]) if mid in self.structures else self._fetch(mid)
            except VoltmodelsError as exc:
                problems.append(f"row {row}: {exc}")
                continue
            charged = self.charged_of.get(mid)
            if charged and _blank(frame.at[row, "structure_charged"]):
                frame.at[row, "structure_charged"] = json.dumps(self.structures[charged])
        return frame, problems


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())
