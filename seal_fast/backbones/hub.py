"""Failing fast where weights would come from the Hugging Face hub but cannot.

Offline, open_clip and timm wait through the hub client's retries (tens of lines
over about a minute) before they give up. Weights already in the hub's local cache
load as before; otherwise one connection attempt with a short timeout decides.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import SealFastError

PROBE_SECONDS = 3.0


def require_hub(name: str, repo_id: str | None) -> None:
    """Return if `repo_id`'s files can be had (cached, or the hub answers); else one line saying what to do."""
    if not repo_id:
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # the model library will say what it needs
        return
    cached = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.strip("/").replace("/", "--"))
    if cached.is_dir() or constants.HF_HUB_OFFLINE or any(
            os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy: no direct probe can tell, the hub client decides
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SealFastError(f"{name}: its weights are not in the local Hugging Face cache and {constants.ENDPOINT} "
                            f"cannot be reached ({reason}); pass --weights {name}=PATH for a local checkpoint") \
            from None
