"""touchpoint: the next-best-touchpoint recommender.

This package holds only the command line; the work is done by ``features`` (the pure
feature library), ``training`` (models, evaluation, MLflow) and ``serving`` (the decision
engine and the HTTP API).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("touchpoint")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
