"""File systems and paths: local folders and object-store URIs behind one pyarrow file system.

Object-store URIs (``s3://...``) take storage options in delta-rs form (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ...); anything not given is found by the libraries' own credential chains.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

StorageOptions = Mapping[str, str] | None

# delta-rs style storage option (lower-cased) -> pyarrow S3FileSystem argument.
S3_KEYS = {
    "aws_access_key_id": "access_key", "access_key_id": "access_key",
    "aws_secret_access_key": "secret_key", "secret_access_key": "secret_key",
    "aws_session_token": "session_token", "session_token": "session_token",
    "aws_region": "region", "region": "region", "aws_default_region": "region",
    "aws_endpoint_url": "endpoint_override", "aws_endpoint": "endpoint_override", "endpoint_url": "endpoint_override",
    "endpoint": "endpoint_override",
}


def s3_filesystem(storage_options: StorageOptions) -> pafs.S3FileSystem:
    """A pyarrow S3 file system from delta-rs style storage options (others come from the AWS chain)."""
    kwargs: dict[str, Any] = {}
    for key, value in (storage_options or {}).items():
        target = S3_KEYS.get(key.lower())
        if target:
            kwargs[target] = value
    endpoint = kwargs.get("endpoint_override")
    if endpoint and "://" in endpoint:
        parsed = urlparse(endpoint)
        kwargs["scheme"], kwargs["endpoint_override"] = parsed.scheme, parsed.netloc
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(path: str, storage_options: StorageOptions = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and the path inside it: local paths, ``s3://`` with options, other URIs."""
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    scheme = urlparse(path).scheme
    if scheme in ("s3", "s3a"):
        return s3_filesystem(storage_options), path.split("://", 1)[1]
    filesystem, inner = pafs.FileSystem.from_uri(path)
    return filesystem, inner


def path_like(filesystem: pafs.FileSystem, inner: str, like: str) -> str:
    """``inner`` (a path inside ``filesystem``) in the form ``like`` has: a URI or a local path."""
    if isinstance(filesystem, pafs.LocalFileSystem) and "://" not in like:
        return inner
    return f"{urlparse(like).scheme}://{inner}"


def join_path(root: str, *parts: str) -> str:
    """``root`` joined with ``parts``: with ``/`` for a URI, the local way for a local path."""
    return "/".join([root.rstrip("/"), *parts]) if "://" in root else os.path.join(root, *parts)


def delete_dir(path: str, *, storage_options: StorageOptions = None) -> None:
    """Remove a folder and everything under it; nothing happens when it does not exist."""
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    filesystem, inner = filesystem_for(path, storage_options)
    if filesystem.get_file_info(inner).type != pafs.FileType.NotFound:
        filesystem.delete_dir(inner)


def list_parquet(folder: str, *, storage_options: StorageOptions = None) -> list[str]:
    """The parquet files under a folder, sorted (engines' marker files such as _SUCCESS are skipped)."""
    filesystem, inner = filesystem_for(folder, storage_options)
    infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return sorted(path_like(filesystem, info.path, folder) for info in infos
                  if info.type == pafs.FileType.File and info.path.endswith(".parquet")
                  and not os.path.basename(info.path).startswith(("_", ".")))


def ensure_dir(path: str) -> None:
    """Create a local folder and its parents; object-store paths need none."""
    if "://" not in path:
        Path(path).mkdir(parents=True, exist_ok=True)
