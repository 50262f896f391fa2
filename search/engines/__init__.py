"""Cluster backends. Each engine module imports its client only when the backend is constructed."""
