"""A local S3 server for the object-storage tests: moto's server on 127.0.0.1, one bucket, IAM enforced.

Every request after start-up must be signed with a key the server issued, so a test that uses the
read-only key really is refused a write (moto checks the signature and the user's policy; it does not
check the region in the signature). The store factory and `env()` use the full-access key.

obstore reads these from the environment when an S3Store is built without them (checked against this
server with obstore 0.12.1): AWS_ENDPOINT_URL (or AWS_ENDPOINT), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_ALLOW_HTTP (an http:// endpoint is refused without it); AWS_REGION (or AWS_DEFAULT_REGION) is read too and
defaults to us-east-1, which this server does not check.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

import boto3
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer
from obstore.store import S3Store

BUCKET = "clipcache-test"
REGION = "us-east-1"
# what AWS's managed AmazonS3ReadOnlyAccess allows on S3; moto checks a HEAD request as an action of its own,
# which AWS allows under s3:GetObject (there is no s3:HeadObject permission in AWS)
READ_ONLY = ["s3:Get*", "s3:List*", "s3:HeadObject"]


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


class S3Server:
    """Start with `start()`, stop with `stop()`; `store(prefix)` is an obstore S3Store on the bucket."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self.credentials = Credentials("", "")
        self._read_only = Credentials("", "")
        self._auth_before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT

    def start(self) -> "S3Server":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto accepts anything until IAM is enforced: set up the bucket and the users first
        boto3.client("s3", **self._boto("setup", "setup")).create_bucket(Bucket=BUCKET)
        self.credentials = self._user("clipcache-admin", ["*"])
        self._read_only = self._user("clipcache-reader", READ_ONLY)
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is authenticated
        return self

    def stop(self) -> None:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = self._auth_before
        self._server.stop()

    def prefix(self) -> str:
        """A prefix no other test uses: each test's stores start empty."""
        return f"t-{uuid.uuid4().hex[:12]}"

    def url(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def store(self, prefix: str = "", credentials: Credentials | None = None) -> S3Store:
        """An obstore store on the bucket under `prefix`, with the full-access key unless told otherwise."""
        keys = credentials or self.credentials
        return S3Store(BUCKET, prefix=prefix or None, endpoint=self.endpoint, access_key_id=keys.access_key_id,
                       secret_access_key=keys.secret_access_key, region=REGION, client_options={"allow_http": True})

    def read_only_credentials(self) -> Credentials:
        """A key whose user may read and list the bucket but not write or delete."""
        return self._read_only

    def env(self, credentials: Credentials | None = None) -> dict[str, str]:
        """What a process (the CLI) needs in its environment to reach this server through obstore."""
        keys = credentials or self.credentials
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": keys.access_key_id,
                "AWS_SECRET_ACCESS_KEY": keys.secret_access_key, "AWS_REGION": REGION, "AWS_ALLOW_HTTP": "true"}

    def _boto(self, key: str, secret: str) -> dict[str, str]:
        return dict(endpoint_url=self.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                    region_name=REGION)

    def _user(self, name: str, actions: list[str]) -> Credentials:
        iam = boto3.client("iam", **self._boto("setup", "setup"))
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])
