"""Evaluation harness, scenarios and the fakes that speak real wire protocols (Kubernetes, OpenAI, Slack)."""
