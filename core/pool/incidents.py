"""One incident id from a failure's first signal to its outcome, per connection.

The lifecycle opens an incident (``RecoveryStarted``) only once a fault is seen; by then the
failure has already shown itself elsewhere: a fault injected, requests failing on the connection,
its breakers opening, the bridge seeing its socket close. :class:`IncidentBook` gives all of them
one id. The first signal on a connection with no incident opens one (a pending incident); the
lifecycle, when it opens its recovery, takes that id (:meth:`IncidentBook.adopt`) instead of
minting another; the outcome (``RecoveryCompleted``, ``ConnectionQuarantined``, a page that
re-attached and was verified) ends it. A pending incident that no recovery adopts lapses
``window`` seconds after its last signal (a transient failure that healed).

:meth:`IncidentBook.at` answers for events stamped earlier than they are written (the breakers'
events are appended in batches): the incident a connection was in at a given time, including
``window`` seconds after it ended (the trial calls that close the breakers are its outcome).

Pure: no asyncio, no I/O; the clock and the id factory are injected.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from poolwarden.clock import Clock
from poolwarden.lifecycle import IdFactory, uuid_ids

__all__ = ["IncidentBook"]

KEEP = 16
"""Incidents remembered per connection (for :meth:`IncidentBook.at`)."""


@dataclass(slots=True)
class _Incident:
    incident_id: str
    opened_at: float
    last_signal_at: float
    adopted: bool = False
    ended_at: float | None = None


class IncidentBook:
    """The incidents of each connection; see the module docstring."""

    def __init__(self, clock: Clock, *, window: float = 10.0, ids: IdFactory = uuid_ids) -> None:
        self._clock = clock
        self.window = window
        self._ids = ids
        self._incidents: dict[str, deque[_Incident]] = {}

    def _open(self, connection_id: str, now: float) -> _Incident | None:
        """The connection's incident still open at ``now``, if any."""
        incidents = self._incidents.get(connection_id)
        if not incidents:
            return None
        last = incidents[-1]
        if last.ended_at is not None:
            return None
        if not last.adopted and now - last.last_signal_at > self.window:
            last.ended_at = last.last_signal_at  # lapsed: nothing recovered it, it healed
            return None
        return last

    def signal(self, connection_id: str) -> str:
        """A sign of failure on ``connection_id``: the id of its open incident, opened now if none."""
        now = self._clock()
        incident = self._open(connection_id, now)
        if incident is None:
            incident = _Incident(self._ids(), now, now)
            self._incidents.setdefault(connection_id, deque(maxlen=KEEP)).append(incident)
        incident.last_signal_at = now
        return incident.incident_id

    def current(self, connection_id: str) -> str | None:
        """The id of ``connection_id``'s open incident now, without signalling one."""
        incident = self._open(connection_id, self._clock())
        return incident.incident_id if incident is not None else None

    def adopt(self, connection_id: str) -> str:
        """The id for a recovery the lifecycle opens now: the pending incident's, else a new one."""
        now = self._clock()
        incident = self._open(connection_id, now)
        if incident is None or incident.adopted:
            incident = _Incident(self._ids(), now, now)
            self._incidents.setdefault(connection_id, deque(maxlen=KEEP)).append(incident)
        incident.adopted = True
        return incident.incident_id

    def end(self, connection_id: str, incident_id: str | None = None) -> None:
        """The incident (``incident_id``, or the open one) reached its outcome now."""
        now = self._clock()
        for incident in self._incidents.get(connection_id, ()):
            if incident.ended_at is None and (incident_id is None or incident.incident_id == incident_id):
                incident.ended_at = now

    def at(self, connection_id: str, when: float) -> str | None:
        """The incident ``connection_id`` was in at ``when`` (or had ended less than ``window``
        seconds before): the newest opened by then."""
        for incident in reversed(self._incidents.get(connection_id, ())):
            if incident.opened_at > when:
                continue
            until = incident.ended_at if incident.ended_at is not None else incident.last_signal_at
            if incident.ended_at is None and incident.adopted:
                return incident.incident_id
            return incident.incident_id if when <= until + self.window else None
        return None
