"""Where things live: snapshot, caches, tracking store.

Every location can be overridden by an environment variable so that the same code runs in a
checkout, in CI and on a shared tracking server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

SNAPSHOT_ENV = "VOLTMODELS_SNAPSHOT"
CACHE_ENV = "VOLTMODELS_CACHE"

#: Ions present in the MP insertion-electrode data, Li first (the transfer source).
SUPPORTED_IONS = ("Li", "Mg", "Ca", "Zn", "Al", "Na", "K", "Y", "Rb", "Cs")


class VoltmodelsError(Exception):
    """An error caused by the user's input; its message is one sentence meant for the user."""


def parse_ions(value: str, every: Sequence[str] | None = SUPPORTED_IONS) -> list[str] | None:
    """The working ions of an `--ion(s)` option: "all" (or nothing) gives `every` (None if None), else a
    comma list ("Mg, Ca": blanks and repeats dropped, order kept). Checking the names is the caller's rule."""
    if value.strip().lower() in ("", "all"):
        return None if every is None else list(every)
    return list(dict.fromkeys(ion.strip() for ion in value.split(",") if ion.strip()))


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Disk cache for graphs and composition features, shared by all entry points."""
    path = Path(os.environ.get(CACHE_ENV) or project_root() / ".voltmodels_cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_snapshot(path: str | os.PathLike | None) -> Path | None:
    """The snapshot folder from an explicit path, else from $VOLTMODELS_SNAPSHOT, else None."""
    value = str(path) if path else os.environ.get(SNAPSHOT_ENV, "")
    return Path(value).expanduser().resolve() if value else None


def default_tracking_uri() -> str:
    """Embedded SQLite store in the project directory unless MLFLOW_TRACKING_URI says otherwise."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


DEVICE_ENV = "VOLTMODELS_DEVICE"


def torch_device() -> str:
    """Where training runs: $VOLTMODELS_DEVICE ("cpu", "cuda", "cuda:1", or "auto" = cuda when present).

    CPU by default so that results on a laptop, in CI and on a server agree; trained models always
    come back to the CPU, so saving, serving and interpretation never see a GPU tensor.
    """
    value = os.environ.get(DEVICE_ENV, "cpu").strip() or "cpu"
    if value == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return value


def set_torch_threads(n: int | None = None) -> None:
    """Pin torch's thread pools: unpinned, several processes on 2 cores stall each other badly."""
    import torch

    # Default 1: on a shared 2-core machine multi-threaded ops spin-wait on busy cores and stall.
    n = n or int(os.environ.get("VOLTMODELS_TORCH_THREADS", "0")) or 1
    torch.set_num_threads(n)
    set_interop = getattr(torch, "set_num_interop_threads", None)
    try:
        if set_interop is not None:
            set_interop(1)
    except RuntimeError:  # may only be set once per process, before any parallel work
        pass


@contextmanager
def pinned_threads(n: int | None = None):
    """Torch's pools and the OpenMP / BLAS ones (gradient boosting, numpy) at `n` threads inside the
    block: unpinned, parallel workers on 2 cores stall each other 10-100x."""
    from threadpoolctl import threadpool_limits

    set_torch_threads(n)
    with threadpool_limits(n or 1):
        yield


_watcher_pid = 0  # the process whose watcher thread runs (threads do not survive a fork)


def exit_with_parent() -> None:
    """End this worker process when the process that started it is gone; a no-op in a main process.

    Every pool voltmodels starts (energies, relaxations, graphs, the evaluate grid on loky) calls
    this in its workers: a killed run otherwise left them computing for up to an hour on the cores
    of whatever ran next, and then waiting forever on a queue whose write end they hold themselves.
    A thread waits on the parent, without polling where the platform allows: on multiprocessing's
    sentinel, else (loky's workers have none) on a Linux pidfd of the parent.
    """
    import multiprocessing
    import threading

    global _watcher_pid
    parent = multiprocessing.parent_process()
    if parent is None or _watcher_pid == os.getpid():
        return
    _watcher_pid = os.getpid()
    if parent.sentinel is not None:
        wait = parent.join
    else:
        try:
            pidfd = os.pidfd_open(parent.pid)
        except ProcessLookupError:  # already gone
            os._exit(0)
        except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll for the re-parenting
            import time

            def wait() -> None:
                while os.getppid() == parent.pid:
                    time.sleep(1.0)
        else:
            import select

            def wait() -> None:
                select.select([pidfd], [], [])

    def wait_then_exit() -> None:
        wait()
        os._exit(0)

    threading.Thread(target=wait_then_exit, name="exit-with-parent", daemon=True).start()
