"""hetuflow's benchmark suite: real server and agent processes, a load generator, numbers.

Run ``.venv/bin/python -m benchmarks run`` (or ``scripts/bench``); see docs/benchmarks.md.
Each scenario starts its own ``hetuflow-server start`` on a free port and a fresh database
(SQLite in a temporary directory, or a PostgreSQL database created for the scenario and dropped
after it), agents as separate ``hetuflow-agent`` processes with the handlers of
``benchmarks.handlers``, and measures from the outside: completions are counted in the store
through the REST API, start instants are written by the handlers to a ledger file.
"""
