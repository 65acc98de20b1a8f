"""expagent: an MLflow-first experimentation agent that trains and tunes models and never deploys."""

__version__ = "0.1.0"
