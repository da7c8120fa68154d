"""Whether the Hugging Face hub may and can be used, decided in at most two seconds.

Without this, a hub id that is not in the local cache, on a machine that cannot reach the hub, spends about 50 s in
huggingface_hub's retries before its one error line. One TCP connection to the hub endpoint (or to the HTTPS proxy
that would carry the request) answers the question; when it fails, loading goes on as if ``--offline`` were given
and the error says the hub is unreachable. The answer is kept for the life of the process only.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.parse
import urllib.request

TRUE = ("1", "true", "yes", "on")
CONNECT_TIMEOUT_S = 2.0


def env_offline() -> bool:
    """``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set."""
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_address() -> tuple[str, int]:
    """``(host, port)`` a hub request connects to first: the endpoint's, or its proxy's where one is set."""
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or host, p.port or 8080
    return host, url.port or (443 if url.scheme == "https" else 80)


@functools.cache
def _connects(host: str, port: int, timeout: float) -> bool:
    import socket

    ok = threading.Event()

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.set()
        except Exception:  # refused, timed out, no such host, or a sandbox forbidding it: not reachable
            pass

    # in a thread, so that a name lookup that hangs (no DNS server answers) is bounded by the same timeout
    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return ok.is_set()


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    host, port = hub_address()
    return _connects(host, port, timeout)


def unreachable_reason() -> str:
    host, port = hub_address()
    return f"the hub is unreachable ({host}:{port} did not accept a connection within {CONNECT_TIMEOUT_S:g} s)"
