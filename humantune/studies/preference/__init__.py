"""Human preference study: side-by-side votes in a small web app, automatic judges answering the same pairs, and the
statistics the papers report (``humantune study create | serve | judge | results``).

Modules: :mod:`.study` makes a study folder from generated folders; :mod:`.storage` is its SQLite (WAL) database;
:mod:`.server` the FastAPI app; :mod:`.judges` and :mod:`.vlm` the automatic judges; :mod:`.results` the statistics
and report; :mod:`.cli` the ``humantune study`` command.
"""
