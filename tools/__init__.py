"""The tools the agent calls, by layer. Imports run downhill only (``make lint`` checks it):

- ``tools.tuning``   — the study loop over guarded tool calls (Optuna), its budget and cost history;
- ``tools.cleanup``  — stop what is still RUNNING (rollback, failed turns, tuning recovery);
- ``tools.guard``    — ``guarded_call``: validation, policy rules, audit, redaction of results;
- ``tools.jobs`` / ``tools.runs`` / ``tools.datasets`` — the model-facing tools (typed functions whose
  docstrings the model reads), registered in ``tools.toolset``;
- ``tools.context``  — ``ToolContext``: settings, session facts and the clients a tool may use;
- ``tools.runtime``  — where jobs run: local processes, Kubernetes Jobs (and the Job manifest);
- ``tools.training`` — the job program: one reproducible, fully logged training run;
- ``tools.core``     — settings, domain records, the MLflow and dataset-registry libraries, redaction.

Modules whose names start with ``_`` are internals of their package.
"""
