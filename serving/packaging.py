"""What every logged voltmodels pyfunc carries: pinned pip requirements, the package folders as code
paths, and an example request of real structures."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

#: The voltmodels and serving package folders, located from this file (not the working directory).
PACKAGE_DIRS = [str(Path(__file__).resolve().parent.parent / p) for p in ("voltmodels", "serving")]


def pinned(packages: Iterable[str]) -> list[str]:
    """`name==version` of each package as installed here (importlib.metadata; a local build tag such as
    torch's `+cpu` dropped, since indexes do not serve it); a package not installed stays unpinned."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def installed(packages: Iterable[str]) -> list[str]:
    """The packages of the list that are installed here (a model of this checkout can only use those)."""
    found = []
    for package in packages:
        try:
            version(package)
            found.append(package)
        except PackageNotFoundError:
            pass
    return found


def example_request(structures: Sequence, ion: str) -> pd.DataFrame:
    """A request of real structures as CIF text, one row each: the example logged with a model's signature."""
    return pd.DataFrame({"structure": [structure.to(fmt="cif") for structure in structures], "working_ion": [ion] * len(structures)})


#: Modules whose types a saved estimator may hold: skops refuses to build anything else.
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")


def save_estimator(estimator, path: str | Path) -> Path:
    """A fitted scikit-learn estimator in skops format (no arbitrary pickle), deflate-compressed
    (tree ensembles shrink about 3x).

    skops writes an object reachable by two attributes twice, so an ensemble's `named_estimators_`
    (VotingRegressor: a by-name view of `estimators_`) is left out and rebuilt by load_estimator.
    """
    import zipfile

    import skops.io

    named = estimator.__dict__.pop("named_estimators_", None)
    try:
        skops.io.dump(estimator, path, compression=zipfile.ZIP_DEFLATED)
    finally:
        if named is not None:
            estimator.named_estimators_ = named
    return Path(path)


def load_estimator(path: str | Path):
    """Load an estimator saved by save_estimator; refuses one holding types outside scikit-learn,
    numpy and scipy instead of constructing them."""
    import skops.io

    from voltmodels.config import VoltmodelsError

    untrusted = skops.io.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
    if foreign:
        raise VoltmodelsError(f"{Path(path).name} holds types outside scikit-learn/numpy/scipy ({', '.join(foreign)}); refusing to load it")
    estimator = skops.io.load(path, trusted=untrusted)
    if hasattr(estimator, "estimators_") and isinstance(getattr(estimator, "estimators", None), list) and not hasattr(estimator, "named_estimators_"):
        from sklearn.utils import Bunch

        names = [name for name, member in estimator.estimators if member != "drop"]
        estimator.named_estimators_ = Bunch(**dict(zip(names, estimator.estimators_)))
    return estimator
