"""Ray's token auth as a client sees it: where the token is, and the header that carries it.

Ray looks for the token in ``RAY_AUTH_TOKEN``, then the file named by ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``; raymlops reads it in the same order, so ``raymlops submit`` authenticates
exactly like ``ray job submit`` would, without the caller having to export ``RAY_AUTH_MODE=token``.

Example::

    headers = auth_headers()          # {"Authorization": "Bearer ..."} or {} when no token exists
"""

from __future__ import annotations

import os
from pathlib import Path

from raymlops.errors import ClusterError
from raymlops.workspace import write_text_atomic


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


def load_token() -> str | None:
    """The token a Ray client would use, or None when none is configured."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named:
        try:
            token = Path(named).expanduser().read_text().strip()
        except OSError as exc:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named} cannot be read: {exc}") from exc
        if not token:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named} is empty")
        return token
    path = default_token_path()
    return path.read_text().strip() or None if path.is_file() else None


def ensure_token() -> str:
    """The token, generated into ~/.ray/auth_token (mode 0600) as `ray get-auth-token --generate` does."""
    token = load_token()
    if token:
        return token
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path = default_token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, generate_new_authentication_token(), mode=0o600)  # private, whole, durable
    return path.read_text().strip()


def auth_headers() -> dict[str, str]:
    token = load_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
