"""Every cleaning rule, split determinism and bad-input handling, on fixtures built here."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO, fixture_electrodes, write_snapshot
from voltmodels.config import VoltmodelsError
from voltmodels.data.curation import CurationParams, assign_splits, curate
from voltmodels.data.sources import RawElectrodes, load_from_mp, load_snapshot


def raw(table, structures):
    return RawElectrodes(table=table, structures=structures, source="test")


def dropped_rules(result) -> dict[str, str]:
    return dict(zip(result.dropped["battery_id"], result.dropped["rule"]))


def test_clean_fixture_keeps_everything():
    table, structures = fixture_electrodes()
    result = curate(raw(table, structures))
    assert len(result.table) == len(table)
    assert result.dropped.empty
    assert result.counts.loc["Li", "raw"] == 30


def test_missing_and_corrupt_structures_are_counted_drops():
    table, structures = fixture_electrodes()
    structures.pop("mp-Li0")
    structures["mp-Li1"] = "data_broken\n_cell_length_a nonsense\n"
    result = curate(raw(table, structures))
    rules = dropped_rules(result)
    assert rules["mp-Li0_Li"] == "missing_structure"
    assert rules["mp-Li1_Li"] == "missing_structure"
    assert "could not parse CIF" in result.dropped.set_index("battery_id").loc["mp-Li1_Li", "detail"]
    assert result.counts.loc["Li", "missing_structure"] == 28


def test_disordered_structure_dropped():
    table, structures = fixture_electrodes()
    from tests.conftest import rocksalt

    disordered = rocksalt(4.2, "Co")
    disordered.replace(0, {"Mg": 0.5, "Co": 0.5})
    structures["mp-Mg3"] = disordered.as_dict()
    result = curate(raw(table, structures))
    assert dropped_rules(result)["mp-Mg3_Mg"] == "disordered_structure"


def test_unknown_ion_and_missing_voltage():
    table, structures = fixture_electrodes()
    table.loc[0, "working_ion"] = "Xx"
    table.loc[1, "average_voltage"] = None
    result = curate(raw(table, structures))
    rules = dropped_rules(result)
    assert rules[table.loc[0, "battery_id"]] == "unknown_ion"
    assert rules[table.loc[1, "battery_id"]] == "missing_voltage"


def test_duplicates_conflicting_dropped_consistent_deduplicated():
    table, structures = fixture_electrodes()
    conflicting = table.iloc[[2]].assign(battery_id="dup-a", average_voltage=table.loc[2, "average_voltage"] + 1.0)
    consistent = table.iloc[[3]].assign(battery_id="dup-b")
    result = curate(raw(pd.concat([table, conflicting, consistent], ignore_index=True), structures))
    rules = dropped_rules(result)
    assert rules["dup-a"] == rules[table.loc[2, "battery_id"]] == "duplicate_electrode"
    assert rules["dup-b"] == "duplicate_electrode"
    assert table.loc[3, "battery_id"] in set(result.table["battery_id"])


def test_inconsistent_voltage_between_releases():
    table, structures = fixture_electrodes()
    table.loc[4, "average_voltage_sondrt"] = table.loc[4, "average_voltage"] + 0.8
    table.loc[5, "average_voltage_sondrt"] = table.loc[5, "average_voltage"] + 0.2
    result = curate(raw(table, structures), CurationParams(max_voltage_disagreement=0.5))
    rules = dropped_rules(result)
    assert rules[table.loc[4, "battery_id"]] == "inconsistent_voltage"
    assert table.loc[5, "battery_id"] not in rules


def test_voltage_outlier_by_robust_z():
    table, structures = fixture_electrodes()
    table.loc[6, ["average_voltage", "average_voltage_sondrt"]] = 25.0
    result = curate(raw(table, structures))
    assert dropped_rules(result)[table.loc[6, "battery_id"]] == "voltage_outlier"
    lenient = curate(raw(table, structures), CurationParams(outlier_mad_z=1000))
    assert table.loc[6, "battery_id"] in set(lenient.table["battery_id"])


def test_splits_deterministic_and_proportional():
    table, structures = fixture_electrodes(n_per_ion=50)
    a = curate(raw(table, structures), CurationParams(seed=7)).table
    b = curate(raw(table, structures), CurationParams(seed=7)).table
    c = curate(raw(table, structures), CurationParams(seed=8)).table
    pd.testing.assert_frame_equal(a, b)
    assert not a["split_random"].equals(c["split_random"])
    counts = a[a.working_ion == "Li"]["split_random"].value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (40, 5, 5)


def test_framework_split_never_shares_a_host():
    table, structures = fixture_electrodes(n_per_ion=60)
    labels = assign_splits(table, "framework", seed=3)
    parts_per_host = table.assign(split=labels).groupby(["working_ion", "framework_formula"])["split"].nunique()
    assert (parts_per_host == 1).all()
    assert set(labels) == {"train", "val", "test"}


def test_bad_snapshot_files_give_one_sentence(tmp_path):
    with pytest.raises(VoltmodelsError, match="does not exist"):
        load_snapshot(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "mp_electrodes.csv").write_text("")
    with pytest.raises(VoltmodelsError, match="not a readable CSV"):
        load_snapshot(empty)
    table, structures = fixture_electrodes()
    folder = write_snapshot(tmp_path / "nocol", table.drop(columns=["average_voltage"]), structures)
    with pytest.raises(VoltmodelsError, match="lacks the required column\\(s\\) average_voltage"):
        load_snapshot(folder)
    folder = write_snapshot(tmp_path / "badgz", table, structures)
    (folder / "mp_electrode_structures_compact.json.gz").write_bytes(b"not gzip")
    with pytest.raises(VoltmodelsError, match="not a readable gzipped JSON"):
        load_snapshot(folder)


class FakeMPRester:
    """Stands in for mp_api.client.MPRester: same call shapes, data from the fixture."""

    def __init__(self, api_key):
        self.table, self.raw_structures = fixture_electrodes()
        self.materials = self
        self.insertion_electrodes = self
        self.summary = self
        self.calls = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def search(self, working_ion=None, material_ids=None, fields=None):
        self.calls.append((working_ion, material_ids))
        if working_ion is not None:
            rows = self.table[self.table.working_ion == working_ion]
            return [{k: r.get(k) for k in fields} for r in rows.to_dict("records")]
        from voltmodels.graphs.convert import parse_structure

        return [
            {"material_id": mid, "structure": parse_structure(self.raw_structures[mid])}
            for mid in material_ids
            if mid in self.raw_structures
        ]


def test_mp_source_produces_the_same_table_as_a_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("MP_API_KEY", "fake-key")
    from_mp = curate(load_from_mp(["Li", "Mg"], client_factory=FakeMPRester), CurationParams(ions=("Li", "Mg")))
    table, structures = fixture_electrodes()
    from_snapshot = curate(load_snapshot(write_snapshot(tmp_path / "s", table, structures)), CurationParams(ions=("Li", "Mg")))
    columns = ["battery_id", "working_ion", "id_discharge", "average_voltage", "split_random", "split_framework"]
    pd.testing.assert_frame_equal(from_mp.table[columns], from_snapshot.table[columns])


def test_mp_source_without_key_explains_both_options(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(VoltmodelsError, match="MP_API_KEY"):
        load_from_mp(["Li"], client_factory=FakeMPRester)


def run_curate(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipelines.curate", *args], cwd=REPO, capture_output=True, text=True, env=env)


def test_curate_cli_without_source_is_one_clear_line(monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("VOLTMODELS_SNAPSHOT", "MP_API_KEY")}
    proc = run_curate(env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: No data source")
    assert "Traceback" not in proc.stderr


def test_curate_cli_unknown_ion(tiny_snapshot):
    proc = run_curate("--snapshot", str(tiny_snapshot), "--ions", "Li,Unobtainium")
    assert proc.returncode == 2 and "Unknown working ion(s) Unobtainium" in proc.stderr


def test_saved_dataset_parses_a_structure_only_when_asked(tmp_path, monkeypatch):
    from voltmodels.data import dataset as dataset_module
    from voltmodels.data.dataset import CuratedDataset, save_dataset

    table, structures = fixture_electrodes()
    save_dataset(curate(raw(table, structures), CurationParams()), tmp_path, "test")
    saved = CuratedDataset(tmp_path)
    parsed = []
    original = dataset_module.parse_structure
    monkeypatch.setattr(dataset_module, "parse_structure", lambda value: parsed.append(1) or original(value))
    first = saved.table["id_discharge"].iloc[0]
    assert len(saved.structures) == len(saved.compact_structures) > 2 and first in saved.structures and "mp-nowhere" not in saved.structures
    assert saved.structures[first] == original(saved.compact_structures[first])
    assert saved.structures[first] is saved.structures[first] and len(parsed) == 1  # one parsed, once
    with pytest.raises(KeyError):
        saved.structures["mp-nowhere"]
