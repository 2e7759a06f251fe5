"""TEMP: the old home of the anomaly workflow, kept while a recipe may still import ``collect`` from it. ``collect``
now lives in data/mannequin/prompted.py; scan and compare in studies/anomaly/."""

from humantune.data.mannequin.prompted import collect  # noqa: F401  # TEMP: removed once recipes import the new home
