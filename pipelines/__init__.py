"""The estimator layer, grouped by role (README "Architecture"): `tasks/` (one class per task, the registry,
the multi-task composition), `inputs/`, `evaluation/`, `export/`, `training/`, `cli/`, and beside them the
config schema (`config.py`, `config_lib.py`) and the user-facing errors (`errors.py`).

Importing this package has no side effects: process settings are made by the entry points
(`pipelines.cli.environment`).
"""
