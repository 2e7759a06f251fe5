"""TEMP: the old home of the metric registry and the evaluation workflow, kept while a recipe may still import from
it. The registry now lives in eval/metrics.py, the workflow in studies/evaluation.py."""

from humantune.eval.metrics import METRICS  # noqa: F401  # TEMP: removed once recipes import the new home
from humantune.studies.evaluation import evaluate  # noqa: F401  # TEMP: removed once recipes import the new home
