"""The OpenAPI document declares how to authenticate every route, and /docs works offline
(issue #7, item 7)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    tk = Tollkeep(make_settings(f"sqlite:///{tmp_path / 'docs.db'}"), clock=FrozenClock())
    with TestClient(create_app(runtime=tk)) as client:
        yield client
    tk.close()


def test_every_operation_declares_a_scheme_that_exists(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["AdminToken"] == {**schemes["AdminToken"], "type": "http", "scheme": "bearer"}
    assert schemes["APIKey"]["scheme"] == "bearer"
    seen = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            seen += 1
            declared = {name for requirement in op.get("security", []) for name in requirement}
            assert declared <= set(schemes), (path, method, declared)
            if path.startswith("/admin"):
                assert declared == {"AdminToken"}, (path, method)
            elif path.startswith("/v1") and path != "/v1/pricing":
                assert "APIKey" in declared, (path, method)
            else:
                assert not declared, (path, method)
    assert seen > 30


def test_docs_pages_load_their_assets_from_this_server(app_client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = app_client.get(page)
        assert html.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html.text)
        assert assets, html.text
        for url in assets:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            r = app_client.get(url)
            assert r.status_code == 200 and len(r.content) > 1000, url


def test_admin_routes_document_their_real_errors(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if not path.startswith("/admin"):
            continue
        for method, op in ops.items():
            codes = set(op.get("responses", {}))
            assert "401" in codes, (method, path)  # every admin route needs a token
            if method in ("post", "patch", "put", "delete"):
                assert "403" in codes, (method, path)  # a read-only token may not write
            if "{" in path and method != "get" and "/keys" not in path.split("}")[-1]:
                assert "404" in codes, (method, path)
