"""HTTP fakes on 127.0.0.1 that official clients talk to unchanged: Kubernetes API, OpenAI, Slack."""
