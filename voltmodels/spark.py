"""The one way voltmodels starts Spark (large screens, the evaluation grid on joblibspark)."""

from __future__ import annotations

import os


def spark_session(master: str = "local[2]", app_name: str = "voltmodels"):
    """A Spark session whose Python workers run torch on one thread each (set before the JVM starts,
    so local workers inherit it; on a cluster, spark.executorEnv carries it)."""
    from pyspark.sql import SparkSession

    pinned = {"VOLTMODELS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    os.environ.update({k: os.environ.get(k, v) for k, v in pinned.items()})
    builder = SparkSession.builder.master(master).appName(app_name).config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8")
    for key, value in pinned.items():
        builder = builder.config(f"spark.executorEnv.{key}", value)
    return builder.getOrCreate()
