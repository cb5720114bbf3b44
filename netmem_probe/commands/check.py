"""
``netmem-probe check``: the command to run first.  One pass over the target:
the layout agreements, every pool's state, the detached pools and their age,
the leak verdicts of their pages, the kernel log's page-pool messages and, on
a live kernel, which pools' in-flight counts grow over a short interval.
Each finding has a severity and the command to run next.
"""

import shlex
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import click
import drgn

from netmem_probe.context import Target
from netmem_probe.kernel.layout import check_layout
from netmem_probe.kernel.leaks import LeakReport, find_leaks
from netmem_probe.kernel.page_pool import PagePoolInfo, PagePoolScanner
from netmem_probe.kernel.printk import KernelLog, LogMessage, page_pool_messages
from netmem_probe.report import emit_json, human_seconds
from netmem_probe.snippets import no_drgn_option

__all__ = ("SEVERITIES", "Finding", "check", "check_report", "message_record")

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed check
      what is wrong with a bundled fixture, and what to run next
  sudo netmem-probe check --interval 5
      the running kernel, with 5 s of in-flight growth measured
  netmem-probe -c vmcore check --json
      a crash dump without debug info (BTF), as one JSON object
  netmem-probe -c vmcore check --no-leaks
      skip the memory search of the leak verdicts (fast on a big host)
"""

#: Severities, worst first; "error" and "warning" make the exit code 1.
SEVERITIES = ("error", "warning", "info")
STATES = ("listed", "orphaned", "invisible", "unreachable", "unregistered")


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str
    next: Optional[str]
    pool_id: Optional[int] = None

    def record(self) -> Dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "pool-id": self.pool_id,
            "message": self.message,
            "next": self.next,
        }


def _command(target: Target, *args: str) -> str:
    """The command line that runs ``args`` on the same target."""
    words = ["netmem-probe"]
    if target.fixture is not None:
        words += ["-f", target.fixture]
    if target.core is not None:
        words += ["-c", target.core]
    for symbols in target.symbols:
        words += ["-s", symbols]
    if target.btf is not None:
        words += ["--btf", target.btf]
    return shlex.join([*words, *args])


def _pool_words(info: PagePoolInfo) -> str:
    where = info.netdev.name if info.netdev is not None else "no netdev"
    detached = ""
    if info.detached:
        age = f" {human_seconds(info.detach_age)} ago" if info.detach_age is not None else ""
        detached = f", detached{age}"
    return f"pool {_pool_name(info.id, info.address)} ({info.state}, {where}{detached})"


def _pool_name(pool_id: Optional[int], address: int) -> str:
    """A pool's id, or its address on kernels before the 6.8 registry (no ids)."""
    return str(pool_id) if pool_id is not None else hex(address)


def _growth(target: Target, interval: float) -> Optional[List[Dict[str, Any]]]:
    """
    In-flight counts sampled three times over ``interval`` seconds: the pools
    whose count rose in both halves (the ``pools --watch`` GROWING rule).
    None on a target that does not change.
    """
    prog = target.prog
    if not prog.flags & drgn.ProgramFlags.IS_LIVE or interval <= 0:
        return None
    samples: List[Dict[Any, PagePoolInfo]] = []
    for i in range(3):
        if i:
            time.sleep(interval / 2)
        scanner = PagePoolScanner(prog, target.problems)
        samples.append({(p.address, p.id): p for p in scanner.pools()})
    growing = []
    for key, last in samples[2].items():
        first, middle = samples[0].get(key), samples[1].get(key)
        if first is None or middle is None:
            continue
        if first.inflight < middle.inflight < last.inflight:
            growing.append(
                {
                    "id": last.id,
                    "address": hex(last.address),
                    "inflight": last.inflight,
                    "inflight-delta": last.inflight - first.inflight,
                    "interval": interval,
                }
            )
    return growing


