"""A local S3 server for the read benchmark: moto's server in a process of its own, one bucket, and a store
folder copied into it object by object; each request answered `latency` seconds late, as a cloud's object store
answers (S3: tens of ms to the first byte), since moto on this machine answers at once and a reader that keeps too
few requests in flight would not show.

Its own process, not the tests' threaded server (tests/s3_server.py): there the server would share this
process's interpreter lock with the reads it serves, and a benchmark of reads would measure that contention.
No IAM users either: the benchmark measures reading, not permissions, and signature checks in Python would add
server time per request.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.exceptions import EndpointConnectionError

BUCKET = "clipcache-bench"
REGION = "us-east-1"
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}  # moto takes any key without IAM


class LocalS3:
    """`with LocalS3() as s3:` a running server; `s3.env()` what obstore needs to reach it."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalS3:
        self._process = subprocess.Popen([sys.executable, __file__, str(self.port), str(self.latency)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                              aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])
        for _ in range(200):  # the server takes a few seconds to import moto
            try:
                client.create_bucket(Bucket=BUCKET)
                return self
            except EndpointConnectionError:  # until the server listens
                if self._process.poll() is not None:
                    raise RuntimeError(f"moto's server exited with {self._process.returncode}") from None
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("moto's server did not answer within 20 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, "AWS_ALLOW_HTTP": "true", **KEYS}

    def url(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def objects(self, prefix: str):  # -> obstore.store.S3Store
        from obstore.store import S3Store

        return S3Store(BUCKET, prefix=prefix, endpoint=self.endpoint, region=REGION,
                       access_key_id=KEYS["AWS_ACCESS_KEY_ID"], secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
                       client_options={"allow_http": True})

    def upload(self, folder: Path, prefix: str) -> str:
        """Every file under `folder` as an object under `prefix` (its path below `folder` the key); the URL."""
        import obstore

        objects = self.objects(prefix)
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                obstore.put(objects, file.relative_to(folder).as_posix(), file.read_bytes())
        return self.url(prefix)


def serve(port: int, latency: float) -> None:
    """moto's S3 server (as `python -m moto.server` runs it), every request held `latency` seconds first: a sleep,
    which lets go of the GIL, so requests in flight wait together as they do for a remote server."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    moto = DomainDispatcherApplication(create_backend_app)

    def late(environ: dict, start_response: object) -> object:
        time.sleep(latency)
        return moto(environ, start_response)

    run_simple("127.0.0.1", port, late, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
