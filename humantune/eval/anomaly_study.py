"""TEMP: the old home of the anomaly workflow, kept while ``recipes/dreambooth_lora.py`` still imports ``collect``
from it. ``collect`` is :func:`humantune.data.mannequin.prompted.collect`; scan and compare are in
:mod:`humantune.studies.anomaly`."""

from humantune.data.mannequin.prompted import collect  # noqa: F401  # TEMP: removed once recipes import the new home
