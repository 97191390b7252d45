"""The WebSocket layer: the only code that knows WebSocket framing.

websockets' sans-I/O protocol driven by us, as websockets itself pairs ``protocol.py`` with
``sync/`` and ``asyncio/``:

* ``frames``: the fast path for whole binary frames, and frame-boundary tracking;
* ``client``: :class:`~openenv_gym.ws.client.BlockingWebSocket`, I/O in the caller's thread;
* ``handshake``: the protocol's HELLO over it, and ``probe``, the readiness check providers use;
* ``server``: one asyncio connection, serving what a ``Router`` (the server) decides.

Imports ``protocol/`` and ``errors`` only: nothing of ``server/``, ``client/`` or gymnasium.
"""
