"""The server: engine loops, the agent gateway, the REST API and the app factory."""