def check_report(target: Target, *, leaks: bool = True, interval: float = 2.0) -> Dict[str, Any]:
    """Everything ``check`` finds, as its JSON record (``findings`` included)."""
    prog = target.prog
    live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
    findings: List[Finding] = []
    release = prog["UTS_RELEASE"].string_().decode(errors="replace")

    layout = check_layout(prog)
    bad = [r for r in layout if not r.ok]
    for r in bad:
        findings.append(
            Finding(
                "error",
                "layout-mismatch",
                f"layout assert {r.agreement.macro} fails: {r.reason}; page pool memory may be "
                "read wrong",
                _command(target, "layout"),
            )
        )

    pools = list(PagePoolScanner(prog, target.problems).pools())
    by_id = {p.id: p for p in pools if p.id is not None}
    detached = [p for p in pools if p.detached]
    waiting = [p for p in detached if p.inflight]

    log = page_pool_messages(prog)
    leak_report: Optional[LeakReport] = find_leaks(prog, target.problems) if leaks else None
    verdicts: Dict[int, Dict[str, int]] = {}  # by pool address
    if leak_report is not None:
        for pl in leak_report.pools:
            verdicts[pl.info.address] = {
                "parked": pl.count("parked"),
                "cached": pl.count("cached"),
                "leaked": pl.count("leaked"),
                "missing": pl.missing,
            }

    for p in sorted(waiting, key=lambda p: -(p.detach_age or 0)):
        v = verdicts.get(p.address)
        logged = _logged(log, p.id) if p.id is not None else ""
        if v is None:
            findings.append(
                Finding(
                    "warning",
                    "detached-pool-inflight",
                    f"{_pool_words(p)} still waits for {p.inflight} pages{logged}",
                    _command(target, "leaks", "--pool", p.label),
                    p.id,
                )
            )
            continue
        lost = v["leaked"] + v["missing"]
        parts = [f"{v[k]} {k}" for k in ("leaked", "missing", "parked", "cached") if v[k]]
        text = f"{_pool_words(p)} still waits for {p.inflight} pages: {', '.join(parts)}{logged}"
        if lost:
            findings.append(
                Finding(
                    "error",
                    "leaked-pages",
                    text,
                    _command(target, "leaks", "--pool", p.label),
                    p.id,
                )
            )
        else:
            findings.append(
                Finding(
                    "warning",
                    "detached-pool-inflight",
                    text + (" (sockets or user space hold them)" if v["parked"] else ""),
                    _command(target, "leaks", "--pool", p.label),
                    p.id,
                )
            )

    for pool_id in sorted({m.pool_id for m in log.messages if m.pool_id is not None}):
        if pool_id not in by_id:
            msgs = log.of_pool(pool_id)
            findings.append(
                Finding(
                    "info",
                    "log-names-gone-pool",
                    f"the kernel log names pool {pool_id} ({len(msgs)} message(s), last: "
                    f"{msgs[-1].text.strip()!r}), which no longer exists: its pages came back",
                    None,
                    pool_id,
                )
            )
    unlinked = [m for m in log.messages if m.pool_id is None]
    if unlinked:
        kinds = sorted({m.kind for m in unlinked})
        findings.append(
            Finding(
                "warning" if any(m.kind != "stalled-shutdown" for m in unlinked) else "info",
                "kernel-log",
                f"{len(unlinked)} page-pool message(s) in the kernel log name no pool "
                f"({', '.join(kinds)}); last: {unlinked[-1].text.strip()!r}",
                "dmesg | grep -iE 'page_pool|devmem|zcrx|net_iov'" if live else None,
            )
        )

    growth = _growth(target, interval)
    for g in growth or ():
        name = _pool_name(g["id"], int(g["address"], 16))
        findings.append(
            Finding(
                "info",
                "growing-pool",
                f"pool {name}: in flight rose in every sample, by {g['inflight-delta']} "
                f"pages in {g['interval']:g}s",
                _command(target, "pools", "--watch"),
                g["id"],
            )
        )
    if target.problems:
        findings.append(
            Finding(
                "warning",
                "unreadable-objects",
                f"{len(target.problems)} object(s) could not be read (listed on stderr); "
                "what they hold is not in this report",
                None,
            )
        )

    findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    oldest = max(detached, key=lambda p: p.detach_age or -1, default=None)
    return {
        "release": release,
        "target": target.describe(),
        "layout": {"asserts": len(layout), "mismatches": len(bad)},
        "pools": {
            "total": len(pools),
            **{s: sum(1 for p in pools if p.state == s) for s in STATES},
            "inflight": sum(p.inflight for p in pools),
            "inflight-mem": sum(p.inflight_mem for p in pools),
        },
        "detached": {
            "pools": len(detached),
            "waiting": len(waiting),
            "inflight": sum(p.inflight for p in waiting),
            "oldest-id": oldest.id if oldest is not None else None,
            "oldest-detach-age": oldest.detach_age if oldest is not None else None,
        },
        "leaks": None
        if leak_report is None
        else {
            "pools": len(leak_report.pools),
            **{
                k: sum(v[k] for v in verdicts.values())
                for k in ("parked", "cached", "leaked", "missing")
            },
        },
        "kernel-log": _log_record(log, by_id),
        "growth": growth,
        "findings": [f.record() for f in findings],
        "verdict": "unhealthy" if _wrong(findings) else "healthy",
    }


