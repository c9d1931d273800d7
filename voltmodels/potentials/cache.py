"""Potential results on disk: static energies (+ pooled embeddings) and relaxed structures.

One SQLite file (`<cache>/potentials/potentials.sqlite`, WAL mode so several processes read and
write it at once) keyed by the structure's content digest (the graph cache's) and the potential's
key (name + package version + weights hash). A study, an entry point and a served model share it,
so no energy is ever computed twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from voltmodels.config import cache_dir

_SCHEMA = """
create table if not exists energies (
    potential text not null, digest text not null, energy real, n_atoms integer,
    embedding blob, error text, seconds real, primary key (potential, digest));
create table if not exists relaxed (
    potential text not null, digest text not null, settings text not null, structure text,
    energy real, n_steps integer, converged integer, error text, seconds real,
    primary key (potential, digest, settings));
"""


@dataclass
class EnergyRecord:
    energy: float | None  # eV, total energy of the cell
    n_atoms: int
    embedding: np.ndarray | None  # (d,) mean of the potential's atomic features, or None
    error: str | None
    seconds: float


@dataclass
class RelaxRecord:
    structure: dict | None  # compact structure after relaxation
    energy: float | None
    n_steps: int
    converged: bool
    error: str | None
    seconds: float


class PotentialCache:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else cache_dir() / "potentials" / "potentials.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("pragma journal_mode=wal")
        return db

    # -- static energies ---------------------------------------------------------------------------

    def energies(self, potential: str, digests: Iterable[str]) -> dict[str, EnergyRecord]:
        wanted = list(dict.fromkeys(digests))
        found: dict[str, EnergyRecord] = {}
        with self._connect() as db:
            for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for digest, energy, n_atoms, blob, error, seconds in db.execute(
                    f"select digest, energy, n_atoms, embedding, error, seconds from energies where potential = ? and digest in ({marks})",
                    [potential, *chunk],
                ):
                    embedding = np.frombuffer(blob, dtype=np.float32) if blob else None
                    found[digest] = EnergyRecord(energy, n_atoms, embedding, error, seconds)
        return found

    def put_energies(self, potential: str, records: dict[str, EnergyRecord]) -> None:
        rows = [
            (potential, d, r.energy, r.n_atoms, None if r.embedding is None else np.asarray(r.embedding, np.float32).tobytes(), r.error, r.seconds)
            for d, r in records.items()
        ]
        with self._connect() as db:
            db.executemany("insert or replace into energies values (?, ?, ?, ?, ?, ?, ?)", rows)

    def count(self, potential: str) -> int:
        with self._connect() as db:
            return db.execute("select count(*) from energies where potential = ?", [potential]).fetchone()[0]

    # -- relaxations -------------------------------------------------------------------------------

    def relaxed(self, potential: str, digest: str, settings: str) -> RelaxRecord | None:
        with self._connect() as db:
            row = db.execute(
                "select structure, energy, n_steps, converged, error, seconds from relaxed where potential = ? and digest = ? and settings = ?",
                [potential, digest, settings],
            ).fetchone()
        if row is None:
            return None
        structure, energy, n_steps, converged, error, seconds = row
        return RelaxRecord(json.loads(structure) if structure else None, energy, n_steps, bool(converged), error, seconds)

    def put_relaxed(self, potential: str, digest: str, settings: str, record: RelaxRecord) -> None:
        with self._connect() as db:
            db.execute(
                "insert or replace into relaxed values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [potential, digest, settings, json.dumps(record.structure) if record.structure else None, record.energy, record.n_steps, int(record.converged), record.error, record.seconds],
            )
