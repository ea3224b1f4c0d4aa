"""Where the service's API key comes from (pure: no Serve, no FastAPI), for the app and its callers.

The key is read from the environment variable ``serving.api_key_env``, else from ``serving.api_key_file``;
never from the config itself. ``raymlops status`` reads it here to call ``/v1/monitor`` without
importing the Serve app.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from raymlops.config import ServingConfig

log = logging.getLogger(__name__)


def load_api_key(serving: ServingConfig) -> str | None:
    """The API key from the environment variable, else from the key file; never from the config itself."""
    key = os.environ.get(serving.api_key_env, "").strip()
    if not key and serving.api_key_file:
        try:
            key = Path(serving.api_key_file).read_text().strip()
        except OSError as exc:
            log.error("cannot read the API key file %s: %s", serving.api_key_file, exc)
    return key or None
