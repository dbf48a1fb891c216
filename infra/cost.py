"""Cost estimate before launch: steps x seconds per step per GPU x hourly price, cheapest first.

Price and throughput tables ship with the package (`prices.yaml` with its date and sources,
`throughput.yaml` with the derivation of every figure); a price file of the same shape overrides.
`python -m infra cost` prints the table; the cloud launch refuses when even the cheapest option's
estimate exceeds the campaign cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.settings import Settings

HERE = Path(__file__).resolve().parent
PRICES = HERE / "prices.yaml"
THROUGHPUT = HERE / "throughput.yaml"


class CostError(ValueError):
    """The estimate cannot be made, or exceeds the cap."""


@dataclass(frozen=True)
class Option:
    cloud: str
    accelerator: str
    spot: bool
    hourly_usd: float
    seconds_per_step: float


@dataclass(frozen=True)
class Estimate:
    option: Option
    phase_hours: dict[str, float]  # "preprocess", "phase1", ..., "phase4"

    @property
    def hours(self) -> float:
        return sum(self.phase_hours.values())

    @property
    def usd(self) -> float:
        return self.hours * self.option.hourly_usd

    def phase_usd(self, name: str) -> float:
        return self.phase_hours[name] * self.option.hourly_usd


def load_prices(path: Path | None = None) -> dict[str, Any]:
    table = yaml.safe_load(PRICES.read_text())
    if path is not None:
        override = yaml.safe_load(Path(path).read_text()) or {}
        for cloud, gpus in (override.get("prices") or {}).items():
            table["prices"].setdefault(cloud, {}).update(gpus)
        table["date"] = override.get("date", table["date"])
    return table


def options(prices: dict[str, Any], throughput: dict[str, Any], max_hourly_usd: float | None = None,
            allow_on_demand: bool = True) -> list[Option]:
    """Every (cloud, GPU) pair with a price and a throughput figure; spot where the cloud has it."""
    out = []
    for cloud, gpus in prices["prices"].items():
        for gpu, price in gpus.items():
            step_s = throughput["seconds_per_step"].get(gpu)
            if step_s is None:
                continue
            spot = price.get("spot")
            if spot is not None:
                out.append(Option(cloud, gpu, True, float(spot), float(step_s)))
            elif allow_on_demand and price.get("on_demand") is not None:
                out.append(Option(cloud, gpu, False, float(price["on_demand"]), float(step_s)))
    if max_hourly_usd is not None:
        out = [o for o in out if o.hourly_usd <= max_hourly_usd]
    return out


def estimate(settings: Settings, audio_hours: float, speakers: int, prices: dict[str, Any] | None = None,
             max_hourly_usd: float | None = None) -> list[Estimate]:
    """One estimate per option, cheapest first, for preprocessing plus the four phases."""
    throughput = yaml.safe_load(THROUGHPUT.read_text())
    prices = prices or load_prices()
    overhead = float(throughput["task_overhead_hours"])
    steps = {f"phase{p}": settings.train.phases[p].max_steps * (speakers if p == 4 else 1) for p in (1, 2, 3, 4)}
    result = []
    for option in options(prices, throughput, max_hourly_usd):
        hours = {"preprocess": overhead + audio_hours * float(throughput["preprocess_hours_per_audio_hour"])}
        for name, n in steps.items():
            hours[name] = overhead + n * option.seconds_per_step / 3600
        result.append(Estimate(option, hours))
    if not result:
        raise CostError("no GPU option has both a price and a throughput figure under the hourly limit")
    return sorted(result, key=lambda e: (e.usd, e.option.cloud, e.option.accelerator))


def check_cap(estimates: list[Estimate], cap_usd: float | None) -> None:
    """Raise CostError when even the cheapest estimate exceeds the campaign cap, saying by how much."""
    if cap_usd is None:
        return
    cheapest = estimates[0]
    if cheapest.usd > cap_usd:
        raise CostError(
            f"the cheapest option ({cheapest.option.accelerator} on {cheapest.option.cloud}, "
            f"${cheapest.option.hourly_usd:.2f}/h) is estimated at ${cheapest.usd:.2f}, "
            f"${cheapest.usd - cap_usd:.2f} over the ${cap_usd:.2f} cap (SUARA_BUDGET__MAX_COST_USD); "
            "raise the cap or lower the step counts"
        )


def render(estimates: list[Estimate], prices: dict[str, Any], limit: int = 10) -> str:
    names = list(estimates[0].phase_hours)
    stages = "".join(f"{n:>12}" for n in names)
    header = f"{'gpu':<10}{'cloud':<8}{'spot':<6}{'$/h':>6}{stages}{'hours':>8}{'total':>9}"
    lines = [f"Cost estimate (prices of {prices['date']}; cheapest first; $ per stage)", header]
    for e in estimates[:limit]:
        o = e.option
        cells = "".join(f"{e.phase_usd(n):>12.2f}" for n in names)
        lines.append(f"{o.accelerator:<10}{o.cloud:<8}{'yes' if o.spot else 'no':<6}{o.hourly_usd:>6.2f}{cells}"
                     f"{e.hours:>8.1f}{e.usd:>9.2f}")
    return "\n".join(lines)
