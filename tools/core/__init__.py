"""The bottom layer: settings, domain records and the libraries every layer above uses.

Public modules: ``settings`` (``Settings``, ``Budget``), ``specs`` (``TrainingSpec``, ``RunTemplate``,
``JobInfo``, ``Resources``, ``CancellationRecord``), ``verdicts`` (``Allow``/``Reject``/``Halt``),
``tracking`` (MLflow client, run lifecycle, cancellation records), ``tags`` (the ``expagent.*`` tag
keys and the searches over them), ``registry`` (the versioned dataset registry), ``demo_catalog``,
``redact`` (secrets and personal data), ``audit`` (the append-only audit log), ``provenance`` (code
version, pinned packages), ``store_seed`` (new SQLite stores as copies of a migrated empty one),
``create_once`` (a run created once on a tracking server whose client retries a create),
``sqlite_uri`` (``sqlite:///`` URIs built and read as SQLAlchemy reads them).
Nothing here imports a layer above it.
"""
