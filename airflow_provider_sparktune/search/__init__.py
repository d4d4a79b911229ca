"""One searcher interface (``base``) with hyperopt's algorithms and Optuna's samplers behind it."""
