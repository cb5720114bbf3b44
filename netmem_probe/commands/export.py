"""
``netmem-probe export``: the page pools and memory providers as Prometheus
metrics, made with the official ``prometheus_client`` library.

``--listen ADDR:PORT`` serves ``/metrics``; each scrape reads the target
afresh, but never more often than ``--min-interval`` seconds (a scrape within
it gets the previous reading, and concurrent scrapes wait for one read), so a
scrape storm cannot load the host.  ``--textfile PATH`` writes node_exporter's
textfile-collector format once, atomically (a temporary file renamed over
PATH).

Metric names follow Prometheus' conventions (base units in the name,
``_total`` for counters) and netlink's attribute names (``page-pool-get``,
``page-pool-stats-get``).  Cardinality is bounded: per-pool series exist for
at most ``--max-pools`` pools (detached ones first, then by pages in flight;
the rest are counted in ``netmem_page_pools_unexported``), and per-area
series for at most as many provider areas (labelled by ``area``, what
``niovs --area`` takes).  A pool has up to 17 series (6 without
``CONFIG_PAGE_POOL_STATS``), an area 4, whatever the traffic.
"""

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import click
import drgn

from netmem_probe.context import EXIT_PARTIAL, Target
from netmem_probe.kernel.page_pool import STAT_NAMES, PagePoolInfo, PagePoolScanner
from netmem_probe.kernel.walk import Problems
from netmem_probe.snippets import no_drgn_option

__all__ = ("POOL_LABELS", "PoolCollector", "export")

EXAMPLES = """\b
EXAMPLES:
  sudo netmem-probe export --listen 127.0.0.1:9469
      serve /metrics for Prometheus; every scrape reads the kernel again,
      at most once every 5 s
  sudo netmem-probe export --textfile /var/lib/node_exporter/netmem.prom
      one reading for node_exporter's textfile collector (run it from a
      timer); the file is replaced atomically
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed export --textfile -
      the metrics of a bundled fixture, on stdout
"""

#: Labels of every per-pool series.
POOL_LABELS = (
    "id",
    "netdev",
    "ifindex",
    "napi_id",
    "queue",
    "driver",
    "state",
    "detached",
    "netns",
    # a pool's identity where the kernel gives none (no ids before Linux 6.8)
    "address",
)
STATES = ("listed", "orphaned", "invisible", "unreachable", "unregistered")
NIOV_STATES = ("free", "in-pool", "stack", "user")


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def pool_labels(info: PagePoolInfo) -> Tuple[str, ...]:
    """The label values of a pool's series, in :data:`POOL_LABELS` order."""
    netdev = info.netdev
    return tuple(
        _label(v)
        for v in (
            info.id,
            netdev.name if netdev else None,
            netdev.ifindex if netdev else None,
            info.napi_id,
            info.queue,
            netdev.driver if netdev and info.state == "listed" else None,
            info.state,
            "true" if info.detached else "false",
            netdev.netns if netdev else None,
            f"{info.address:#x}",
        )
    )


@dataclass
class Reading:
    """One read of the target: the metric families made from it."""

    families: List[Any] = field(default_factory=list)
    skipped: int = 0
    duration: float = 0.0
    at: float = 0.0
    ok: bool = True


