"""The least a Python HTTP server does per request (benchmarks/http_ceiling.py): read the whole
body, answer fixed bytes (the file named by BARE_HTTP_RESPONSE: the service's own answer to one
input). No parsing, no model, no batching. Run under uvicorn with httptools and uvloop, as the
service runs:

    BARE_HTTP_RESPONSE=answer.json python -m uvicorn bare_http:app --app-dir benchmarks/peer_apps \
        --http httptools --loop uvloop --no-access-log
"""

from __future__ import annotations

import os
from pathlib import Path

BODY = Path(os.environ["BARE_HTTP_RESPONSE"]).read_bytes()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:  # the whole body, as a server that parses it must
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
