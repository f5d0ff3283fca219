"""Where a store lives: a folder (a `Path`) or a URL in object storage (`StoreUrl`: s3://, gs://, az://).

Object storage goes through obstore, under zarr's own `ObjectStore`, rather than fsspec's s3fs: obstore has
the conditional writes (create-if-absent, replace-if-unchanged) that the store's lock is built on
(`cache.lease`), and needs no event loop of its own: its blocking calls release the GIL, so stage two's read
threads issue range requests in parallel. Credentials and endpoints come the way obstore takes
them: the provider's environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_ENDPOINT_URL, AWS_ALLOW_HTTP for a plain-http test server; GOOGLE_* and AZURE_* likewise). Nothing of them
is printed or written into a store: a `StoreUrl` is its URL and nothing else.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Union

from clipcache import InputError

if TYPE_CHECKING:
    import zarr.abc.store

SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss")
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.+)$")


class StoreUrl(str):
    """A store in object storage, named by its URL (`s3://bucket/prefix/store.zarr`). A string, so that it is
    written into run records and printed as the URL it is."""

    @property
    def url(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        """The last part of the URL, as a folder's name."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def resolve(self) -> StoreUrl:
        """A URL is absolute already (as `Path.resolve` makes a folder's path, for run records)."""
        return self

    @property
    def parent(self) -> "StoreUrl":
        """The prefix the store lies in (where its lock lives)."""
        return StoreUrl(self.url.rstrip("/").rsplit("/", 1)[0])

    def objects(self):  # -> obstore.store.ObjectStore (imported late: stage one's CLI starts without it)
        """An obstore store rooted at this URL, configured from the environment."""
        from obstore.store import from_url

        try:
            return from_url(self.url)
        except Exception as error:  # obstore raises its own error kinds for a malformed URL or configuration
            raise InputError(f"{self.url}: cannot open ({str(error).splitlines()[0][:160]})") from None


Store = Union[Path, StoreUrl]


def parse_store(text: str | Path | StoreUrl) -> Store:
    """A store as the user named it: a URL of a scheme obstore serves, else a folder."""
    if isinstance(text, (Path, StoreUrl)):
        return text
    match = _URL.match(str(text))
    if match is None:
        return Path(text)
    scheme, rest = match.groups()
    if scheme not in SCHEMES:
        raise InputError(f"{text}: stores are folders or object-storage URLs ({', '.join(s + '://' for s in SCHEMES)})")
    if "/" not in rest.strip("/"):
        raise InputError(f"{text}: name the store inside the bucket (e.g. {scheme}://{rest.strip('/')}/features.zarr)")
    return StoreUrl(f"{scheme}://{rest.rstrip('/')}")


def is_remote(store: Store) -> bool:
    return isinstance(store, StoreUrl)


def storage_refusal(error: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an error of object storage: 2 for credentials that may not do what was asked
    (as a read-only folder), 1 for a server that cannot be reached or fails; None for any other error."""
    exceptions = sys.modules.get("obstore.exceptions")
    if exceptions is None or not isinstance(error, exceptions.BaseError):
        return None
    denied = isinstance(error, (exceptions.PermissionDeniedError, exceptions.UnauthenticatedError))
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    what = "object storage refused the request" if denied else "object storage failed"
    return f"{what} ({first[:200]}); check the credentials and endpoint in the environment (AWS_*, GOOGLE_*, " \
        "AZURE_*)", 2 if denied else 1


def describe(store: "zarr.abc.store.Store") -> str:
    """The folder or URL of one of zarr's stores, for messages (`StoreUrl` and `Path` print as themselves)."""
    from zarr.storage import LocalStore

    if isinstance(store, LocalStore):
        return str(store.root)
    objects = store.store
    scheme = {"S3Store": "s3", "GCSStore": "gs", "AzureStore": "az"}.get(type(objects).__name__, "object-store")
    where = objects.config.get("bucket") or objects.config.get("container_name", "")
    return f"{scheme}://{where}/{objects.prefix or ''}".rstrip("/")


def zarr_store(store: Store, read_only: bool) -> "zarr.abc.store.Store":
    """zarr's store for `store`: a LocalStore for a folder, an ObjectStore over obstore for a URL."""
    from zarr.storage import LocalStore, ObjectStore

    if isinstance(store, StoreUrl):
        return ObjectStore(store.objects(), read_only=read_only)
    return LocalStore(store, read_only=read_only)
