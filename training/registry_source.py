"""The MLflow registry as a :class:`serving.model_source.ModelSource`: follow an alias.

``touchpoint serve --model models:/touchpoint@champion`` serves the version the alias
points at; :class:`RegistryAliasSource` tells the serving watcher which version that is now
(:meth:`~RegistryAliasSource.current`, one cheap registry lookup) and downloads a version
as a bundle folder (:meth:`~RegistryAliasSource.fetch`).  It lives here, not in
``serving``, because only ``training`` may import MLflow; it satisfies the serving protocol
structurally, so ``serving`` never imports this module.

The tracking/registry URI is the project's (:func:`training.tracking.tracking_uri`:
``MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``), read at each call like
:func:`training.tracking.download_bundle` does.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from training.tracking import download_bundle, tracking_uri

__all__ = ["KEEP_DOWNLOADS", "RegistryAliasSource", "parse_alias_uri", "redact_uri"]

#: ``models:/<name>@<alias>``; a fixed version (``models:/<name>/3``) does not match.
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?$")

#: Error codes with which the registry says "no such model" / "no such alias" (the SQL
#: store uses the first for a missing model, the second for a missing alias).
_MISSING = {
    ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
    ErrorCode.Name(INVALID_PARAMETER_VALUE),
}


def redact_uri(uri: str) -> str:
    """``uri`` without a password (``postgresql://user:***@host/db``), fit for logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def parse_alias_uri(uri: str | Path) -> tuple[str, str] | None:
    """``(name, alias)`` of ``models:/<name>@<alias>``; None for anything else."""
    match = _ALIAS_URI.match(str(uri).strip())
    if match is None:
        return None
    return match["name"], match["alias"]


#: Registered versions a source keeps on disk: the one fetched last and the one before it
#: (which keeps serving when the new one fails to load).  Older downloads are deleted, so a
#: service that follows an alias for months does not fill its disk with one bundle per
#: retrain; the models themselves are in memory once loaded, the folders are for people.
KEEP_DOWNLOADS = 2


class RegistryAliasSource:
    """Follows ``models:/<name>@<alias>``: identifiers are registered version numbers.

    ``download_root`` is where fetched versions go (one fresh sub-folder per fetch); by
    default the system temporary folder.  Only the last :data:`KEEP_DOWNLOADS` versions
    fetched stay there (a version fetched again replaces its earlier copy).
    """

    def __init__(self, name: str, alias: str, *, download_root: str | Path | None = None) -> None:
        if not name or not alias:
            raise ValueError("a registered model name and an alias are required")
        self.name = name
        self.alias = alias
        self.download_root = None if download_root is None else Path(download_root)
        self._client: MlflowClient | None = None
        self._client_uri: str | None = None
        # (version, download folder), oldest first; the watcher thread and /admin/reload
        # may fetch at the same time.
        self._downloads: list[tuple[str, Path]] = []
        self._downloads_lock = threading.Lock()

    @classmethod
    def from_uri(
        cls, uri: str | Path, *, download_root: str | Path | None = None
    ) -> RegistryAliasSource | None:
        """A source for ``models:/<name>@<alias>``; None for folders and fixed versions."""
        parsed = parse_alias_uri(uri)
        if parsed is None:
            return None
        return cls(*parsed, download_root=download_root)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    def version_uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    def describe(self) -> str:
        return f"{self.uri} ({redact_uri(tracking_uri())})"

    def __repr__(self) -> str:
        return f"RegistryAliasSource({self.name!r}, {self.alias!r})"

    def _mlflow(self) -> MlflowClient:
        uri = tracking_uri()
        if self._client is None or uri != self._client_uri:
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            self._client_uri = uri
        return self._client

    def current(self) -> str | None:
        """The version the alias points at; None when the model or the alias does not exist.

        Other registry errors (server unreachable, database locked) raise: the watcher
        reports them with their message instead of as a missing alias.
        """
        try:
            version = self._mlflow().get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return None
            raise
        return str(version.version)

    def fetch(self, ident: str) -> Path:
        """Download version ``ident`` and return its bundle folder (the one with bundle.json).

        Raises ``MlflowException`` (unknown version, registry down) or ``FileNotFoundError``
        (the version holds no bundle); nothing is left on disk then.
        """
        version = str(ident).strip()
        if not re.fullmatch(r"[0-9]+", version):
            raise ValueError(f"{self.uri}: {ident!r} is not a registered version number")
        if self.download_root is not None:
            self.download_root.mkdir(parents=True, exist_ok=True)
        target = Path(
            tempfile.mkdtemp(prefix=f"touchpoint-{self.name}-v{version}-", dir=self.download_root)
        )
        try:
            folder = download_bundle(self.version_uri(version), target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        self._forget_old_downloads(version, target)
        return folder

    def _forget_old_downloads(self, version: str, target: Path) -> None:
        """Record ``target`` and delete the downloads beyond :data:`KEEP_DOWNLOADS`."""
        with self._downloads_lock:
            kept = [(v, path) for v, path in self._downloads if v != version]
            stale = [path for v, path in self._downloads if v == version]
            kept.append((version, target))
            stale += [path for _v, path in kept[:-KEEP_DOWNLOADS]]
            self._downloads = kept[-KEEP_DOWNLOADS:]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    def resolve(self) -> tuple[str, Path]:
        """``(version, bundle folder)`` of what the alias points at now (for startup).

        Raises ``FileNotFoundError`` when the model or the alias does not exist, so the CLI
        reports it as bad input in one line.
        """
        version = self.current()
        if version is None:
            raise FileNotFoundError(
                f"{self.uri}: no registered model {self.name!r} with alias {self.alias!r} "
                f"in {redact_uri(tracking_uri())}"
            )
        return version, self.fetch(version)
