"""What every domain's request bodies share: the strict base model, the idempotency-key and
quantity fields, and the error envelope. Each domain's bodies are in its own ``schemas.py``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tollkeep.kit.errors import TollkeepError
from tollkeep.kit.jsonsafe import check_json

Key = Field(min_length=1, max_length=255, description="Idempotency key: same key + same body = same result")
Quantity = Field(None, ge=0, allow_inf_nan=False, max_digits=30, description="Defaults to 1")


class Strict(BaseModel):
    """Request bodies: unknown fields are errors; every value must be storable (no NUL in
    text, no NaN or Infinity in JSON), so bad input is a 422, never a database error."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> Strict:
        try:
            for name in type(self).model_fields:
                value = getattr(self, name)
                if isinstance(value, str | dict | list):
                    check_json(value, name)
        except TollkeepError as exc:
            raise ValueError(exc.message) from None
        return self


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
