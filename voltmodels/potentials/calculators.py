"""A universal potential chosen by name, as an ASE calculator.

`sevennet-0`, its variants `sevennet-l3i5` (larger, slower) and `sevennet-mf-0` (multi-fidelity, read
at its PBE level, the fidelity of MP's voltages), and `chgnet` work offline: their weights ship
inside the `sevenn` and `chgnet` wheels.
Potentials whose packages download weights at run time (MACE, ORB, MatterSim, or another SevenNet
checkpoint) take a local weights file the user names: `mace:/path/model.model`. The potential's
`key` (name, package version, weights file content hash) keys every energy in the cache, so a new
package release or another weights file never reuses stale energies.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from voltmodels.config import VoltmodelsError, torch_device

#: The SevenNet checkpoints inside the `sevenn` wheel, and the fidelity (modal) each is read at.
SEVENNET_CHECKPOINTS = {"sevennet-0": ("7net-0", None), "sevennet-l3i5": ("7net-l3i5", None), "sevennet-mf-0": ("7net-mf-0", "PBE")}
#: Potentials that load without a weights file, and the package that ships their weights.
BUILTIN = {**dict.fromkeys(SEVENNET_CHECKPOINTS, "sevenn"), "chgnet": "chgnet"}
#: Potentials that need a local weights file (`name:/path`), and the package that reads it.
FROM_FILE = {"mace": "mace-torch", "sevennet": "sevenn", "mattersim": "mattersim", "orb": "orb-models"}
#: The served default: SevenNet-l3i5, the most accurate potential here (zero-shot 0.090 V against
#: SevenNet-0's 0.114 V on the 5 random splits; Delta-learning on it 0.073 V against 0.090 V), at
#: 2.3x SevenNet-0's cost per energy (`-P potential=sevennet-0` trades that accuracy for speed).
DEFAULT_POTENTIAL = "sevennet-l3i5"


@dataclass
class Potential:
    name: str  # e.g. "sevennet-0", "mace:/models/mace-mp.model"
    key: str  # name + package version (+ weights hash): the cache key part
    calculator: Any  # an ASE calculator
    #: A function Atoms -> per-atom feature matrix (n_atoms, d) read during the energy call, or None.
    embedding_reader: Callable[[], Any] | None = None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise VoltmodelsError(f"the potential needs the Python package {package!r}; install it with pip install {package}") from None


def _file_hash(path: Path) -> str:
    hasher = hashlib.blake2b(digest_size=8)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def split_name(name: str) -> tuple[str, Path | None]:
    """`sevennet-0` -> ("sevennet-0", None); `mace:/w.model` -> ("mace", Path("/w.model")).
    A combination `a+b` is checked part by part and returns its first part."""
    if "+" in name:
        return [split_name(part) for part in name.split("+")][0]
    kind, _, weights = name.strip().partition(":")
    kind = kind.lower()
    if kind in BUILTIN and not weights:
        return kind, None
    if kind in FROM_FILE:
        if not weights:
            raise VoltmodelsError(f"potential {kind!r} downloads its weights at run time; name a local weights file as {kind}:/path/to/weights")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise VoltmodelsError(f"the weights file {path} of potential {kind!r} does not exist")
        return kind, path.resolve()
    known = ", ".join([*BUILTIN, *(f"{k}:/path" for k in FROM_FILE)])
    raise VoltmodelsError(f"unknown potential {name!r}; use one of {known}")


def potential_key(name: str) -> str:
    """The cache identity of a potential without loading it (cheap: package metadata, file hash);
    for potentials combined with "+", their keys joined with "+"."""
    if "+" in name:
        return "+".join(potential_key(part) for part in name.split("+"))
    kind, weights = split_name(name)
    package = BUILTIN.get(kind) if weights is None else FROM_FILE[kind]
    key = f"{kind}@{package}-{_version(package)}"
    return key if weights is None else f"{key}-{_file_hash(weights)}"


def potential_tag(name: str) -> str:
    """A label of the potential for MLflow metric names, which may not hold "+":
    "sevennet-l3i5+sevennet-0" -> "sevennet-l3i5_and_sevennet-0", "mace:/w.model" -> "mace"."""
    return "_and_".join(split_name(part)[0] for part in name.split("+"))


@functools.lru_cache(maxsize=4)
def load_potential(name: str = DEFAULT_POTENTIAL, device: str | None = None) -> Potential:
    """The potential `name` on `device` (default $VOLTMODELS_DEVICE); loaded once per process."""
    kind, weights = split_name(name)
    device = device or torch_device()
    key = potential_key(name)
    if kind in SEVENNET_CHECKPOINTS:
        checkpoint, modal = SEVENNET_CHECKPOINTS[kind]
        return _sevennet(name, key, checkpoint, device, modal)
    if kind == "sevennet":
        return _sevennet(name, key, str(weights), device)
    if kind == "chgnet":
        from chgnet.model import CHGNet, CHGNetCalculator

        model = CHGNet.load(verbose=False)
        return Potential(name, key, CHGNetCalculator(model=model, use_device=device))
    if kind == "mace":
        from mace.calculators import MACECalculator

        return Potential(name, key, MACECalculator(model_paths=str(weights), device=device, default_dtype="float64"))
    if kind == "mattersim":
        from mattersim.forcefield import MatterSimCalculator

        return Potential(name, key, MatterSimCalculator(load_path=str(weights), device=device))
    if kind == "orb":  # pragma: no cover - orb-models is not installed in CI
        from orb_models.forcefield import pretrained
        from orb_models.forcefield.calculator import ORBCalculator

        return Potential(name, key, ORBCalculator(pretrained.orb_v3_conservative_inf_omat(weights_path=str(weights), device=device), device=device))
    raise VoltmodelsError(f"unknown potential {name!r}")  # pragma: no cover - split_name checked it


def _sevennet(name: str, key: str, model: str, device: str, modal: str | None = None) -> Potential:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tensor-product accelerator" on every CPU load
        from sevenn.calculator import SevenNetCalculator

        calculator = SevenNetCalculator(model, device=device, **({"modal": modal} if modal else {}))
    # The scalar node features entering the readout are the potential's learned atomic
    # representation: captured by a forward hook during the energy call, so they cost nothing extra.
    captured: dict[str, Any] = {}
    readout = calculator.model._modules.get("reduce_input_to_hidden")

    def hook(module, inputs):
        from sevenn import _keys as KEY

        # A pre-hook: the readout overwrites the node features of the data dict in place.
        captured["x"] = inputs[0][KEY.NODE_FEATURE].detach().cpu().numpy().copy()  # (n_atoms, 128)

    if readout is not None:
        readout.register_forward_pre_hook(hook)

    def read():
        return captured.pop("x", None)

    return Potential(name, key, calculator, read if readout is not None else None)
