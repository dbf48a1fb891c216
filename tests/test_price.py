"""What the task counts per hour: the AWS instance's own catalog price from its metadata (a stand-in
IMDSv2 on 127.0.0.1), the declared maximum elsewhere or when anything is unreadable."""

from __future__ import annotations

import pandas as pd
import pytest

from infra.price import hourly_price
from tests.local_http import LocalService, QuietHandler

AWS = {"SKYPILOT_CLUSTER_INFO": '{"cloud": "AWS", "region": "us-east-1"}'}
# Rows in the shape of SkyPilot's aws/vms.csv (test values, not prices to rely on).
ROW = {"InstanceType": "g6.xlarge", "Region": "us-east-1", "Price": 0.805}
CATALOG = pd.DataFrame([{**ROW, "AvailabilityZone": "use1-az1", "SpotPrice": 0.31},
                        {**ROW, "AvailabilityZone": "use1-az4", "SpotPrice": 0.42}])


class MetadataService(LocalService):
    def __init__(self, meta: dict[str, str]):
        outer = self
        self.meta = meta

        class Handler(QuietHandler):
            def do_PUT(self):
                self._reply(200, b"tok")

            def do_GET(self):
                key = self.path.removeprefix("/latest/meta-data/")
                if self.headers.get("X-aws-ec2-metadata-token") != "tok" or key not in outer.meta:
                    return self._reply(404, b"")
                self._reply(200, outer.meta[key].encode())

        super().__init__(Handler)


def meta(lifecycle: str) -> dict[str, str]:
    return {"instance-type": "g6.xlarge", "instance-life-cycle": lifecycle, "placement/region": "us-east-1",
            "placement/availability-zone-id": "use1-az4"}


@pytest.mark.parametrize("lifecycle, usd", [("spot", 0.42), ("on-demand", 0.805)])
def test_on_aws_the_instance_is_priced_from_the_catalog_by_type_lifecycle_and_zone(lifecycle, usd):
    with MetadataService(meta(lifecycle)) as imds:
        price = hourly_price(1.10, AWS, imds.url, catalog=lambda cloud: CATALOG)
    assert price.usd == pytest.approx(usd) and "g6.xlarge" in price.source and lifecycle in price.source


def test_elsewhere_the_declared_maximum_is_counted():
    runpod = {"SKYPILOT_CLUSTER_INFO": '{"cloud": "RunPod"}'}
    assert hourly_price(1.10, runpod, catalog=lambda cloud: CATALOG).usd == 1.10
    assert hourly_price(1.10, {}).usd == 1.10


def test_an_unknown_instance_or_an_unreadable_catalog_falls_back_to_the_declared_maximum():
    with MetadataService({**meta("spot"), "instance-type": "g9.huge"}) as imds:
        assert hourly_price(1.10, AWS, imds.url, catalog=lambda cloud: CATALOG).usd == 1.10

    def offline(cloud):
        raise OSError("no network")

    with MetadataService(meta("spot")) as imds:
        assert hourly_price(1.10, AWS, imds.url, catalog=offline).usd == 1.10
