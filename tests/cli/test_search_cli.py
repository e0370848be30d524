"""`list-tasks -q/--search` finds text inside payloads (and names), as a user types it."""

from __future__ import annotations

import json

import httpx

from .conftest import Running


def test_list_tasks_search_finds_a_word_in_a_payload(server: Running) -> None:
    for name, customer in (("invoice", "Quokka Labs"), ("report", "Wombat Inc")):
        response = httpx.post(
            f"{server.url}/api/tasks",
            json={"name": name, "task_type": "nobody-cli", "payload": {"customer": customer}},
        )
        assert response.status_code == 201, response.text
    found = server.run("./hetuflow-server list-tasks -q quokka --json")
    assert found.returncode == 0, found.stderr
    assert [task["name"] for task in json.loads(found.stdout)["items"]] == ["invoice"]
    table = server.run("./hetuflow-server list-tasks --search 'wombat inc'")
    assert table.returncode == 0, table.stderr
    assert "report" in table.stdout
    assert "invoice" not in table.stdout
