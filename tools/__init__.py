"""Typed tools the agent calls (each passes the policy guard), grouped by the system they touch."""
