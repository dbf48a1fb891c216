"""What this instance costs per hour, as far as the cloud tells the task.

SkyPilot tells a job its cloud and region (SKYPILOT_CLUSTER_INFO) but not its price. On AWS the
instance metadata service (IMDSv2, reachable from the container: SkyPilot runs it with
--net=host) says the instance type, whether it is spot or on-demand, and its zone; SkyPilot's own
catalog (`aws/vms.csv`: Price, and SpotPrice per zone) prices exactly that. Elsewhere, or when any
of it cannot be read, the task counts its declared maximum (SUARA_BUDGET__HOURLY_PRICE_USD, set to
the task file's max_hourly_cost, so the caps hold whichever instance SkyPilot picked). The cost
estimate before launch (infra/cost.py) uses the same rule.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
AWS_IMDS = "http://169.254.169.254"
TOKEN_TTL_S = 300


@dataclass(frozen=True)
class HourlyPrice:
    usd: float
    source: str


def cloud_of(environ: dict[str, str]) -> str:
    """The cloud SkyPilot placed this task on ("aws", "runpod", ...), or "" outside SkyPilot."""
    try:
        return str(json.loads(environ.get("SKYPILOT_CLUSTER_INFO", "{}")).get("cloud", "")).lower()
    except (ValueError, AttributeError):
        return ""


def imds_url_for(environ: dict[str, str]) -> str | None:
    """AWS's metadata endpoint when SkyPilot says this job runs on AWS, else None."""
    return AWS_IMDS if cloud_of(environ) == "aws" else None


def imds_token(base_url: str, timeout_s: float = 2.0) -> str:
    request = urllib.request.Request(f"{base_url.rstrip('/')}/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - configured URL
        return resp.read().decode()


def imds_get(base_url: str, path: str, token: str, timeout_s: float = 2.0) -> str:
    """One IMDSv2 metadata read (`path` under latest/meta-data/)."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/latest/meta-data/{path}",
                                     headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - configured URL
        return resp.read().decode().strip()


def skypilot_catalog(cloud: str) -> Any:
    """SkyPilot's catalog of `cloud` as a DataFrame (its reader downloads and caches it)."""
    from sky.catalog import common

    return common.read_catalog(f"{cloud}/vms.csv")._load_df()  # noqa: SLF001 - SkyPilot's own lazy frame


def aws_catalog_price(rows: Any, instance_type: str, spot: bool, region: str, zone_id: str | None) -> float | None:
    """The catalog's price of the instance: on-demand per region; spot per zone (the catalog keys
    AWS zones by their ids, e.g. use1-az4, which IMDS also gives)."""
    match = rows[(rows["InstanceType"] == instance_type) & (rows["Region"] == region)]
    if spot:
        if zone_id is not None and "AvailabilityZone" in match:
            in_zone = match[match["AvailabilityZone"] == zone_id]
            match = in_zone if len(in_zone) else match
        prices = match["SpotPrice"].dropna()
        return float(prices.max()) if len(prices) else None
    prices = match["Price"].dropna()
    return float(prices.max()) if len(prices) else None


def hourly_price(declared_usd: float, environ: dict[str, str], imds_url: str | None = None,
                 catalog: Callable[[str], Any] = skypilot_catalog) -> HourlyPrice:
    """The price this task counts: the instance's own on AWS, else the declared maximum."""
    fallback = HourlyPrice(declared_usd, "the declared price, SUARA_BUDGET__HOURLY_PRICE_USD")
    base = imds_url or imds_url_for(environ)
    if base is None:
        return fallback
    try:
        token = imds_token(base)
        instance_type = imds_get(base, "instance-type", token)
        spot = imds_get(base, "instance-life-cycle", token) == "spot"
        region = imds_get(base, "placement/region", token)
        zone_id = imds_get(base, "placement/availability-zone-id", token)
    except (OSError, urllib.error.URLError) as exc:
        log.warning("cannot read the instance metadata (%s); counting the declared $%.2f/h", exc, declared_usd)
        return fallback
    try:
        usd = aws_catalog_price(catalog("aws"), instance_type, spot, region, zone_id)
    except Exception as exc:  # noqa: BLE001 - a missing catalog must not stop a paid job
        log.warning("cannot read SkyPilot's AWS catalog (%s); counting the declared $%.2f/h", exc, declared_usd)
        return fallback
    if usd is None:
        log.warning("%s in %s is not in SkyPilot's catalog; counting the declared $%.2f/h", instance_type, region,
                    declared_usd)
        return fallback
    kind = "spot" if spot else "on-demand"
    return HourlyPrice(usd, f"SkyPilot's catalog: {instance_type} {kind} in {region} ({zone_id})")
