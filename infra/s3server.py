"""A local S3-compatible endpoint on 127.0.0.1 (moto's server mode) for tests and local runs.

It speaks the real S3 protocol over HTTP, so boto3, s3fs and mosaicml-streaming talk to it exactly
as they would to AWS. State lives in memory and ends with the server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# Credentials the local server accepts; never real ones.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "suara-local",
    "AWS_SECRET_ACCESS_KEY": "suara-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalS3:
    """Start with `start()`, stop with `stop()` (or use `local_s3()`); `endpoint_url` once started."""

    def __init__(self, port: int = 0):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url: str | None = None

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=name)


@contextmanager
def local_s3(bucket: str = "suara", set_credentials: bool = True) -> Iterator[str]:
    """Run a local endpoint with `bucket` created; yields the endpoint URL."""
    saved = {k: os.environ.get(k) for k in LOCAL_CREDENTIALS}
    if set_credentials:
        os.environ.update(LOCAL_CREDENTIALS)
    server = LocalS3()
    try:
        url = server.start()
        server.create_bucket(bucket)
        yield url
    finally:
        server.stop()
        if set_credentials:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
