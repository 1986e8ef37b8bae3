"""Hold one peer server up for benchmarks/peers.py, which runs in the project's own environment.

    .venv-peers/bin/python benchmarks/peer_apps/host.py NAME MODEL_DIR WORK_DIR LOG_PATH CHECK_TEXTS_JSON [SETTINGS_JSON]

Starts the peer (`infinity`, `infinity-nospin`, `infinity-int8` or `ray-serve`, see benchmarks/peer_systems.py),
checks its answers on the given texts against sentence-transformers (an int8 peer: against its int8 file
run in process on the same batch), with SETTINGS_JSON's keyword arguments (its batch settings:
benchmarks/peers_sweep.py) when given, prints one JSON line (url, path, model,
version, start-up time, minimum cosine; or `unavailable` with the reason), then keeps the
server up until its standard input closes or it gets SIGTERM, and stops it with every child.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peer_systems  # noqa: E402


def main() -> int:
    name, model_dir, work_dir, log_path, texts_path = sys.argv[1:6]
    settings = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    servers = {"infinity": peer_systems.infinity_server, "ray-serve": peer_systems.ray_serve_server,
               "infinity-nospin": functools.partial(peer_systems.infinity_server, spinning=False),
               "infinity-int8": functools.partial(peer_systems.infinity_server, int8=True)}

    def stop(signum, frame):  # noqa: ARG001: leave the `with` below, which stops the server
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    texts = json.loads(Path(texts_path).read_text())
    try:
        if name.endswith("-int8"):  # against the int8 file itself, in process, in one batch as sent
            # (dynamic int8 depends on the batch: no more texts than the server puts in one batch)
            texts = texts[: settings.get("batch_size", len(texts))]
            int8_dir = peer_systems.quantized_model_dir(Path(model_dir), Path(work_dir) / "int8-model")
            reference = peer_systems.int8_reference(int8_dir, texts)
        else:
            reference = peer_systems.reference_embeddings(texts)
        with servers[name](Path(model_dir), Path(work_dir), Path(log_path), **settings) as endpoint:
            cosine = peer_systems.check_answers(endpoint, texts, reference)
            print(json.dumps({"url": endpoint.url, "path": endpoint.path, "model": endpoint.model,
                              "version": endpoint.version, "startup_s": endpoint.startup_s,
                              "min_cosine": cosine}), flush=True)
            try:
                sys.stdin.read()  # until the benchmark closes our stdin
            except KeyboardInterrupt:
                pass
    except peer_systems.PeerUnavailable as exc:
        print(json.dumps({"unavailable": exc.reason}), flush=True)
        return 3
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
