"""Experiments: sweeps of tasks run into a results store, and the paper's three settings.

One pipeline, bottom to top (each module imports only those above it in this list):

- :mod:`~gaptheory.experiments.store`: :class:`~gaptheory.experiments.store.ResultStore`, one
  SQLite file, one transaction per record, claims shared by concurrent runners;
- :mod:`~gaptheory.experiments.methods`: the method registry (``sae``, ``sae_topk``, ...,
  the settings each runs in);
- :mod:`~gaptheory.experiments.settings`: the paper's three settings on synthetic data
  (``DataConfig``, ``make_splits``, ``run_setting``, ``RunResult``, ``build_model``);
- :mod:`~gaptheory.experiments.selection`: validation selection over hyperparameter grids
  (``PAPER_GRIDS``);
- :mod:`~gaptheory.experiments.tasks`: the task kinds of a sweep (recovery, gap, training, and
  activations from :mod:`~gaptheory.experiments.real`), each with its parameters' defaults in a
  config dataclass (``RecoveryTaskConfig``, ...);
- :mod:`~gaptheory.experiments.sweep`: ``Sweep`` and ``load_sweep`` (TOML grid -> keyed tasks);
- :mod:`~gaptheory.experiments.runner`: ``run_sweep`` on local processes or Dask.

Import from the module that defines a name; this package imports nothing itself, so reading a
store (``gaptheory table``) loads neither torch nor the solvers.
"""
