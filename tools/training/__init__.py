"""The job program: ``trainer`` runs one training run for a ``TrainingSpec`` and logs it to MLflow.

Public: ``trainer`` (``run_training``, ``python -m tools.training.trainer``), ``job_files`` (a job's files
on disk, shared with the local runtime), ``dataset_cache`` (verified frames a warm process preloads),
``project_run`` (an entry point run and its contract), ``project_env`` (its uv virtualenv per env hash),
``entrypoint_validation`` (the dry run).
Internals: ``_modeling`` (what is trained and scored), ``_run_logging`` (what a run logs),
``_stop_signals`` (SIGTERM and deadlines), ``_output_tee`` (the output tail of a failed run).
"""
