"""One thin module per MLproject entry point: parse params, call voltmodels, log to MLflow."""
