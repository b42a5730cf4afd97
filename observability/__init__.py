"""Metrics, traces and the audit log of every engine process."""
