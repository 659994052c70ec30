"""`kill -HUP` reloads the catalog of a running server; a reload that changed the version is
in the audit log under the system's own actor (no admin asked for it)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.factories import admin_http, free_port, start_server
from tollkeep.catalog import DEFAULT_CATALOG_TEXT


def test_sighup_reload_is_audited_as_the_system(tmp_path: Path) -> None:
    catalog = tmp_path / "tollkeep.toml"
    catalog.write_text(DEFAULT_CATALOG_TEXT)
    port = free_port()
    proc = start_server(f"sqlite:///{tmp_path / 'hup.db'}", port, tmp_path, catalog=catalog)
    try:
        with admin_http(f"http://127.0.0.1:{port}") as admin:
            before = admin.get("/admin/catalog").json()["version"]
            proc.send_signal(signal.SIGHUP)  # the same file: nothing changes, nothing is audited
            catalog.write_text(
                DEFAULT_CATALOG_TEXT.replace('version = "2026-01-01"', 'version = "2026-05-01"')
            )
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            log: list[dict[str, object]] = []
            while not log and time.monotonic() < deadline:
                time.sleep(0.1)
                log = admin.get("/admin/audit", params={"action": "catalog.reload"}).json()["data"]
            assert len(log) == 1, log
            [e] = log
            assert e["actor"] == {"kind": "system", "id": "tollkeep"} and e["address"] is None
            assert e["before"] == {"version": before}
            assert e["after"] == {
                "version": admin.get("/admin/catalog").json()["version"],
                "source": str(catalog),
            }
            assert admin.get("/admin/audit").json()["data"] == log  # nothing else was recorded
    finally:
        proc.terminate()
        proc.wait(timeout=10)
