"""The published test vectors: the file is what the signer makes today (so other languages can
trust it), and the vendorable verifier gives each vector's expected outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.licensing.vectors import build
from tollkeep.licensing.verify import LicenseInvalid, keys_from_jwks, verify

FILE = Path(__file__).parents[2] / "docs" / "licensing-test-vectors.json"
PUBLISHED = json.loads(FILE.read_text())


def test_the_published_file_is_what_the_signer_makes() -> None:
    assert build() == PUBLISHED, (
        "regenerate: python -m tests.licensing.vectors > docs/licensing-test-vectors.json"
    )


@pytest.mark.parametrize("vector", PUBLISHED["vectors"], ids=lambda v: v["name"])
def test_each_vector_verifies_as_published(vector: dict) -> None:
    keys = keys_from_jwks(PUBLISHED["jwks"])
    if vector["valid"]:
        got = verify(vector["token"], keys, now=PUBLISHED["now"], leeway=PUBLISHED["leeway_seconds"])
        assert dict(got.claims) == vector["claims"]
    else:
        with pytest.raises(LicenseInvalid) as err:
            verify(vector["token"], keys, now=PUBLISHED["now"], leeway=PUBLISHED["leeway_seconds"])
        assert err.value.code == vector["code"]


def test_the_verifier_is_vendorable_it_imports_nothing_else_from_tollkeep() -> None:
    source = (Path(__file__).parents[2] / "src" / "tollkeep" / "licensing" / "verify.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "tollkeep" in line], imports
