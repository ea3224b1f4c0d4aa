"""What every config section shares: strict, frozen models; the column types; name suggestions."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


ColumnType = Literal["int", "float", "string", "bool", "timestamp", "date"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def url_holds_password(url: str) -> bool:
    """``user:password@`` or a ``?password=`` (``passwd``, ``pwd``) in a database URL."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    query = {k.lower() for k in parse_qs(parts.query, keep_blank_values=True)}
    return parts.password is not None or bool(query & {"password", "passwd", "pwd"})


def closest_names(name: str, candidates: Any, n: int = 3) -> list[str]:
    """The candidates most like ``name``, best first: a case-only difference, then by difflib's similarity
    ratio (at least 0.6, and within 0.15 of the best, so a clear match is not diluted by weak ones)."""
    candidates = sorted({str(c) for c in candidates})
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    if same:
        return same[:n]
    scored = sorted(((difflib.SequenceMatcher(None, name, c).ratio(), c) for c in candidates), key=lambda t: -t[0])
    best = scored[0][0] if scored else 0.0
    return [c for r, c in scored if r >= 0.6 and r >= best - 0.15][:n]


def did_you_mean(names: list[str]) -> str:
    """"did you mean 'a' or 'b'?" for a message, or "" when nothing is close."""
    if not names:
        return ""
    quoted = [repr(n) for n in names]
    return "did you mean " + (" or ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else quoted[0]) + "?"
