"""The tuning loop: an Optuna study whose trials are guarded ``start_training_run`` calls.

Public: ``study`` (``run_study``, ``study_storage``, ``StudyConflict``), ``records`` (``StudySettings``,
``StudyResult``, ``TrialResult``), ``space`` (search spaces), ``budget`` (estimates and the ledger),
``cost_history`` (what earlier baselines cost), ``runs`` (the study's MLflow runs).
Internals: ``_loop`` (``StudyLoop``), ``_trials`` (``TrialMonitor``: running trials, pruning,
watchdog), ``_resume`` (restoring a study after a restart), ``_journal`` (the Optuna journal file),
``_watchdog`` (runaway trials).
"""
