"""The process around the app: drain on SIGTERM, stalled sockets, the separate metrics port."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app

from .processes import free_port, start, stop, wait_ready


def test_sigterm_drains_readyz_503_while_requests_are_still_served_then_exits_0(text_case):
    process, url = start(text_case.path, "--device", "cpu", "--drain-ms", "2000")
    try:
        wait_ready(process, url)
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/readyz").status_code == 200
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["accepting_requests"] is False
            assert client.get("/healthz").status_code == 200
            for _ in range(3):  # still served during the drain, on this connection and on new ones
                assert client.post("/v1/atomize", json={"inputs": ["t01 t02"]}).status_code == 200
                assert httpx.post(f"{url}/v1/embeddings", json={"input": "t01"}, timeout=10).status_code == 200
        assert process.wait(timeout=30) == 0
    finally:
        stop(process)
    stderr = process.stderr.read()
    assert "draining for 2.0 s" in stderr and "service.app: stopped" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_stalled_sockets_are_closed_and_cannot_crowd_out_normal_requests(text_case, http):
    process, url = start(text_case.path, "--device", "cpu", "--max-connections", "50", "--read-timeout-ms", "1500",
                         "--drain-ms", "0", "--http", http)
    port = int(url.rsplit(":", 1)[1])
    stalled: list[socket.socket] = []
    try:
        wait_ready(process, url)
        for i in range(150):  # three times the connection bound: mid-header, mid-body, and silent
            sock = socket.create_connection(("127.0.0.1", port))
            if i % 3 == 0:
                sock.sendall(b"POST /v1/atomize HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
            elif i % 3 == 1:
                sock.sendall(b"POST /v1/atomize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\": [")
            stalled.append(sock)
        started = time.monotonic()
        for _ in range(20):  # each on a new connection, while the stalled ones are open
            response = httpx.post(f"{url}/v1/atomize", json={"inputs": ["t01 t02"]}, timeout=10)
            assert response.status_code == 200
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        closed = 0
        for sock in stalled:
            sock.settimeout(max(0.1, started + 5.0 - time.monotonic()))
            try:
                closed += sock.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(stalled)  # every stalled socket was closed by the server
    finally:
        for sock in stalled:
            sock.close()
        stop(process)


def test_the_metrics_port_serves_metrics_and_the_api_port_does_not(text_case):
    port = free_port()
    with TestClient(create_app(text_case.settings(metrics_port=port))) as client:
        assert client.post("/v1/atomize", json={"inputs": ["t01"]}).status_code == 200
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert 'atom_requests_total{route="/v1/atomize",status="200"} 1.0' in scraped.text
        hidden = client.get("/metrics")
        assert hidden.status_code == 404 and "port" not in hidden.text
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    with pytest.raises(httpx.TransportError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
