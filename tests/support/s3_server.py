"""An S3-compatible server on loopback (moto's standalone server) for the artifact-store tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from hokusai.server.runner import free_loopback_port

STARTUP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    # moto accepts any credentials; these stand for an operator's, to be looked for where they must not be.
    access_key_id: str = "hokusai-test-access-key"
    secret_access_key: str = "hokusai-test-secret-key-0123456789"
    region: str = "us-east-1"

    def client_environment(self) -> dict[str, str]:
        """The standard AWS variables boto3 reads, as an operator would set them for `hokusai server`."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:  # boto3 builds its clients' classes at run time
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )


@contextmanager
def running_s3_server(log_path: Path) -> Iterator[S3Server]:
    port = free_loopback_port()
    moto_server = Path(sys.executable).with_name("moto_server")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    server = S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            try:
                httpx.get(server.endpoint_url + "/moto-api/", timeout=2.0, trust_env=False)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log_path.read_text(errors='replace')}") from None
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
