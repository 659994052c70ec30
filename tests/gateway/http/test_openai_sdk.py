"""The official `openai` SDK as a client of the HTTP gateway: the tollkeep key is its API key,
the gateway its base URL; plain and streamed completions are charged on usage, and a stream
cut for credits ends in the SDK's APIError with the insufficient_credits body."""

from __future__ import annotations

import pytest

from tests.gateway.http.conftest import Gateway, balance, customer
from tests.gateway.http.fake_upstream import PIECE
from tollkeep.runtime import Tollkeep

openai = pytest.importorskip("openai")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_openai_sdk_through_the_gateway(gtk: Tollkeep, gateway: Gateway) -> None:
    cid, key = customer(gtk, credits=300)
    msgs = [{"role": "user", "content": "words:20"}]  # 8 characters: 2 prompt tokens
    with gateway(increment_tokens=8) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        out = client.chat.completions.create(model="test-model", messages=msgs, max_tokens=50)
        assert out.choices[0].message.content == PIECE * 20
        assert out.usage is not None and out.usage.completion_tokens == 20
        assert balance(gtk, cid) == 300 - (2 + 40)
        stream = client.chat.completions.create(model="test-model", messages=msgs, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == PIECE * 20
        assert balance(gtk, cid) == 300 - 2 * (2 + 40)
        # 216 left: a stream of 200 pieces (402 credits) is cut when an increment does not fit
        long = [{"role": "user", "content": "words:200"}]
        got: list[str] = []
        with pytest.raises(openai.APIError) as info:
            for ch in client.chat.completions.create(model="test-model", messages=long, stream=True):
                got.extend(c.delta.content or "" for c in ch.choices)
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "insufficient_credits"
        delivered = len("".join(got)) // len(PIECE)
        assert 0 < delivered < 200
        left = balance(gtk, cid)
        assert left == 216 - (3 + 2 * delivered) and left >= 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="tk_live_bad", max_retries=0).models.list()
