"""Cost estimate before launch: steps x seconds per step per GPU x the price the job will count.

Price and throughput tables ship with the package (`prices.yaml` with its date and sources,
`throughput.yaml` with the derivation of every figure); a price file of the same shape overrides.
Each option is priced twice: its list price (what the optimizer compares) and the price the job
will *count* against the caps, the same rule as infra/price.py uses inside the task: on AWS the
instance's own price, elsewhere the task file's declared maximum. The managed-jobs controller is
added for the campaign's hours. Options are limited to the clouds `sky check` enabled (unless all
are asked for) and to the (cloud, GPU) pairs the task file requests. `python -m infra cost`
prints the table; the cloud launch refuses when even the cheapest option exceeds the cap.
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


# Clouds that report the instance's own price to the task (infra/price.py); elsewhere the task
# counts its declared maximum.
SELF_PRICING = ("aws",)


@dataclass(frozen=True)
class Option:
    cloud: str
    accelerator: str
    spot: bool
    hourly_usd: float  # list price
    seconds_per_step: float
    counted_usd: float | None = None  # what the job counts per hour (None: the list price)

    @property
    def counted(self) -> float:
        return self.hourly_usd if self.counted_usd is None else self.counted_usd


@dataclass(frozen=True)
class Controller:
    """The managed-jobs controller, on demand for the campaign plus its idle time, and its disk."""

    instance_type: str
    hourly_usd: float
    disk_usd_per_month: float
    idle_hours: float

    def usd(self, hours: float) -> float:
        return (hours + self.idle_hours) * self.hourly_usd


@dataclass(frozen=True)
class Estimate:
    option: Option
    phase_hours: dict[str, float]  # "preprocess", "phase1", ..., "phase4"
    controller: Controller | None = None

    @property
    def hours(self) -> float:
        return sum(self.phase_hours.values())

    @property
    def gpu_usd(self) -> float:
        return self.hours * self.option.counted

    @property
    def controller_usd(self) -> float:
        return self.controller.usd(self.hours) if self.controller else 0.0

    @property
    def usd(self) -> float:
        """What the campaign will count (GPU at the counted price) plus the controller."""
        return self.gpu_usd + self.controller_usd

    def phase_usd(self, name: str) -> float:
        return self.phase_hours[name] * self.option.counted


def load_prices(path: Path | None = None) -> dict[str, Any]:
    table = yaml.safe_load(PRICES.read_text())
    if path is not None:
        override = yaml.safe_load(Path(path).read_text()) or {}
        for cloud, gpus in (override.get("prices") or {}).items():
            table["prices"].setdefault(cloud, {}).update(gpus)
        table["date"] = override.get("date", table["date"])
    return table


def options(prices: dict[str, Any], throughput: dict[str, Any], max_hourly_usd: float | None = None,
            allow_on_demand: bool = True, declared_usd: float | None = None,
            pairs: set[tuple[str, str]] | None = None, clouds: list[str] | None = None) -> list[Option]:
    """Every (cloud, GPU) pair with a price and a throughput figure; spot where the cloud has it.
    `pairs` keeps only what a task file asks for, `clouds` only the enabled clouds; with
    `declared_usd`, clouds that do not report their price count that instead."""
    out = []
    enabled = {c.lower() for c in clouds} if clouds is not None else None
    for cloud, gpus in prices["prices"].items():
        if enabled is not None and cloud not in enabled:
            continue
        for gpu, price in gpus.items():
            step_s = throughput["seconds_per_step"].get(gpu)
            if step_s is None or (pairs is not None and (cloud, gpu) not in pairs):
                continue
            counted = None if declared_usd is None or cloud in SELF_PRICING else declared_usd
            spot = price.get("spot")
            if spot is not None:
                out.append(Option(cloud, gpu, True, float(spot), float(step_s), counted))
            elif allow_on_demand and price.get("on_demand") is not None:
                out.append(Option(cloud, gpu, False, float(price["on_demand"]), float(step_s), counted))
    if max_hourly_usd is not None:
        out = [o for o in out if o.hourly_usd <= max_hourly_usd]
    return out


def controller(prices: dict[str, Any]) -> Controller | None:
    """The jobs controller's cost. SkyPilot places it on an enabled cloud that can host it; the
    table prices it as on AWS, a like 4-vCPU VM costs about as much elsewhere."""
    spec = prices.get("controller")
    if not spec:
        return None
    return Controller(spec["instance_type"], float(spec["on_demand"]),
                      float(spec["disk_gb"]) * float(spec["disk_usd_per_gb_month"]), float(spec["idle_hours"]))


def estimate(settings: Settings, audio_hours: float, speakers: int, prices: dict[str, Any] | None = None,
             max_hourly_usd: float | None = None, declared_usd: float | None = None,
             pairs: set[tuple[str, str]] | None = None, clouds: list[str] | None = None,
             with_controller: bool = False) -> list[Estimate]:
    """One estimate per option, cheapest first, for preprocessing plus the four phases (and the
    jobs controller when `with_controller`)."""
    throughput = yaml.safe_load(THROUGHPUT.read_text())
    prices = prices or load_prices()
    jobs_controller = controller(prices) if with_controller else None
    overhead = float(throughput["task_overhead_hours"])
    steps = {f"phase{p}": settings.train.phases[p].max_steps * (speakers if p == 4 else 1) for p in (1, 2, 3, 4)}
    result = []
    for option in options(prices, throughput, max_hourly_usd, declared_usd=declared_usd, pairs=pairs, clouds=clouds):
        hours = {"preprocess": overhead + audio_hours * float(throughput["preprocess_hours_per_audio_hour"])}
        for name, n in steps.items():
            hours[name] = overhead + n * option.seconds_per_step / 3600
        result.append(Estimate(option, hours, jobs_controller))
    if not result:
        where = f" on the enabled clouds ({', '.join(clouds)}; --all-clouds shows every cloud)" if clouds else ""
        raise CostError(f"no GPU option has both a price and a throughput figure under the hourly limit{where}")
    return sorted(result, key=lambda e: (e.usd, e.option.cloud, e.option.accelerator))


def check_cap(estimates: list[Estimate], cap_usd: float | None) -> None:
    """Raise CostError when even the cheapest estimate exceeds the campaign cap, saying by how much."""
    if cap_usd is None:
        return
    cheapest = estimates[0]
    if cheapest.usd > cap_usd:
        raise CostError(
            f"the cheapest option ({cheapest.option.accelerator} on {cheapest.option.cloud}, "
            f"${cheapest.option.counted:.2f}/h counted) is estimated at ${cheapest.usd:.2f}, "
            f"${cheapest.usd - cap_usd:.2f} over the ${cap_usd:.2f} cap (SUARA_BUDGET__MAX_COST_USD); "
            "raise the cap or lower the step counts"
        )


def render(estimates: list[Estimate], prices: dict[str, Any], limit: int = 10) -> str:
    names = list(estimates[0].phase_hours)
    stages = "".join(f"{n:>11}" for n in names)
    header = (f"{'gpu':<9}{'cloud':<7}{'spot':<5}{'$/h list':>9}{'counted':>8}{stages}{'hours':>7}{'gpu $':>8}"
              f"{'ctrl $':>8}{'total':>8}")
    lines = [f"Cost estimate (prices of {prices['date']}; cheapest first; $ per stage at the counted price)", header]
    for e in estimates[:limit]:
        o = e.option
        cells = "".join(f"{e.phase_usd(n):>11.2f}" for n in names)
        lines.append(f"{o.accelerator:<9}{o.cloud:<7}{'yes' if o.spot else 'no':<5}{o.hourly_usd:>9.2f}"
                     f"{o.counted:>8.2f}{cells}{e.hours:>7.1f}{e.gpu_usd:>8.2f}{e.controller_usd:>8.2f}{e.usd:>8.2f}")
    ctrl = estimates[0].controller
    if ctrl is not None:
        lines.append(f"jobs controller: {ctrl.instance_type} (AWS) on demand at ${ctrl.hourly_usd:.3f}/h while jobs "
                     f"run (+{ctrl.idle_hours * 60:.0f} idle min), then stopped with its disk at "
                     f"${ctrl.disk_usd_per_month:.2f}/month until `sky down` removes it (README, 'Cloud')")
    lines.append("counted: the price the job counts against the caps (its own instance's price where the cloud "
                 "tells it, else the task file's declared maximum)")
    return "\n".join(lines)
