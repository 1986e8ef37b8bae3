"""The bank's life cycle in the service (`BankReloads`): reload on SIGHUP (every model's) or on
POST /v1/models/NAME/bank/reload (one model's), and the bundle's own bank moved from exact search
to an approximate index built once the service is up.

A `contract.bank.Bank` is immutable; each step here builds a new one and swaps the runtime's
reference, so a batch keeps the bank it started with and requests in flight finish on the old
bank.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

from contract.bank import Bank, BankError, open_bank
from contract.index import AtomIndex, IndexSpec, choose_spec

from .config import Settings
from .errors import BankReloadFailed
from .metrics import ModelMetrics
from .runtime import Runtime

if TYPE_CHECKING:
    from .served import Served

log = logging.getLogger(__name__)


def own_bank_spec(bank: Bank) -> IndexSpec | None:
    """The approximate index the bundle's own bank moves to once the service is up, or None.

    The bundle's own atoms are searched exactly from the start (no build before ready). Past
    the size where the project's own rule stops searching exactly (contract.index.choose_spec),
    an IVF index is built in the background: on the default bundle it built in 0.9 s (HNSW 1.6 s)
    with recall@10 1.000 on validation queries (benchmarks/results/own_bank.md), and its build
    grows more slowly with the bank than HNSW's (29 s against 136 s at 10^5 atoms, bank.md).
    """
    if bank.info.get("source") != "bundle":
        return None
    count, dim = bank.arrays.embedding.shape
    if choose_spec(count, dim).kind == "flat":
        return None
    return choose_spec(count, dim, "ivf")


def with_index(bank: Bank, spec: IndexSpec) -> Bank:
    """The same bank searched through a newly built `spec` index (blocking: call it in a thread)."""
    own = bank.index
    index = AtomIndex(own.embedding, own.radius, own.charge, spec=spec, energy=own.energy_fn)
    info = {key: value for key, value in bank.info.items() if key != "index_pending"}
    return dataclasses.replace(bank, index=index, info={**info, "search": spec.kind, "index": spec.to_dict()})


async def reload_bank(bank_path: Path | None, runtime: Runtime, metrics: ModelMetrics) -> Bank:
    """Load the bank again (the file may have been replaced), swap it in and return it.

    The new bank is loaded and validated off the event loop while requests go on being served
    from the old one; the swap is one reference assignment, so a batch already running
    finishes on the bank it started with. A bank that fails to load leaves the old one served
    and raises BankReloadFailed. `bank_path`: a user's bank folder (None: the bundle's own
    atoms). A large own bank's index is built afterwards by `BankReloads.index_in_background`.
    """
    try:
        bank = await asyncio.to_thread(open_bank, runtime.bundle, bank_path)
    except (BankError, OSError) as exc:
        log.error("bank reload failed, still serving version %s: %s", runtime.bank.version, exc)
        metrics.bank_reloaded(False)
        raise BankReloadFailed(f"the bank could not be loaded again; still serving version {runtime.bank.version}: "
                               f"{exc}") from None
    runtime.bank = bank
    metrics.set_bank(len(bank), bank.version, bank.index.spec.kind)
    metrics.bank_reloaded(True)
    log.info("bank reloaded: %d atoms, version %s", len(bank), bank.version)
    return bank


def own_bank_pending(runtime: Runtime) -> tuple[Bank, IndexSpec] | None:
    """Mark a large bundle-own bank `index_pending` (shown by /v1/model) and say what to build.

    Synchronous, so the mark is there before any request can ask; None when there is nothing
    to build (a small bank, or a bank folder with its own index).
    """
    spec = own_bank_spec(runtime.bank)
    if spec is None:
        return None
    pending = dataclasses.replace(runtime.bank, info={**runtime.bank.info, "index_pending": spec.kind})
    runtime.bank = pending
    return pending, spec


async def index_own_bank(runtime: Runtime, metrics: ModelMetrics,
                         job: tuple[Bank, IndexSpec] | None = None) -> None:
    """Move a large bundle-own bank from exact search to an IVF index built meanwhile.

    Requests are served from the exact bank while the index is built off the event loop; the
    swap is one reference assignment, as for a reload, and is skipped if a reload replaced the
    bank meanwhile.
    """
    job = job or own_bank_pending(runtime)
    if job is None:
        return
    pending, spec = job
    started = time.perf_counter()
    try:
        indexed = await asyncio.to_thread(with_index, pending, spec)
    except Exception:  # the exact bank keeps serving
        log.exception("building the %s index of the bundle's bank failed; searching it exactly", spec.kind)
        return
    if runtime.bank is pending:
        runtime.bank = indexed
        metrics.set_bank(len(indexed), indexed.version, spec.kind)
        log.info("bank of %d atoms: %s index %s built in %.1f s, now searched through it", len(indexed), spec.kind,
                 spec.params, time.perf_counter() - started)


class BankReloads:
    """The served models' bank reloads: SIGHUP reloads every model's bank (where the platform has
    SIGHUP and this is the main thread), `reload(model)` one model's (POST /v1/models/NAME/bank/reload).

    Reloads of one model run one at a time, in the order they were asked for, so the bank served
    after them is the one read last; a large bundle-own bank's IVF index is built in the background
    (bank_search auto), as at start-up, and `close()` cancels what is still running.
    """

    def __init__(self, settings: Settings, served: list[Served]):
        self.loop = asyncio.get_running_loop()
        self.index = settings.bank_search == "auto"
        self.locks = {model.name: asyncio.Lock() for model in served}
        self.tasks: set[asyncio.Task] = set()
        self.installed = False
        if not hasattr(signal, "SIGHUP"):
            return
        try:
            self.loop.add_signal_handler(signal.SIGHUP, self._sighup, served)
            self.installed = True
        except (RuntimeError, ValueError):  # not the main thread (e.g. an app run inside a test client)
            log.debug("no SIGHUP handler: not in the main thread")

    async def reload(self, model: Served) -> Bank:
        """The model's bank loaded again and served (marked `index_pending` while its index is built
        in the background); BankReloadFailed leaves the old one served."""
        async with self.locks[model.name]:
            await reload_bank(model.bank_path, model.runtime, model.metrics)
            self.index_in_background(model)
            return model.runtime.bank

    def index_in_background(self, model: Served) -> None:
        """A large bundle-own bank moves to its IVF index, built off the event loop (bank_search auto)."""
        job = own_bank_pending(model.runtime) if self.index else None
        if job is not None:
            self._spawn(index_own_bank(model.runtime, model.metrics, job))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = self.loop.create_task(work)
        self.tasks.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self.tasks.discard)

    def _sighup(self, served: list[Served]) -> None:
        log.info("SIGHUP: reloading the banks of %s", ", ".join(model.name for model in served))
        for model in served:
            self._spawn(self._reload_quietly(model))

    async def _reload_quietly(self, model: Served) -> None:
        with contextlib.suppress(BankReloadFailed):  # logged and counted by reload_bank; the old bank serves
            await self.reload(model)

    def close(self) -> None:
        if self.installed:
            self.loop.remove_signal_handler(signal.SIGHUP)
        for task in list(self.tasks):
            task.cancel()
