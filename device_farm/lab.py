"""Lab mode: devices shared by a team through a labgrid coordinator.

A device's ``labgrid_place`` names the coordinator place that guards it.  To lease a device the
farm creates a labgrid *reservation* filtered by the pool's tags (the coordinator's scheduler picks
a free place carrying them, fairly across users and by priority), waits until it is allocated,
then *acquires* the place; releasing the lease releases the place and cancels the reservation.
Anyone else using ``labgrid-client reserve``/``acquire`` on the same coordinator is excluded the
same way, so one job runs per device at a time across the whole team.

Talks to the coordinator through labgrid's own client session (gRPC), not a re-implementation.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from .errors import FarmError
from .inventory import Device


def _pb() -> Any:
    from labgrid.remote.generated import labgrid_coordinator_pb2

    return labgrid_coordinator_pb2


class LabSession:
    """A started labgrid ClientSession on the running event loop."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.session: Any = None

    async def start(self) -> "LabSession":
        try:
            from labgrid.remote.client import ClientSession
        except ImportError as exc:
            raise FarmError(f"lab mode needs labgrid ({exc}): pip install 'edgekit[farm]'") from None
        from labgrid.util.proxy import proxymanager

        address = proxymanager.get_grpc_address(self.address, default_port=20408)
        self.session = ClientSession(address, asyncio.get_running_loop())
        try:
            await asyncio.wait_for(self.session.start(), 15)
        except Exception as exc:
            raise FarmError(f"cannot reach the labgrid coordinator at {self.address}: "
                            f"{' '.join(str(exc).split()) or type(exc).__name__}; start it or fix --coordinator") from None
        return self

    async def close(self) -> None:
        if self.session is not None:
            await self.session.stop()
            await self.session.close()

    @property
    def stub(self) -> Any:
        return self.session.stub

    # ------------------------------------------------------------- setup (tests, lab admins)
    async def add_place(self, name: str, tags: Mapping[str, str], matches: Sequence[str]) -> None:
        pb = _pb()
        await self.stub.AddPlace(pb.AddPlaceRequest(name=name))
        await self.stub.SetPlaceTags(pb.SetPlaceTagsRequest(placename=name, tags={k: str(v) for k, v in tags.items()}))
        for m in matches:
            await self.stub.AddPlaceMatch(pb.AddPlaceMatchRequest(placename=name, pattern=m))
        await self.session.sync_with_coordinator()

    # ------------------------------------------------------------- reservations
    async def reserve(self, tags: Mapping[str, str], *, poll_s: float = 0.1,
                      timeout_s: Optional[float] = None) -> "tuple[str, str]":
        """Reserve a place with these tags: (token, place name) once allocated."""
        from labgrid.remote.common import Reservation, ReservationState

        pb = _pb()
        flt = {"main": pb.Reservation.Filter(filter={k: str(v) for k, v in tags.items()})}
        res = Reservation.from_pb2((await self.stub.CreateReservation(
            pb.CreateReservationRequest(filters=flt, prio=0.0))).reservation)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s else None
        while True:
            res = Reservation.from_pb2((await self.stub.PollReservation(
                pb.PollReservationRequest(token=res.token))).reservation)
            if res.state in (ReservationState.allocated, ReservationState.acquired):
                return res.token, res.allocations["main"][0]
            if res.state in (ReservationState.expired, ReservationState.invalid):
                raise FarmError(f"labgrid reservation {res.token} for {dict(tags)} became {res.state.name}")
            if deadline is not None and loop.time() > deadline:
                await self.cancel(res.token)
                raise FarmError(f"no labgrid place with tags {dict(tags)} was free within {timeout_s:g} s")
            await asyncio.sleep(poll_s)

    async def acquire(self, place: str) -> None:
        await self.stub.AcquirePlace(_pb().AcquirePlaceRequest(placename=place))

    async def release(self, place: str) -> None:
        await self.stub.ReleasePlace(_pb().ReleasePlaceRequest(placename=place))

    async def cancel(self, token: str) -> None:
        import grpc

        try:
            await self.stub.CancelReservation(_pb().CancelReservationRequest(token=token))
        except grpc.aio.AioRpcError:
            pass  # already expired on the coordinator

    async def places(self) -> Dict[str, Dict[str, Any]]:
        await self.session.sync_with_coordinator()
        return {name: {"tags": dict(p.tags), "acquired": p.acquired, "reservation": p.reservation}
                for name, p in self.session.places.items()}


class _LabLease:
    def __init__(self, lab: LabSession, device: Device, place: str, token: str) -> None:
        self.lab, self.device, self.place, self.token = lab, device, place, token

    async def release(self) -> None:
        # Cancel first, then release: the coordinator re-schedules waiting reservations on each call, but
        # a pass still counts the place as reserved by a reservation deleted in that same pass.  Released
        # last, the place is free to the next waiting reservation at once instead of at the scheduler's
        # next 15 s tick.
        try:
            await self.lab.cancel(self.token)
        finally:
            await self.lab.release(self.place)


class LabLeaser:
    """Lease devices by reserving labgrid places with the pool's tags (or a place's name on a retry)."""

    def __init__(self, lab: LabSession, match: Mapping[str, Any], devices: Sequence[Device]) -> None:
        self.lab = lab
        self.match = {k: str(v) for k, v in match.items()}
        self.by_place = {d.labgrid_place: d for d in devices if d.labgrid_place}
        missing = [d.id for d in devices if not d.labgrid_place]
        if missing:
            raise FarmError(f"lab mode: device(s) {', '.join(missing)} have no labgrid_place in the inventory")
        self._turn = 0

    async def acquire(self, candidates: Callable[[], Sequence[Device]]) -> Optional[_LabLease]:
        while True:
            cands = list(candidates())
            if not cands:
                return None
            wanted = {d.id for d in cands}
            if len(wanted) == len(self.by_place):
                tags = self.match
            else:  # a retry that must avoid some devices: ask for one of the others by name
                self._turn += 1
                tags = {**self.match, "name": cands[self._turn % len(cands)].labgrid_place}  # type: ignore[dict-item]
            token, place = await self.lab.reserve(tags)
            dev = self.by_place.get(place)
            if dev is None or dev.id not in wanted:
                await self.lab.cancel(token)
                if dev is None:
                    raise FarmError(f"labgrid place {place!r} carries the pool's tags but no inventory device names it "
                                    "(labgrid_place)")
                continue
            await self.lab.acquire(place)
            return _LabLease(self.lab, dev, place, token)


def place_tags(device: Device) -> Dict[str, str]:
    """A device's inventory tags as labgrid place tags (scalars only; lists become comma-joined)."""
    out = {}
    for k, v in device.tags.items():
        out[k] = ",".join(v) if isinstance(v, (list, tuple)) else str(v)
    return {k: v for k, v in out.items() if v}
