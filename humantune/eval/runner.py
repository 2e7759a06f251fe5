"""TEMP: the old home of the metric registry and the evaluation workflow, kept while the recipes still import from
it. The registry is :mod:`humantune.eval.metrics`; the workflow is :mod:`humantune.studies.evaluation`."""

from humantune.eval.metrics import METRICS  # noqa: F401  # TEMP: removed once recipes import the new home
from humantune.studies.evaluation import evaluate  # noqa: F401  # TEMP: removed once recipes import the new home
