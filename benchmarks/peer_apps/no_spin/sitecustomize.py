"""Put on a peer's PYTHONPATH (benchmarks/peer_systems.py, `spinning=False`): every ONNX Runtime
session the peer opens gets `session.intra_op.allow_spinning = 0`, the policy this service runs
with (contract/runner.py), so both are measured with idle intra-op threads asleep rather than
spinning. The peer's own code is untouched: the session's constructor is wrapped when Python starts."""

from __future__ import annotations

import functools

try:
    import onnxruntime
except ImportError:  # a process of the peer that does not use ONNX Runtime
    onnxruntime = None

if onnxruntime is not None:
    _init = onnxruntime.InferenceSession.__init__

    @functools.wraps(_init)
    def _no_spin_init(self, path_or_bytes, sess_options=None, *args, **kwargs):
        options = sess_options if sess_options is not None else onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _init(self, path_or_bytes, options, *args, **kwargs)

    onnxruntime.InferenceSession.__init__ = _no_spin_init
