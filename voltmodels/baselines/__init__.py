"""Conventional-ML baselines: SVR, KRR and random forest on matminer descriptors of the discharged structure.

Zhang et al. (2022) compare CGCNN with support-vector regression, kernel ridge regression and a random
forest trained on composition descriptors. Here the descriptors come from matminer, computed on the
discharged (ion-rich) structure of every electrode:

* composition: Magpie ``ElementProperty`` statistics (132), ``Stoichiometry``, ``ValenceOrbital``,
  ``IonProperty(fast=True)``, ``BandCenter``, ``TMetalFraction``;
* structure: ``DensityFeatures`` and the numeric ``GlobalSymmetryFeatures``.

Modules: ``features`` (descriptors, NaN handling and their disk cache), ``search`` (pipelines and
hyperparameter search), ``evaluation`` (seeded splits, summaries), ``importances``. Nothing here knows
about MLflow: ``pipelines/baselines.py`` logs, ``serving/baseline_model.py`` serves.
"""

from voltmodels.baselines.evaluation import (
    DEFAULT_REPEATS,
    MIN_ROWS,
    IonEvaluation,
    check_ion,
    evaluate_ion,
    evaluate_split,
    features_and_targets,
    metric_name,
    summary_metrics,
)
from voltmodels.baselines.features import (
    FEATURE_VERSION,
    FEATURIZERS,
    FeatureCache,
    dataset_features,
    feature_blocks,
    feature_names,
    feature_set_key,
    featurize_structure,
    featurize_structures,
)
from voltmodels.baselines.importances import gini_importances, importance_by_property, importance_plot
from voltmodels.baselines.search import METHOD_TITLES, METHODS, FitResult, SearchSpec, fit_method, make_pipeline, search_spec
from voltmodels.metrics import regression_metrics, repeat_std, summarize  # re-exported: callers use bl.summarize etc.

__all__ = [
    "DEFAULT_REPEATS",
    "FEATURE_VERSION",
    "FEATURIZERS",
    "FeatureCache",
    "FitResult",
    "IonEvaluation",
    "METHODS",
    "METHOD_TITLES",
    "MIN_ROWS",
    "SearchSpec",
    "check_ion",
    "dataset_features",
    "evaluate_ion",
    "evaluate_split",
    "feature_blocks",
    "feature_names",
    "feature_set_key",
    "features_and_targets",
    "featurize_structure",
    "featurize_structures",
    "fit_method",
    "gini_importances",
    "importance_by_property",
    "importance_plot",
    "make_pipeline",
    "metric_name",
    "regression_metrics",
    "repeat_std",
    "search_spec",
    "summarize",
    "summary_metrics",
]
