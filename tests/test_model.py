"""CGCNN model and training mechanics on small real-looking crystals built here."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import rocksalt
from voltmodels.graphs.batch import collate
from voltmodels.graphs.convert import structure_to_graph
from voltmodels.graphs.graph import GraphSettings
from voltmodels.model import CGCNN, CGCNNConfig, load_checkpoint, save_checkpoint
from voltmodels.metrics import conformal_half_width
from voltmodels.training import GraphSet, TrainConfig, fit_local_head, predict, train

SETTINGS = GraphSettings()


def toy_set(n: int, seed: int = 0) -> GraphSet:
    """Rock salts whose 'voltage' is a smooth function of lattice constant and cation."""
    rng = np.random.default_rng(seed)
    graphs, targets = [], []
    for k in range(n):
        a = 3.9 + 0.6 * rng.random()
        cation = ["Co", "Ni", "Mn"][k % 3]
        s = rocksalt(a, cation)
        s.replace(0, "Li")
        graphs.append(structure_to_graph(s, SETTINGS))
        targets.append(2.0 + 3.0 * (a - 3.9) + 0.5 * (k % 3))
    return GraphSet(graphs=graphs, targets=np.asarray(targets, np.float32), ids=[str(i) for i in range(n)])


def small_model() -> CGCNN:
    torch.manual_seed(0)
    return CGCNN(CGCNNConfig(atom_fea_len=16, h_fea_len=16, n_conv=2, edge_fea_len=SETTINGS.n_edge_features))


def test_prediction_does_not_depend_on_batch_companions_or_atom_order():
    data = toy_set(6)
    model = small_model().eval()
    together = predict(model, data, SETTINGS)
    alone = np.array([predict(model, GraphSet([g], data.targets[i : i + 1], ["x"]), SETTINGS)[0] for i, g in enumerate(data.graphs)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    s = rocksalt(4.1, "Co")
    s.replace(0, "Li")
    np.random.seed(0)
    s.perturb(0.05)  # break the rock salt's equal-distance ties at the 12-neighbour cut
    reordered = s.copy()
    reordered.reverse()  # same crystal, sites in the opposite order
    a = model.predict_volts(collate([structure_to_graph(s, SETTINGS)], SETTINGS))
    b = model.predict_volts(collate([structure_to_graph(reordered, SETTINGS)], SETTINGS))
    assert torch.allclose(a, b, atol=1e-5)


def test_convolution_equals_the_papers_concatenated_form():
    """The per-atom split of fc_full is an optimization: it must compute paper Eq. 1 exactly."""
    model = small_model()
    conv = model.convs[0]
    batch = collate(toy_set(3).graphs, SETTINGS)
    atoms = model.embedding(batch.atom_fea)
    z = torch.cat([atoms[batch.edge_src], atoms[batch.edge_dst], batch.edge_fea], dim=1)
    gate, core = conv.bn_edges(conv.fc_full(z)).chunk(2, dim=1)
    messages = torch.sigmoid(gate) * torch.nn.functional.softplus(core)
    summed = torch.zeros_like(atoms).index_add_(0, batch.edge_src, messages)
    expected = torch.nn.functional.softplus(atoms + conv.bn_atoms(summed))
    torch.testing.assert_close(conv(atoms, batch.edge_src, batch.edge_dst, batch.edge_fea), expected, rtol=1e-5, atol=1e-5)


def test_training_learns_and_keeps_the_best_epoch():
    train_set, val_set = toy_set(48, seed=1), toy_set(12, seed=2)
    before = np.abs(predict(small_model(), val_set, SETTINGS) - val_set.targets).mean()
    result = train(small_model(), train_set, val_set, SETTINGS, TrainConfig(epochs=40, learning_rate=5e-3, batch_size=16, patience=40), progress=False)
    after = np.abs(predict(result.model, val_set, SETTINGS) - val_set.targets).mean()
    assert after < 0.5 * before
    assert after == pytest.approx(result.best_val_mae, rel=1e-4)
    assert result.history[result.best_epoch]["val_mae"] == pytest.approx(result.best_val_mae)


def test_fine_tuning_never_returns_worse_than_its_start_on_validation():
    train_set, val_set = toy_set(48, seed=1), toy_set(12, seed=2)
    fitted = train(small_model(), train_set, val_set, SETTINGS, TrainConfig(epochs=20, learning_rate=5e-3, batch_size=16, patience=20), progress=False).model
    start = np.abs(predict(fitted, val_set, SETTINGS) - val_set.targets).mean()
    # A learning rate of 10 wrecks the weights in one step: the starting weights must come back.
    wrecked = train(copy.deepcopy(fitted), train_set, val_set, SETTINGS, TrainConfig(epochs=3, learning_rate=10.0, batch_size=16, patience=3), progress=False, fit_scaler=False)
    assert wrecked.best_epoch == -1
    assert wrecked.best_val_mae == pytest.approx(start, rel=1e-5)
    np.testing.assert_allclose(predict(wrecked.model, val_set, SETTINGS), predict(fitted, val_set, SETTINGS), rtol=1e-5)


def test_multi_ion_fine_tuning_keeps_the_shared_models_voltage_scale():
    from voltmodels.transfer import TransferConfig, fit_method

    shared = train(small_model(), toy_set(48, seed=1), toy_set(12, seed=2), SETTINGS, TrainConfig(epochs=3, batch_size=16), progress=False).model
    ion = {part: toy_set(n, seed=s) for part, n, s in (("train", 24, 5), ("val", 8, 6), ("test", 8, 7))}
    for part in ion.values():
        part.targets += 1.5  # another ion's voltage range
    config = TransferConfig(epochs=2, patience=2)
    from_shared, _ = fit_method("multi_finetune", small_model(), ion, SETTINGS, config, shared)
    assert float(from_shared.target_mean) == pytest.approx(float(shared.target_mean))
    from_li, _ = fit_method("finetune", shared, ion, SETTINGS, config)  # a Li base is re-standardized to the ion
    assert float(from_li.target_mean) == pytest.approx(float(ion["train"].targets.mean()), rel=1e-5)


def test_freezing_trains_only_the_hidden_and_output_layers():
    train_set, val_set = toy_set(24, seed=3), toy_set(8, seed=4)
    model = small_model()
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(CGCNN.HEAD_LAYERS)}
    head_before = model.fc_out.weight.clone()
    result = train(model, train_set, val_set, SETTINGS, TrainConfig(epochs=5, trainable="head", batch_size=8), progress=False)
    for key, value in result.model.state_dict().items():
        if key in frozen_before and key not in ("target_mean", "target_std"):
            assert torch.equal(value, frozen_before[key]), f"{key} changed although frozen"
    assert not torch.equal(result.model.fc_out.weight, head_before)


def test_local_voltages_average_to_the_local_head_prediction():
    """Eq. 2: a crystal's local-head voltage, local_head(mean-pooled atom vectors), is the mean of its atoms'
    local voltages (the head is linear, pooling is a mean); fit_local_head fits those crystal voltages."""
    data = toy_set(30, seed=5)
    model = small_model().eval()
    model.set_target_scaler(data.targets.mean(), data.targets.std())
    train_mae = fit_local_head(model, data, SETTINGS)
    batch = collate(data.graphs, SETTINGS)
    with torch.no_grad():
        local = model.local_voltages(batch).double()
        pooled = model.pooled(batch)
        from_head = (model.local_head(pooled).squeeze(1) * model.target_std + model.target_mean).double()
    assert local.shape == (len(batch.crystal_index),)
    per_crystal = torch.zeros(len(data), dtype=torch.float64).index_add_(0, batch.crystal_index, local) / torch.bincount(batch.crystal_index)
    torch.testing.assert_close(per_crystal, from_head, rtol=0, atol=1e-5)
    # The crystal voltages the local voltages reproduce are the ones fit_local_head fitted: its MAE is theirs.
    targets = torch.as_tensor(data.targets, dtype=torch.float64)
    assert float((per_crystal - targets).abs().mean()) == pytest.approx(train_mae, abs=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = small_model().eval()
    model.set_target_scaler(3.2, 1.1)
    save_checkpoint(model, tmp_path / "m.pt", SETTINGS.to_dict(), {"ion": "Li"})
    loaded, settings, extra = load_checkpoint(tmp_path / "m.pt")
    data = toy_set(4)
    np.testing.assert_allclose(predict(model, data, SETTINGS), predict(loaded, data, GraphSettings.from_dict(settings)))
    assert extra["ion"] == "Li"


def test_checkpoint_loads_weights_only_and_refuses_pickles(tmp_path):
    """A checkpoint is tensors + a JSON string: torch.load(weights_only=True) reads it; one that would
    need pickle to load (e.g. an object that runs code) is refused, as is another format version."""
    import pickle

    import torch

    from voltmodels.config import VoltmodelsError

    model = small_model().eval()
    save_checkpoint(model, tmp_path / "m.pt", SETTINGS.to_dict(), {"ion": "Li", "mae": np.float64(0.3)})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(payload) == {"format_version", "metadata", "state_dict"} and isinstance(payload["metadata"], str)
    assert load_checkpoint(tmp_path / "m.pt")[2]["mae"] == pytest.approx(0.3)

    class RunsCode:
        def __reduce__(self):
            return (print, ("this ran while loading",))

    torch.save({"format_version": 2, "metadata": "{}", "state_dict": {}, "payload": RunsCode()}, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(VoltmodelsError, match="not a weights-only voltmodels checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"format_version": 1, "metadata": "{}", "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(VoltmodelsError, match="checkpoint format 1; this code reads format 2"):
        load_checkpoint(tmp_path / "old.pt")


def test_conformal_half_width_is_the_right_order_statistic():
    residual = np.arange(1, 20, dtype=float)  # n = 19, ceil(20 * 0.9) = 18th smallest
    assert conformal_half_width(residual, 0.9) == 18.0
    assert conformal_half_width(np.array([0.1, 0.2])) == float("inf")  # too few rows for 90 %


def test_calibration_rows_are_training_rows_no_cgcnn_trains_on():
    """The CGCNN's calibration rows: a seeded tenth of an ion's training rows (whole frameworks on
    the framework split), out of train in build_graph_sets, and in no other part."""
    from voltmodels.data.curation import calibration_rows

    rng = np.random.default_rng(0)
    n = 400
    rows = pd.DataFrame({"working_ion": ["Li"] * 300 + ["Al"] * 70 + ["Cs"] * 30, "battery_id": [f"b{i}" for i in range(n)],
                         "framework_formula": [f"F{i // 4}" for i in range(n)]})
    labels = np.where(rng.random(n) < 0.8, "train", np.where(rng.random(n) < 0.5, "val", "test"))
    for strategy in ("random", "framework"):
        chosen = calibration_rows(rows, labels, strategy, seed=3)
        assert (labels[chosen] == "train").all()
        li_train = ((rows["working_ion"] == "Li") & (labels == "train")).sum()
        assert round(0.1 * li_train) <= chosen[:300].sum() <= round(0.1 * li_train) + (3 if strategy == "framework" else 0)
        assert chosen[300:370].sum() >= 10  # Al's ~56 training rows spare the minimum of 10
        assert not chosen[370:].any()  # Cs's ~24 cannot spare 10 and keep 3x as many to train on
        if strategy == "framework":  # a framework is calibration rows entirely or not at all
            train = labels == "train"
            assert (rows[train].assign(c=chosen[train]).groupby("framework_formula")["c"].nunique() == 1).all()
        assert (calibration_rows(rows, labels, strategy, seed=3) == chosen).all()
        assert (calibration_rows(rows, labels, strategy, seed=4) != chosen).any()
