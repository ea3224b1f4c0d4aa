"""``registry``: where versions are tracked and registered, and the lock its writers take."""

from __future__ import annotations


from pydantic import Field, model_validator

from raymlops.config.base import StrictModel, url_holds_password


class RegistryConfig(StrictModel):
    model_name: str | None = Field(None, description="Registered model name in MLflow (default: the pipeline name).")
    promote_first: bool = Field(
        True, description="When no champion exists yet, the first version that passes the gates becomes champion.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite in the working folder (or MLFLOW_TRACKING_URI)."
    )
    lock_url: str | None = Field(
        None, description="postgresql://user@host:port/db where every writer of a tracking server's registry takes "
        "one advisory lock to move an alias, whatever its workdir (the server's own database will do). Without it "
        "a tracking server's alias moves exclude writers of the same workdir only; SQLite and file stores lock "
        "beside the store file. Never a password here: lock_password_env.")
    lock_password_env: str | None = Field(None, description="Environment variable holding lock_url's password.")
    lock_timeout_s: float = Field(120.0, gt=0, description="Longest an alias move waits for the registry lock "
                                  "before failing with who holds it.")

    @model_validator(mode="after")
    def _lock_url_is_postgres_without_password(self) -> RegistryConfig:
        if self.lock_url is None:
            return self
        from urllib.parse import urlsplit

        parts = urlsplit(self.lock_url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(f"registry.lock_url {self.lock_url!r}: a postgresql://user@host:port/dbname URL")
        if url_holds_password(self.lock_url):
            raise ValueError("registry.lock_url holds a password; remove it and name the environment variable "
                             "that holds it in registry.lock_password_env")
        return self