class PoolCollector:
    """
    A ``prometheus_client`` collector that reads the target's pools (and
    provider areas) when scraped, at most once per ``min_interval`` seconds.
    """

    def __init__(
        self,
        prog: drgn.Program,
        *,
        min_interval: float = 5.0,
        max_pools: int = 1000,
        providers: bool = True,
        log: Any = None,
    ) -> None:
        self.prog = prog
        self.min_interval = min_interval
        self.max_pools = max_pools
        self.providers = providers
        self.log = log or (lambda text: click.echo(f"netmem-probe: {text}", err=True))
        self.errors = {"failed": 0, "partial": 0}
        self.reads = 0
        self.last_problems = Problems()
        self._lock = threading.Lock()
        self._reading: Optional[Reading] = None

    def describe(self) -> Iterable[Any]:
        # No read at registration: the registry then asks collect() only
        # when scraped.
        return []

    def collect(self) -> Iterator[Any]:
        with self._lock:
            now = time.monotonic()
            reading = self._reading
            if reading is None or now - reading.at >= self.min_interval:
                reading = self._reading = self._read(now)
        yield from reading.families
        yield from self._own_metrics(reading)

    # -- reading -----------------------------------------------------------

    def _read(self, now: float) -> Reading:
        from prometheus_client.core import GaugeMetricFamily

        self.reads += 1
        problems = Problems()
        start = time.perf_counter()
        try:
            families = self._families(problems)
        except Exception as e:  # noqa: BLE001 - a torn read must not stop the server
            self.errors["failed"] += 1
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.log(f"error: reading the target failed: {type(e).__name__}: {reason}")
            return Reading([], len(problems), time.perf_counter() - start, now, ok=False)
        self.last_problems = problems
        if problems:
            self.errors["partial"] += 1
            self.log(
                f"warning: {len(problems)} object(s) skipped (unreadable or inconsistent), "
                f"first: {problems.items[0]}"
            )
        skipped = GaugeMetricFamily(
            "netmem_probe_skipped_objects",
            "Kernel objects the last reading skipped as unreadable or inconsistent.",
            value=len(problems),
        )
        return Reading([*families, skipped], len(problems), time.perf_counter() - start, now)

    def _families(self, problems: Problems) -> List[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        scanner = PagePoolScanner(self.prog, problems)
        infos = list(scanner.pools())
        by_state = GaugeMetricFamily(
            "netmem_page_pools",
            "Page pools in the page_pools registry, by visibility state and whether "
            "they are detached (destroyed by their driver, still waiting for pages).",
            labels=["state", "detached"],
        )
        for state in STATES:
            for detached in (False, True):
                count = sum(1 for i in infos if i.state == state and i.detached == detached)
                by_state.add_metric([state, "true" if detached else "false"], count)

        chosen = sorted(infos, key=lambda i: (not i.detached, -i.inflight, i.id))
        exported, dropped = chosen[: self.max_pools], chosen[self.max_pools :]
        labels = list(POOL_LABELS)

        def gauge(name: str, doc: str, extra: Sequence[str] = ()) -> Any:
            return GaugeMetricFamily(name, doc, labels=labels + list(extra))

        def counter(name: str, doc: str) -> Any:
            return CounterMetricFamily(name, doc, labels=labels)

        inflight = gauge(
            "netmem_page_pool_inflight_pages",
            "Pages (or net_iovs) the pool handed out and has not had back (netlink inflight).",
        )
        inflight_mem = gauge(
            "netmem_page_pool_inflight_bytes",
            "Memory of the pages in flight (netlink inflight-mem).",
        )
        hold = counter(
            "netmem_page_pool_pages_hold",
            "Pages the pool handed out (pages_state_hold_cnt; a u32 that wraps).",
        )
        release = counter(
            "netmem_page_pool_pages_release",
            "Pages that came back to the pool (pages_state_release_cnt; a u32 that wraps).",
        )
        detach_age = gauge(
            "netmem_page_pool_detach_age_seconds",
            "Seconds since the driver destroyed the pool (netlink detach-time); "
            "only detached pools.",
        )
        provider = gauge(
            "netmem_page_pool_provider_info",
            "The memory provider that fills the pool (dmabuf: devmem TCP binding; io_uring: zcrx).",
            extra=["provider", "dmabuf"],
        )
        stats = {
            name: counter(
                "netmem_page_pool_" + name.replace("-", "_"),
                f"page-pool-stats-get {name} (CONFIG_PAGE_POOL_STATS).",
            )
            for name in STAT_NAMES
        }
        for info in exported:
            values = pool_labels(info)
            inflight.add_metric(values, info.inflight)
            inflight_mem.add_metric(values, info.inflight_mem)
            hold.add_metric(values, info.hold)
            release.add_metric(values, info.release)
            if info.detach_age is not None:
                detach_age.add_metric(values, info.detach_age)
            if info.provider:
                provider.add_metric([*values, info.provider, _label(info.dmabuf)], 1)
            pool_stats = scanner.stats(info)
            for name, value in (pool_stats or {}).items():
                if value is not None:
                    stats[name].add_metric(values, value)
        unexported = GaugeMetricFamily(
            "netmem_page_pools_unexported",
            "Pools left out of the per-pool series by --max-pools.",
            value=len(dropped),
        )
        families = [
            by_state,
            unexported,
            inflight,
            inflight_mem,
            hold,
            release,
            detach_age,
            provider,
            *stats.values(),
        ]
        if self.providers:
            families.append(self._niovs(problems))
        return families

    def _niovs(self, problems: Problems) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from netmem_probe.kernel.providers import ProviderScanner

        family = GaugeMetricFamily(
            "netmem_provider_niovs",
            "net_iovs of a devmem dma-buf binding or io_uring zcrx area, by state: "
            "free, in-pool (alloc cache or ring), stack (driver, skbs), user (zcrx user space).",
            labels=["area", "kind", "id", "netdev", "state"],
        )
        try:
            scanner = ProviderScanner(self.prog, problems, scan_files=False)
            areas = list(scanner.areas())
        except LookupError:
            return family  # a kernel without memory providers
        for area in areas[: self.max_pools]:
            totals = scanner.totals(area)
            netdev = area.netdev.name if area.netdev else None
            for state in NIOV_STATES:
                family.add_metric(
                    [area.key, area.kind, str(area.id), _label(netdev), state], totals[state]
                )
        return family

    def _own_metrics(self, reading: Reading) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "netmem_probe_up", "1 if the last reading of the target succeeded.", value=reading.ok
        )
        errors = CounterMetricFamily(
            "netmem_probe_scrape_errors",
            "Readings of the target that failed (kind=failed: the scrape has no pool "
            "series) or skipped unreadable or inconsistent objects (kind=partial).",
            labels=["kind"],
        )
        for kind, count in self.errors.items():
            errors.add_metric([kind], count)
        yield errors
        yield CounterMetricFamily(
            "netmem_probe_reads",
            "Readings of the target (at most one per --min-interval, whatever the scrapes).",
            value=self.reads,
        )
        yield GaugeMetricFamily(
            "netmem_probe_read_duration_seconds",
            "How long the last reading of the target took.",
            value=reading.duration,
        )


