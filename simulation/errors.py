"""Errors of the simulation package; each carries the gRPC status it maps to."""

from __future__ import annotations


class SimulationError(Exception):
    """Root of every simulation error."""

    code = "INTERNAL"


class SimulationConfigError(SimulationError):
    """A world, traffic or responder setting is invalid; the message names the fix."""

    code = "INVALID_ARGUMENT"


class SimulationUnavailable(SimulationError):
    """A service the simulator drives (Kafka, the gRPC server, the campaign store) is not reachable."""

    code = "UNAVAILABLE"
