"""One root error for the provider and a leaf per kind of failure, so callers can catch precisely."""

from __future__ import annotations


class SparktuneError(Exception):
    """Root of every error this provider raises on purpose."""


class SearchSpaceError(SparktuneError, ValueError):
    """The search space spec is invalid; the message names the field path and the fix."""


class ObjectiveError(SparktuneError):
    """The objective cannot be resolved, pickled or returned something that is not a loss."""


class TuningConfigError(SparktuneError, ValueError):
    """An argument of the tuning run (budget, parallelism, algo, ...) is out of range."""


class SparkConnectionError(SparktuneError):
    """No usable classic SparkContext could be obtained from the Spark connection."""


class TrackingError(SparktuneError):
    """The MLflow tracking store is unreachable or refused a write."""


class AllTrialsFailedError(SparktuneError):
    """Every trial of the run failed; the message carries the first trial's traceback."""


class TooManyFailedTrialsError(SparktuneError):
    """The objective failed systematically; the run stopped before spending its whole budget."""


class TuningCancelledError(SparktuneError):
    """The run was cancelled (task killed) before it could finish."""


class StagingError(SparktuneError):
    """The training data cannot be measured, planned or loaded."""


class TrialPruned(SparktuneError):
    """Raised by an objective after ``trial.should_prune()`` said True: the trial ends as pruned.

    The trial's last reported value becomes its loss; the run goes on.
    """


class RegistryError(SparktuneError):
    """The MLflow model registry refused a registration or an alias move; the model run is kept."""


class SparkVersionError(SparktuneError):
    """The installed pyspark and pyspark-client are on different Spark lines; the message names both."""
