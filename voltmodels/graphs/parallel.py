"""Run a worker over many tasks: in this process for small batches, else in a forked process pool."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

from voltmodels.config import exit_with_parent

# Below this many tasks, a process pool costs more than it saves.
_MIN_ITEMS_FOR_POOL = 64


class ProgressBar:
    """tqdm when asked for and installed, else a no-op with the same update() interface."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        if enabled and total:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="featurizing structures", unit="structure")
            except ImportError:
                pass

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.close()


class TaskRunner:
    """Context manager giving ``run(tasks) -> iterator of worker(task)``, in task order.

    Small batches run in this process. Larger ones go to a ProcessPoolExecutor, which raises
    BrokenProcessPool if a worker dies instead of hanging like multiprocessing.Pool. On Linux the
    workers are forked: they start instantly with pymatgen already imported and, unlike spawn or
    forkserver, do not re-run the caller's ``__main__`` (which breaks for stdin, notebooks and unguarded
    scripts). torch's DataLoader makes the same choice; the workers only run pymatgen/numpy code.
    """

    def __init__(self, worker: Callable, n_tasks: int, n_jobs: int):
        self._worker = worker
        self._executor = None
        if n_jobs > 1 and n_tasks >= _MIN_ITEMS_FOR_POOL:
            use_fork = sys.platform.startswith("linux")
            context = multiprocessing.get_context("fork" if use_fork else None)
            self._executor = ProcessPoolExecutor(max_workers=min(n_jobs, n_tasks), mp_context=context, initializer=exit_with_parent)
            self._chunksize = max(1, min(32, n_tasks // (n_jobs * 8)))

    def __enter__(self):
        if self._executor is None:
            return lambda tasks: map(self._worker, tasks)
        return lambda tasks: self._executor.map(self._worker, tasks, chunksize=self._chunksize)

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