def _logged(log: KernelLog, pool_id: int) -> str:
    """What the kernel log said about a pool, for its finding."""
    messages = log.of_pool(pool_id)
    if not messages:
        return ""
    last = messages[-1]
    return (
        f"; the kernel log has {len(messages)} message(s) about it, the last at "
        f"{last.timestamp / 1e9:.1f}s: {last.text.strip()!r}"
    )


def message_record(m: LogMessage) -> Dict[str, Any]:
    """A page-pool message of the kernel log as JSON."""
    return {
        "seq": m.seq,
        "timestamp": m.timestamp,
        "level": m.level,
        "kind": m.kind,
        "pool-id": m.pool_id,
        "text": m.text,
    }


def _wrong(findings: List[Finding]) -> bool:
    return any(f.severity in ("error", "warning") for f in findings)


def _log_record(log: KernelLog, by_id: Dict[int, PagePoolInfo]) -> Dict[str, Any]:
    return {
        "error": log.error,
        "records": log.records if log.error is None else None,
        "messages": None if log.error is not None else len(log.messages),
        "linked": None
        if log.error is not None
        else sum(1 for m in log.messages if m.pool_id is not None and m.pool_id in by_id),
        "page-pool-messages": None
        if log.error is not None
        else [message_record(m) for m in log.messages],
    }


@click.command(epilog=EXAMPLES)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--leaks/--no-leaks",
    default=True,
    show_default=True,
    help="give the leak verdicts of detached pools' pages (searches kernel memory)",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="live kernel: measure in-flight growth over this long (0: not at all)",
)
@no_drgn_option(
    "its findings combine the records of layout, pools, leaks and the kernel log; "
    "layout --drgn, pools --drgn and leaks --drgn print those as plain drgn"
)
@click.pass_obj
def check(target: Target, as_json: bool, leaks: bool, interval: float) -> int:
    """The command to run first: is anything wrong with the page pools?

    Checks the layout asserts, every pool's state, the detached pools and
    their age, the leak verdicts of their pages, the kernel log's page-pool
    messages and, on a live kernel, which pools grow over --interval. Each
    finding has a severity (error, warning, info) and the command to run
    next. Exit code 1 when there is an error or a warning, 0 when healthy.
    """
    report = check_report(target, leaks=leaks, interval=interval)
    if as_json:
        emit_json(report)
    else:
        _print(report)
    return target.finish(findings=report["verdict"] != "healthy")


def _print(r: Dict[str, Any]) -> None:
    pools = r["pools"]
    detached = r["detached"]
    states = ", ".join(f"{pools[s]} {s}" for s in STATES if pools[s])
    lines = [
        ("kernel", f"{r['release']} [{r['target']}]"),
        (
            "layout",
            f"{r['layout']['asserts']} asserts, {r['layout']['mismatches']} mismatches"
            if r["layout"]["asserts"]
            else "no netmem layout asserts apply",
        ),
        ("pools", f"{pools['total']} ({states or 'none'}), {pools['inflight']} pages in flight"),
    ]
    if detached["pools"]:
        # Before Linux 6.8 a pool records neither an id nor when it was detached.
        oldest = (
            f"; oldest: pool {detached['oldest-id']}, "
            f"{human_seconds(detached['oldest-detach-age'])} ago"
            if detached["oldest-id"] is not None
            else ""
        )
        lines.append(
            (
                "detached",
                f"{detached['pools']} pools, {detached['waiting']} waiting for "
                f"{detached['inflight']} pages{oldest}",
            )
        )
    else:
        lines.append(("detached", "none"))
    leaks = r["leaks"]
    if leaks is None:
        lines.append(("leaks", "not searched (--no-leaks)"))
    else:
        lines.append(
            (
                "leaks",
                f"{leaks['leaked']} leaked, {leaks['missing']} missing, {leaks['parked']} parked, "
                f"{leaks['cached']} cached (in {leaks['pools']} detached pools)",
            )
        )
    log = r["kernel-log"]
    if log["error"]:
        lines.append(("kernel log", log["error"]))
    else:
        lines.append(
            (
                "kernel log",
                f"{log['messages']} page-pool messages in {log['records']} records, "
                f"{log['linked']} naming a pool it has",
            )
        )
    growth = r["growth"]
    lines.append(
        (
            "growth",
            "not measured (a core dump does not change)"
            if growth is None
            else f"{len(growth)} pools grew in every sample",
        )
    )
    for name, text in lines:
        click.echo(f"{name:<11} {text}")
    click.echo()
    if not r["findings"]:
        click.echo("healthy: nothing to report")
        return
    click.echo(f"{r['verdict']}: {len(r['findings'])} finding(s)")  # info ones alone: healthy
    for f in r["findings"]:
        click.echo(f"  {f['severity'].upper():<8} {f['message']}")
        if f["next"]:
            click.echo(f"  {'':<8} next: {f['next']}")
