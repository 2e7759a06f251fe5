"""Workflows that generate with labelled models, score the images with :mod:`humantune.eval` and write results and
reports, e.g. the evaluation of a folder of generated images (:mod:`humantune.studies.evaluation`) and the
anomaly-correction study (:mod:`humantune.studies.anomaly`). Recipes and benchmarks call them; they sit above
``eval``, ``models`` and ``report`` and below ``cli``."""
