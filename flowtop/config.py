"""Configuration as frozen dataclasses; all validation lives here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flowtop.errors import ConfigError

# The kernel keeps flows of one interval only; a map this size holds 65536
# distinct flows per second at the default interval.
DEFAULT_MAP_SIZE = 65536


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    interfaces: tuple[str, ...] = ()
    interval: float = 1.0
    tc_priority: int = 1
    max_flows: int = 262144
    map_size: int = DEFAULT_MAP_SIZE
    idle_timeout: float = 15.0
    active_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not 0.05 <= self.interval <= 3600:
            raise ConfigError(f"interval must be between 0.05 and 3600 s, not {self.interval}")
        if not 1 <= self.tc_priority <= 0xFFFF:
            raise ConfigError(f"tc priority must be 1..65535, not {self.tc_priority}")
        if not 1 <= self.max_flows <= 50_000_000:
            raise ConfigError(f"max flows must be 1..50000000, not {self.max_flows}")
        if not 1 <= self.map_size <= 16_777_216:
            raise ConfigError(f"map size must be 1..16777216, not {self.map_size}")
        if self.idle_timeout <= 0:
            raise ConfigError(f"idle timeout must be positive, not {self.idle_timeout}")
        if self.active_timeout <= 0:
            raise ConfigError(f"active timeout must be positive, not {self.active_timeout}")
        for name in self.interfaces:
            if not name or len(name) > 64 or "/" in name or any(c.isspace() for c in name):
                raise ConfigError(f"not an interface name or glob: {name!r}")

    @classmethod
    def from_options(
        cls,
        interfaces: Sequence[str] | None = None,
        interval: float | None = None,
        tc_priority: int | None = None,
        max_flows: int | None = None,
        idle_timeout: float | None = None,
        active_timeout: float | None = None,
    ) -> CollectorConfig:
        base = cls()
        mf = base.max_flows if max_flows is None else max_flows
        return cls(
            interfaces=tuple(interfaces or ()),
            interval=base.interval if interval is None else interval,
            tc_priority=base.tc_priority if tc_priority is None else tc_priority,
            max_flows=mf,
            map_size=max(1, min(mf, DEFAULT_MAP_SIZE)),
            idle_timeout=base.idle_timeout if idle_timeout is None else idle_timeout,
            active_timeout=base.active_timeout if active_timeout is None else active_timeout,
        )
