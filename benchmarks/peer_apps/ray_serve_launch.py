"""Start a local Ray (no dashboard UI, no usage stats, loopback only) and serve ray_serve_app on it.

    python benchmarks/peer_apps/ray_serve_launch.py --model-dir DIR --port 8123 --temp-dir /tmp/rayp-x

Prints a line "RAY_SERVE_READY <url>" once the application is running, then blocks. SIGTERM or
SIGINT shuts Serve and Ray down (every Ray process it started: GCS, raylet, workers, the Serve
controller, proxy and replica) and exits 0. Ray's own files live under --temp-dir (keep it short:
Ray puts Unix sockets there, whose paths are limited to ~107 bytes).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Before ray is imported: no usage-stats reporting, and the node address resolved to 127.0.0.1
# (Ray otherwise picks the machine's outward-facing address for its processes; this switch is
# the one Ray reads for single-machine use on macOS/Windows, honoured on Linux as well).
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Ray turns token authentication of its internal gRPC on whenever ~/.ray/auth_token exists (left
# by any earlier Ray use on the machine); off, as on a clean machine, so every run is the same.
os.environ["RAY_AUTH_MODE"] = "disabled"
# Ray's workers import ray_serve_app / onnx_minilm by name: they inherit this from the raylet.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(HERE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="folder with model.onnx and tokenizer.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", default="/embeddings")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    parser.add_argument("--intra-op-threads", type=int, default=0, help="ONNX Runtime threads (0: its choice)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs Ray may schedule on")
    parser.add_argument("--log-level", default="WARNING", help="Serve's log level")
    parser.add_argument("--temp-dir", required=True, help="Ray's session files (absolute, short)")
    args = parser.parse_args()

    stop = threading.Event()

    def on_stop_signal(*_):
        stop.set()

    def install_handlers():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_stop_signal)

    install_handlers()  # before Ray starts, so a stop request during startup is not lost

    import ray
    from ray import serve
    from ray_serve_app import build_app

    started = time.monotonic()
    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        _temp_dir=str(Path(args.temp_dir).resolve()),
        _node_ip_address="127.0.0.1",
    )
    # ray.init puts its own SIGTERM handler in place (it prints a stack trace and dies without
    # shutting anything down): ours again, so that SIGTERM means a clean stop.
    install_handlers()
    try:
        if stop.is_set():
            return 0
        # No access log (a line per request from the proxy and the replica), as for the other
        # servers measured; warnings and errors still reach the log.
        logging_config = {"enable_access_log": False, "log_level": args.log_level.upper()}
        serve.start(http_options={"host": args.host, "port": args.port}, logging_config=logging_config)
        serve.run(
            build_app(args.model_dir, args.batch_size, args.batch_wait_timeout_s, args.intra_op_threads),
            name="minilm",
            route_prefix=args.route,
            logging_config=logging_config,
        )
        print(
            f"RAY_SERVE_READY http://{args.host}:{args.port}{args.route} "
            f"({time.monotonic() - started:.1f} s after ray.init)",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print("RAY_SERVE_STOPPING", flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
    print("RAY_SERVE_STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
