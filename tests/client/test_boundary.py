"""The client installs without the server: importing it loads nothing of node/ or raft/.

Checked in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import client, client.sync, client.admin, client.consumer, client.producer
server_side = ("node", "raft", "rocksdict", "typer")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in server_side)))
"""


def test_client_imports_only_the_wire_contract() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []


def test_public_surface_is_explicit() -> None:
    import client

    assert sorted(client.__all__) == client.__all__
    for name in client.__all__:
        assert getattr(client, name) is not None