def _listen_address(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{text!r} is not ADDR:PORT", param_hint="--listen")
    return host.strip("[]") or "0.0.0.0", int(port)


def _write_textfile(path: str, registry: Any) -> None:
    from prometheus_client import generate_latest

    data = generate_latest(registry)
    if path == "-":
        click.echo(data.decode(), nl=False)
        return
    directory = os.path.dirname(os.path.abspath(path))
    staged = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(staged, "wb") as f:
            f.write(data)
        os.replace(staged, path)
    except OSError as e:
        try:
            os.unlink(staged)
        except OSError:
            pass
        raise click.BadParameter(
            f"cannot write {path}: {e.strerror or e}", param_hint="--textfile"
        ) from None


@click.command(epilog=EXAMPLES)
@click.option("--listen", metavar="ADDR:PORT", help="serve /metrics on this address")
@click.option(
    "--textfile",
    metavar="PATH",
    help="write the metrics once to PATH (node_exporter textfile format, atomically; - for stdout)",
)
@click.option(
    "--min-interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="read the target at most once per SECONDS, whatever the scrapes",
)
@click.option(
    "--max-pools",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="per-pool series for at most N pools (detached first), and N provider areas",
)
@click.option(
    "--providers/--no-providers",
    default=True,
    show_default=True,
    help="export the niov states of devmem and zcrx areas",
)
@no_drgn_option(
    "it serves Prometheus metrics, not records; pools --drgn and providers --drgn "
    "print the values it exports as plain drgn"
)
@click.pass_obj
def export(
    target: Target,
    listen: Optional[str],
    textfile: Optional[str],
    min_interval: float,
    max_pools: int,
    providers: bool,
) -> int:
    """Page pools and memory providers as Prometheus metrics.

    --listen ADDR:PORT serves /metrics until stopped, reading the target
    afresh on each scrape (at most once per --min-interval); --textfile PATH
    writes one reading for node_exporter's textfile collector. Per-pool
    series carry the labels id, netdev, ifindex, napi_id, queue, driver,
    state, detached and netns. A reading that fails is counted in
    netmem_probe_scrape_errors_total (kind failed or partial) and the
    server keeps serving.
    """
    from prometheus_client import CollectorRegistry

    if (listen is None) == (textfile is None):
        raise click.UsageError("give one of --listen ADDR:PORT or --textfile PATH")
    registry = CollectorRegistry(auto_describe=False)
    collector = PoolCollector(
        target.prog, min_interval=min_interval, max_pools=max_pools, providers=providers
    )
    registry.register(collector)
    if textfile is not None:
        _write_textfile(textfile, registry)
        if collector.errors["failed"]:
            return EXIT_PARTIAL
        target.problems = collector.last_problems
        return target.finish(findings=False)
    assert listen is not None
    return _serve(registry, *_listen_address(listen))


def _serve(registry: Any, host: str, port: int) -> int:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise click.BadParameter(
            f"cannot listen on {host}:{port}: {e.strerror or e}", param_hint="--listen"
        ) from None
    click.echo(
        f"netmem-probe: serving /metrics on http://{host}:{server.server_port}/metrics",
        err=True,
    )
    try:
        while thread.is_alive():
            thread.join(3600)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0
