"""Owner routing: a session's calls go straight to the replica that holds it.

With --peers, Bind says which replica holds the new session
(BindResponse.owner, its advertised address), and a replica that forwarded a
call says where the owner is (initial metadata x-pyexec-owner). The client
remembers the owner per session token and sends the session's calls there on
a channel of its own (same credentials and options as the client's), once
that channel has connected; until then, and whenever the owner cannot be
reached or answers UNAVAILABLE, calls go to the client's target (a balancer,
or any replica, which forwards them). Nothing about authentication depends on
it: the owner sees the same credentials, and a replica forwards a call only
to the replicas it discovered itself.

OwnerTable keeps the tokens and one channel per owner address; the sync and
asyncio clients say how a channel is made, told usable and closed.
"""

import threading
import time
from typing import Any, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

OWNER_HEADER = "x-pyexec-owner"
# How long an owner that failed a call is not used (its sessions' calls go
# to the target meanwhile, and a forwarded answer may name a new owner).
SUSPEND_SECONDS = 5.0
# Tokens remembered at most (oldest forgotten first; a forgotten one routes
# through the target until a forwarded answer names its owner again).
MAX_TOKENS = 10000


class Owner:
    """One owner replica: its address, channel and stub."""

    def __init__(self, address: str, channel: Any, stub: Any) -> None:
        self.address = address
        self.channel = channel
        self.stub = stub
        self.ever_ready = False
        self.suspended_until = 0.0


O = TypeVar("O", bound=Owner)


class OwnerTable(Generic[O]):
    """token -> owner address, and the owners' channels. Thread-safe."""

    def __init__(self, enabled: bool, target: str) -> None:
        self.enabled = enabled
        self._target = target
        self._lock = threading.Lock()
        self._tokens: Dict[str, str] = {}
        self._owners: Dict[str, O] = {}
        self._closed = False

    # What the clients provide.
    def _open(self, address: str) -> O:
        raise NotImplementedError

    def _connected(self, owner: O) -> bool:
        """Whether calls may go to the owner now (its channel connected)."""
        raise NotImplementedError

    def learn(self, token: str, address: str) -> None:
        """Remembers that `address` holds `token` (from Bind or a forwarded
        answer) and starts connecting to it."""
        if not self.enabled or not token or not address or address == self._target:
            return
        with self._lock:
            if self._closed or self._tokens.get(token) == address:
                return
            self._tokens.pop(token, None)
            self._tokens[token] = address
            while len(self._tokens) > MAX_TOKENS:
                del self._tokens[next(iter(self._tokens))]
            if address not in self._owners:
                self._owners[address] = self._open(address)

    def learn_metadata(self, token: str, metadata: Optional[Sequence[Tuple[str, Any]]]) -> None:
        """learn() from a response's initial metadata (x-pyexec-owner)."""
        for key, value in metadata or ():
            if key == OWNER_HEADER:
                self.learn(token, value if isinstance(value, str) else value.decode())

    def route(self, token: str) -> Optional[O]:
        """The owner to send the session's call to, or None: the target."""
        if not token or not self._tokens:
            return None
        with self._lock:
            address = self._tokens.get(token)
            owner = self._owners.get(address) if address is not None else None
        if owner is None or time.monotonic() < owner.suspended_until:
            return None
        return owner if self._connected(owner) else None

    def owner_of(self, token: str) -> Optional[str]:
        """The owner address known for the token, if any."""
        with self._lock:
            return self._tokens.get(token)

    def failed(self, token: str, owner: O) -> None:
        """A call sent to `owner` failed UNAVAILABLE: the token's session may
        have moved, and the owner may be unreachable from here."""
        owner.suspended_until = time.monotonic() + SUSPEND_SECONDS
        owner.ever_ready = False
        self.forget(token, owner.address)

    def forget(self, token: str, address: Optional[str] = None) -> None:
        with self._lock:
            if address is None or self._tokens.get(token) == address:
                self._tokens.pop(token, None)

    def close(self) -> List[O]:
        """Forgets everything; returns the owners whose channels to close."""
        with self._lock:
            self._closed = True
            owners = list(self._owners.values())
            self._owners.clear()
            self._tokens.clear()
        return owners
