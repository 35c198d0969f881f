"""The script runner: a Flask dashboard that runs allow-listed scripts on bridge.

Run it with ``python -m examples.script_runner`` (see ``README.md`` in this
directory). The modules:

* ``app``: the allow-list, the :class:`~examples.script_runner.app.ScriptRunner`
  (the scripts as ``Bridge.run_process`` jobs) and the Flask routes;
* ``scripts/``: the allow-list itself, four small demo scripts.
"""
