"""The engine manager: local inference servers started on demand, shared, stopped when idle.

Every engine process is supervised by one task in the manager's nursery, so the gateway's
nursery owns them all: cancelling ``EngineManager.run`` stops every engine (SIGTERM to its
process group, SIGKILL after ``stop_timeout``) before ``run`` returns. Requests never own
an engine; they hold a *lease* (``use``) that counts them in flight.

States, per engine (one per provider variant)::

    stopped ──use()──▶ starting ──health 200──▶ ready ──ttl / eviction / stop()──▶ stopping
       ▲                  │ exit, timeout                 │ exit                        │
       └──────────────────┴───────────────────────────────┴─────────────────────────────┘

A failed start puts the engine in a cooldown that doubles per consecutive failure; requests
during it fail at once with 503 instead of starting the engine again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import httpx
import trio

from .._errors import NotFound, UnsupportedEndpoint, UpstreamUnavailable
from ..config._engines import PORT_PLACEHOLDER, EngineConfig
from ._engine import (
    BASE_PATH,
    DEFAULT_ENDPOINTS,
    UNSAFE_FILE_CHARS,
    EngineGroup,
    EngineLease,
    EngineSlot,
    EngineStatus,
    engine_name,
)
from ._process import EngineLog, EngineProcess, describe_exit, free_port
from ._select import select_variant

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config._model import GatewayConfig

LOGGER = logging.getLogger("routecodex_trio.engines")

# Small servers answer /health ~100 ms after exec; big models take minutes. Poll early,
# then back off so a two-minute load costs ~240 requests, not thousands.
HEALTH_POLL_FIRST_S: Final = 0.05
HEALTH_POLL_MAX_S: Final = 0.5
HEALTH_REQUEST_TIMEOUT_S: Final = 2.0
# A process stuck in uninterruptible sleep (GPU driver, NFS) may outlive SIGKILL for a while;
# after this we stop waiting for it and say so in the log.
KILL_WAIT_S: Final = 5.0
# Output still in the pipe when the engine exits (its last words are usually the reason).
OUTPUT_DRAIN_S: Final = 0.5
# Failed starts back off 5 s, 10 s, 20 s... up to 5 min: a broken command line must not
# reload a model (or spin a CPU) on every request.
START_RETRY_BASE_S: Final = 5.0
START_RETRY_MAX_S: Final = 300.0
# Engine output lines copied into the gateway log when a start fails.
FAILURE_LOG_LINES: Final = 20


@attrs.define(eq=False)
class EngineManager:
    """Owns every local engine process of a gateway.

    Start it with ``await nursery.start(manager.run)``; then ``use()`` leases engines.

    Resource handling: the engine processes, their log files and the health-check HTTP
    client live exactly as long as ``run()``.
    """

    config: GatewayConfig
    _groups: dict[str, EngineGroup] = attrs.field(init=False, factory=dict)
    _engines: dict[str, EngineSlot] = attrs.field(init=False, factory=dict)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _http: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Serialises decisions to start (and evict for) an engine; leasing a ready one skips it.
    _admit_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    # Engines of a definition a reload replaced: draining, still counted against max_running.
    _retiring: set[EngineSlot] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        log_dir = Path(self.config.engines.log_dir).expanduser()
        for provider in self.config.providers.values():
            if provider.engine is None:
                continue
            self._add_group(provider.name, provider.type, provider.engine, log_dir)

    def _add_group(self, provider: str, provider_type: str, engine: EngineConfig, log_dir: Path) -> None:
        specs = engine.specs()
        group = EngineGroup(
            provider=provider,
            specs=specs,
            endpoints=engine.endpoints or DEFAULT_ENDPOINTS.get(provider_type, ("chat", "completions")),
            base_path=BASE_PATH.get(provider_type, "/v1"),
            engines={},
        )
        for spec in specs:
            name = engine_name(provider, spec.variant)
            log = EngineLog(
                path=log_dir / f"{UNSAFE_FILE_CHARS.sub('_', name)}.log",
                max_lines=self.config.engines.log_lines,
            )
            group.engines[spec.variant] = self._engines[name] = EngineSlot(
                name=name, provider=provider, spec=spec, log=log
            )
        self._groups[provider] = group

    # -- public ------------------------------------------------------------------------------

    def has_engine(self, provider_name: str) -> bool:
        """Whether requests for this provider go through ``use()``."""
        return provider_name in self._groups

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise engines until cancelled; stops every engine before returning.

        Starts nothing by itself: engines start on the first ``use()``. Also stops engines
        idle for longer than their ``ttl``.

        Cancellation: the only way to end it. Every engine then gets SIGTERM (process group),
        SIGKILL after its ``stop_timeout``, and ``run`` returns once they are gone; requests
        waiting for an engine fail with 503.
        """
        if self._nursery is not None:
            raise RuntimeError("EngineManager.run() is already running")
        async with (
            httpx.AsyncClient(trust_env=False, timeout=HEALTH_REQUEST_TIMEOUT_S) as http,
            trio.open_nursery() as nursery,
        ):
            self._http, self._nursery = http, nursery
            task_status.started()
            try:
                await self._stop_idle_forever()
            finally:
                # New requests fail from here on; supervisors are being cancelled with us.
                self._nursery = None
                self._notify()
        self._http = None

    @contextlib.asynccontextmanager
    async def use(
        self, provider_name: str, *, estimated_tokens: int, endpoint: str
    ) -> AsyncIterator[EngineLease]:
        """Lease the provider's engine for one request, starting it if needed.

        Picks the variant for ``estimated_tokens`` (``select_variant``), starts it unless it
        runs (concurrent first requests join one start), waits until it is healthy, and
        counts the request in flight while the block runs.

        Args:
            provider_name: a provider with an engine (``has_engine``).
            estimated_tokens: the request's size, for the variant choice.
            endpoint: the upstream endpoint about to be called: ``chat``, ``completions``,
                ``responses`` or ``messages``.

        Raises:
            UnsupportedEndpoint: the engine does not serve ``endpoint`` (nothing is started).
            UpstreamUnavailable: status 503: the start failed (exited, not healthy within
                ``start_timeout``, command not found), the engine is in its cooldown after
                such a failure, or the manager is not running. The engine's output goes to
                the gateway log, never into the message.
            KeyError: the provider has no engine.

        Cancellation: safe at any point; a start this request triggered goes on for the
        requests that joined it.
        """
        group = self._groups.get(provider_name)
        if group is None:
            raise KeyError(f"provider {provider_name!r} has no engine")
        if endpoint not in group.endpoints:
            raise UnsupportedEndpoint(
                f"provider {provider_name!r} runs a local engine that serves only "
                f"{', '.join(group.endpoints)}; it cannot serve {endpoint!r}"
            )
        running = [v for v, e in group.engines.items() if e.state in ("starting", "ready")]
        choice = select_variant(group.specs, estimated_tokens, running=running)
        engine = group.engines[choice.variant]
        if len(group.specs) > 1:
            LOGGER.info("engine %s for ~%d tokens: %s", engine.name, estimated_tokens, choice.reason)
        await self._acquire(engine)
        try:
            assert engine.port is not None
            yield EngineLease(
                base_url=f"http://127.0.0.1:{engine.port}{group.base_path}",
                variant=choice.variant,
                reason=choice.reason,
                engine=engine.name,
            )
        finally:
            engine.in_flight -= 1
            self._touch(engine)
            self._notify()

    def statuses(self) -> list[EngineStatus]:
        """A snapshot of every engine, sorted by name (must run inside trio)."""
        now = trio.current_time()
        return [
            EngineStatus(
                name=e.name,
                provider=e.provider,
                variant=e.spec.variant,
                state=e.state,
                pid=e.process.pid if e.process is not None else None,
                port=e.port,
                uptime_s=None if e.started_at is None else round(now - e.started_at, 3),
                last_use=e.last_use_wall,
                in_flight=e.in_flight,
                starts=e.starts,
                last_error=e.last_error,
                retry_in_s=round(e.retry_at - now, 3) if e.retry_at > now else None,
                log_file=str(e.log.path) if e.log.path is not None else None,
                log_lines=tuple(e.log.lines),
            )
            for e in sorted(self._engines.values(), key=lambda e: e.name)
        ]

    async def stop(self, name: str) -> None:
        """Stop an engine now (``local`` or ``local:long``; a provider name stops all its variants).

        Requests in flight on it are cut (they see the upstream connection fail). Also ends
        the cooldown of a failed engine, so the next request tries a fresh start. Returns
        once the processes are gone.

        Raises:
            NotFound: no engine or provider with an engine has that name.
        """
        if name in self._engines:
            engines = [self._engines[name]]
        elif name in self._groups:
            engines = list(self._groups[name].engines.values())
        else:
            raise NotFound(f"no engine named {name!r}")
        for engine in engines:
            engine.failures, engine.retry_at = 0, -math.inf
            if engine.state != "stopped":
                LOGGER.info("engine %s: stop requested", engine.name)
                self._cancel(engine)
        for engine in engines:
            while engine.state != "stopped":
                await self._changed.wait()

    async def start(self, name: str) -> None:
        """Start an engine now, without a request (a warm-up); returns once it is ready.

        A provider name starts its first variant. An engine already ready is left as it is;
        a failed engine's cooldown is ended first (the operator asked for this start).
        The engine then lives by its ``ttl`` as if a request had just used it.

        Raises:
            NotFound: no engine or provider with an engine has that name.
            UpstreamUnavailable: the start failed (status 503), as for a request.
        """
        engine = self._engines.get(name)
        if engine is None and name in self._groups:
            engine = next(iter(self._groups[name].engines.values()))
        if engine is None:
            raise NotFound(f"no engine named {name!r}")
        if engine.state == "stopped":
            engine.failures, engine.retry_at = 0, -math.inf
            LOGGER.info("engine %s: start requested", engine.name)
        await self._acquire(engine)
        engine.in_flight -= 1
        self._touch(engine)
        self._notify()

    def reconfigure(self, config: GatewayConfig) -> None:
        """Adopt a reloaded config.

        Engines whose provider type and ``engine`` table did not change keep running. Changed
        or removed ones leave at once for new requests, finish the requests in flight on them,
        then stop; new definitions start on their first request.
        """
        log_dir = Path(config.engines.log_dir).expanduser()
        wanted = {p.name: (p.type, p.engine) for p in config.providers.values() if p.engine is not None}
        for provider, group in list(self._groups.items()):
            old = self.config.providers.get(provider)
            if old is not None and wanted.get(provider) == (old.type, old.engine):
                continue
            del self._groups[provider]
            for engine in group.engines.values():
                del self._engines[engine.name]
                if engine.state == "stopped":
                    continue
                LOGGER.info("engine %s: definition changed or removed; draining it", engine.name)
                self._retiring.add(engine)
                if self._nursery is not None:
                    self._nursery.start_soon(self._retire, engine)
        for provider, (provider_type, engine_config) in wanted.items():
            if provider not in self._groups and engine_config is not None:
                self._add_group(provider, provider_type, engine_config, log_dir)
        self.config = config
        self._notify()

    async def _retire(self, engine: EngineSlot) -> None:
        try:
            await self._drain_and_stop(engine)
        finally:
            self._retiring.discard(engine)
            self._notify()

    # -- leasing and admission -------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every task waiting for an engine state, in-flight or last-use change."""
        self._changed.set()
        self._changed = trio.Event()

    def _touch(self, engine: EngineSlot) -> None:
        engine.last_use = trio.current_time()
        engine.last_use_wall = time.time()

    async def _acquire(self, engine: EngineSlot) -> None:
        joined: int | None = None
        while True:
            if engine.state == "ready":
                engine.in_flight += 1
                self._touch(engine)
                if joined is not None and not engine.waiting:
                    self._notify()  # the last joiner is in: the engine may be chosen for eviction
                return
            if joined is not None and engine.failed_generation == joined:
                raise self._unavailable(engine)
            if self._nursery is None:
                raise UpstreamUnavailable(
                    f"local engine {engine.name!r} is not available: the engine manager is not running",
                    provider=engine.provider,
                    status=503,
                    kind="overloaded",
                    code="engine_unavailable",
                )
            if engine.state == "starting":
                joined = engine.generation
                engine.waiting += 1
                try:
                    await self._changed.wait()
                finally:
                    engine.waiting -= 1
            elif engine.state == "stopping":
                await self._changed.wait()
            elif engine.retry_at > trio.current_time():
                raise self._unavailable(engine)
            else:
                await self._admit(engine)

    async def _admit(self, engine: EngineSlot) -> None:
        """Start ``engine`` once a ``max_running`` slot is free, evicting the LRU engine if needed."""
        async with self._admit_lock:
            while engine.state == "stopped" and self._nursery is not None:
                if engine.retry_at > trio.current_time():
                    return
                if self._occupied() < self.config.engines.max_running:
                    self._launch(engine, self._nursery)
                    return
                victim = self._victim(exclude=engine)
                if victim is None:
                    # Every slot is starting or stopping: wait for one to settle.
                    await self._changed.wait()
                    continue
                LOGGER.info(
                    "engine %s: stopping %s (least recently used, %d in flight) to make room "
                    "(engines.max_running = %d)",
                    engine.name,
                    victim.name,
                    victim.in_flight,
                    self.config.engines.max_running,
                )
                await self._drain_and_stop(victim)

    def _occupied(self) -> int:
        # A stopping engine still holds its memory until its process is gone.
        return sum(1 for e in (*self._engines.values(), *self._retiring) if e.state != "stopped")

    def _victim(self, *, exclude: EngineSlot) -> EngineSlot | None:
        # An engine whose joiners have not taken their leases yet is not idle: evicting it in
        # that instant would send them through a second start.
        ready = [
            e for e in self._engines.values() if e is not exclude and e.state == "ready" and not e.waiting
        ]
        if not ready:
            return None
        return min(ready, key=lambda e: (e.in_flight > 0, e.last_use))

    async def _drain_and_stop(self, engine: EngineSlot) -> None:
        """Let the requests in flight on ``engine`` finish (no new ones join), then stop it."""
        if engine.state in ("starting", "ready"):
            engine.state = "stopping"
            self._notify()
        while engine.in_flight > 0 and engine.state == "stopping":
            await self._changed.wait()
        self._cancel(engine)
        while engine.state != "stopped":
            await self._changed.wait()

    def _cancel(self, engine: EngineSlot) -> None:
        if engine.state == "stopped":
            return
        engine.state = "stopping"
        if engine.scope is not None:
            engine.scope.cancel()
        self._notify()

    def _unavailable(self, engine: EngineSlot) -> UpstreamUnavailable:
        retry_in = max(0.0, engine.retry_at - trio.current_time())
        return UpstreamUnavailable(
            f"local engine {engine.name!r} failed to start ({engine.last_error}); "
            f"next attempt allowed in {retry_in:.0f} s; the engine's output is in the gateway log",
            provider=engine.provider,
            status=503,
            kind="overloaded",
            code="engine_unavailable",
            retry_after_s=retry_in,
        )

    async def _stop_idle_forever(self) -> None:
        while True:
            now = trio.current_time()
            next_check = math.inf
            for engine in self._engines.values():
                ttl = engine.spec.ttl
                if engine.state != "ready" or engine.in_flight or ttl <= 0:
                    continue
                due = engine.last_use + ttl
                if due <= now:
                    LOGGER.info(
                        "engine %s: idle for %.1f s (ttl %g s), stopping",
                        engine.name,
                        now - engine.last_use,
                        ttl,
                    )
                    self._cancel(engine)
                else:
                    next_check = min(next_check, due)
            with trio.move_on_at(next_check):
                await self._changed.wait()

    # -- supervision ---------------------------------------------------------------------

    def _launch(self, engine: EngineSlot, nursery: trio.Nursery) -> None:
        engine.generation += 1
        engine.starts += 1
        engine.state = "starting"
        engine.started_at = trio.current_time()
        engine.scope = trio.CancelScope()
        nursery.start_soon(self._supervise, engine, engine.scope, name=f"engine {engine.name}")
        self._notify()

    async def _supervise(self, engine: EngineSlot, scope: trio.CancelScope) -> None:
        """One run of one engine process, from spawn to reaped; sets the outcome."""
        generation, spec = engine.generation, engine.spec
        failure: str | None = None
        problem = engine.log.open()
        if problem:
            LOGGER.warning("engine %s: %s; its output is kept in memory only", engine.name, problem)
        try:
            with scope:
                port = engine.port = free_port()
                argv = [arg.replace(PORT_PLACEHOLDER, str(port)) for arg in shlex.split(spec.cmd)]
                # Only the program name: arguments may carry keys (llama-server --api-key).
                engine.log.mark(f"starting {argv[0]} on port {port} (variant {spec.variant})")
                try:
                    process = EngineProcess.spawn(argv, {**os.environ, **spec.env})
                except OSError as exc:
                    failure = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
                else:
                    engine.process = process
                    LOGGER.info("engine %s: starting (pid %d, port %d)", engine.name, process.pid, port)
                    failure = await self._run_process(engine, process)
        except Exception:
            # A bug here must cost this engine, not the gateway's nursery.
            LOGGER.exception("engine %s: supervisor failed", engine.name)
            failure = failure or "internal error in the engine supervisor"
        finally:
            if failure is not None:
                engine.log.mark(f"start failed: {failure}")
            engine.log.close()
            self._settle(engine, generation, failure)

    async def _run_process(self, engine: EngineSlot, process: EngineProcess) -> str | None:
        """Wait for health, serve until exit or cancellation, then make sure it is gone.

        Returns a description of a failed start, or None (ready, then stopped or exited).
        """
        exited, io_done = trio.Event(), trio.Event()
        # The output pump and exit watcher must outlive a stop request: the engine's last
        # words and its exit are what the shielded termination below waits for.
        io_scope = trio.CancelScope(shield=True)
        failure: str | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, engine, process, exited, io_scope, io_done)
                try:
                    failure = await self._wait_healthy(engine, process, exited)
                    if failure is None:
                        self._mark_ready(engine, process)
                        await exited.wait()
                        # Its last words (the crash reason) may still be in the pipe.
                        with trio.move_on_after(OUTPUT_DRAIN_S):
                            await io_done.wait()
                        assert process.exit_code is not None
                        engine.last_error = f"{describe_exit(process.exit_code)} while serving"
                        LOGGER.warning(
                            "engine %s %s; last output (%s):\n%s",
                            engine.name,
                            engine.last_error,
                            engine.log.path,
                            self._tail(engine),
                        )
                finally:
                    with trio.CancelScope(shield=True):
                        await self._terminate(engine, process, exited)
                        with trio.move_on_after(OUTPUT_DRAIN_S):
                            await io_done.wait()
                        io_scope.cancel()
        finally:
            process.close()
        return failure

    async def _watch(
        self,
        engine: EngineSlot,
        process: EngineProcess,
        exited: trio.Event,
        io_scope: trio.CancelScope,
        io_done: trio.Event,
    ) -> None:
        try:
            with io_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, engine, process)
                    await process.wait_exited()
                    exited.set()
        finally:
            io_done.set()

    async def _pump(self, engine: EngineSlot, process: EngineProcess) -> None:
        async with process.output:
            while True:
                try:
                    chunk = await process.output.receive_some(65536)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
                if not chunk:
                    return
                engine.log.feed(chunk)

    async def _wait_healthy(
        self, engine: EngineSlot, process: EngineProcess, exited: trio.Event
    ) -> str | None:
        spec = engine.spec
        url = f"http://127.0.0.1:{engine.port}{spec.health_path}"
        interval = HEALTH_POLL_FIRST_S
        last_answer = "no answer"
        with trio.move_on_after(spec.start_timeout):
            while not exited.is_set():
                last_answer = await self._probe(url)
                if last_answer == "200":
                    return None
                with trio.move_on_after(interval):
                    await exited.wait()
                interval = min(interval * 2, HEALTH_POLL_MAX_S)
            assert process.exit_code is not None
            return f"{describe_exit(process.exit_code)} before becoming healthy"
        return f"not healthy within {spec.start_timeout:g} s (GET {spec.health_path}: {last_answer})"

    async def _probe(self, url: str) -> str:
        """``"200"`` when healthy, else what was seen instead (for the failure message)."""
        assert self._http is not None
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    def _mark_ready(self, engine: EngineSlot, process: EngineProcess) -> None:
        if engine.state != "starting":
            return
        assert engine.started_at is not None
        engine.state = "ready"
        engine.failures, engine.retry_at, engine.last_error = 0, -math.inf, None
        self._touch(engine)
        LOGGER.info(
            "engine %s: ready on port %s (pid %d) after %.1f s",
            engine.name,
            engine.port,
            process.pid,
            trio.current_time() - engine.started_at,
        )
        self._notify()

    async def _terminate(self, engine: EngineSlot, process: EngineProcess, exited: trio.Event) -> None:
        """SIGTERM the process group, SIGKILL after ``stop_timeout``; reap the leader.

        Cancellation: callers shield it; it is bounded by ``stop_timeout + KILL_WAIT_S``.
        """
        stop_timeout = engine.spec.stop_timeout
        if not exited.is_set():
            engine.log.mark("stopping: SIGTERM")
            process.signal_group(signal.SIGTERM)
            with trio.move_on_after(stop_timeout):
                await exited.wait()
            if not exited.is_set():
                LOGGER.warning(
                    "engine %s: still running %g s after SIGTERM, sending SIGKILL", engine.name, stop_timeout
                )
                engine.log.mark(f"still running {stop_timeout:g} s after SIGTERM: SIGKILL")
        # Whatever the leader left behind in its group goes now, while the unreaped leader
        # still reserves the group id.
        process.signal_group(signal.SIGKILL)
        with trio.move_on_after(KILL_WAIT_S):
            await exited.wait()
        if exited.is_set():
            assert process.exit_code is not None
            engine.log.mark(describe_exit(process.exit_code))
            process.reap()
        else:
            LOGGER.error("engine %s: pid %d did not exit after SIGKILL", engine.name, process.pid)

    def _settle(self, engine: EngineSlot, generation: int, failure: str | None) -> None:
        if failure is not None:
            engine.failures += 1
            delay = min(START_RETRY_BASE_S * 2 ** (engine.failures - 1), START_RETRY_MAX_S)
            engine.retry_at = trio.current_time() + delay
            engine.failed_generation = generation
            engine.last_error = failure
            LOGGER.error(
                "engine %s failed to start: %s; next start allowed in %g s; last output (%s):\n%s",
                engine.name,
                failure,
                delay,
                engine.log.path,
                self._tail(engine),
            )
        else:
            LOGGER.info("engine %s: stopped", engine.name)
        engine.state = "stopped"
        engine.process = None
        engine.port = None
        engine.started_at = None
        engine.scope = None
        self._notify()

    def _tail(self, engine: EngineSlot) -> str:
        lines = list(engine.log.lines)[-FAILURE_LOG_LINES:]
        return "\n".join(f"  | {line}" for line in lines) if lines else "  (no output)"
