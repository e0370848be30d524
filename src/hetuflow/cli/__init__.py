"""Command-line entry points: ``hetuflow-server`` (server.py) and ``hetuflow-agent`` (agent.py)."""
