"""Job lifecycle: states, whose fault a failure is, and the retry rules.

PENDING → RESERVING → PROBING → PUSHING → RUNNING → COLLECTING → COMPLETE | FAILED | INCOMPLETE

* FAILED is the package's or model's fault (it does not load, an inference raises): never retried.
* INCOMPLETE is the device's (offline, timed out, heartbeats lost, push error, corrupt result):
  retried on another device of the pool until ``RetryPolicy.max_attempts``.
* A device with ``bad_after`` consecutive INCOMPLETEs is marked bad until a health check
  (load + one inference) passes.
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from edgekit.errors import ConfigError


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RESERVING = "RESERVING"
    PROBING = "PROBING"
    PUSHING = "PUSHING"
    RUNNING = "RUNNING"
    COLLECTING = "COLLECTING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    INCOMPLETE = "INCOMPLETE"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETE, JobState.FAILED, JobState.INCOMPLETE)


class Scenario(str, enum.Enum):
    SINGLE_STREAM = "single-stream"
    OFFLINE = "offline"


class LoadgenMode(str, enum.Enum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class BenchSettings:
    scenario: Scenario = Scenario.SINGLE_STREAM
    min_duration_s: float = 1.0
    min_queries: int = 100
    warmup: int = 10
    loadgen: LoadgenMode = LoadgenMode.AUTO

    def __post_init__(self) -> None:
        if not isinstance(self.scenario, Scenario):
            raise ConfigError(f'"scenario" must be one of {{{", ".join(s.value for s in Scenario)}}}, but got {self.scenario!r}')
        if not isinstance(self.loadgen, LoadgenMode):
            raise ConfigError(f'"loadgen" must be one of {{{", ".join(s.value for s in LoadgenMode)}}}, but got {self.loadgen!r}')
        if not self.min_duration_s > 0:
            raise ConfigError(f'"min_duration" must be > 0 seconds, but got {self.min_duration_s}')
        if self.min_queries < 1:
            raise ConfigError(f'"min_queries" must be >= 1, but got {self.min_queries}')
        if self.warmup < 0:
            raise ConfigError(f'"warmup" must be >= 0, but got {self.warmup}')

    def argv(self) -> List[str]:
        return ["--scenario", self.scenario.value, "--min-duration", repr(self.min_duration_s),
                "--min-queries", str(self.min_queries), "--warmup", str(self.warmup), "--loadgen", self.loadgen.value]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3       # INCOMPLETE attempts before a job ends INCOMPLETE
    bad_after: int = 3          # consecutive INCOMPLETEs that mark a device bad
    health_checks: int = 3      # failed health checks before a device is left out of this run
    health_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "bad_after", "health_checks"):
            if getattr(self, name) < 1:
                raise ConfigError(f'"{name}" must be >= 1, but got {getattr(self, name)}')


@dataclass
class Attempt:
    device: str
    state: JobState = JobState.RESERVING
    reason: Optional[str] = None
    started: Optional[float] = None    # wall clock, RUNNING began
    ended: Optional[float] = None


@dataclass
class Job:
    package: Path
    sha256: str
    settings: BenchSettings
    pin_device: Optional[str] = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: JobState = JobState.PENDING
    attempts: List[Attempt] = field(default_factory=list)
    reason: Optional[str] = None
    device: Optional[str] = None
    result: Optional[Dict[str, Any]] = None
    accuracy: Optional[Any] = None      # accuracy.AccuracyPlan: data pushed with the job, fp32 outputs on the host

    @property
    def tried_on(self) -> Set[str]:
        return {a.device for a in self.attempts if a.state is JobState.INCOMPLETE}

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "package": str(self.package), "sha256": self.sha256, "state": self.state.value,
                "device": self.device, "reason": self.reason,
                "accuracy": self.accuracy.to_json() if self.accuracy is not None else None,
                "attempts": [{"device": a.device, "state": a.state.value, "reason": a.reason,
                              "started": a.started, "ended": a.ended} for a in self.attempts]}
