"""What ``nginx-canary analyze`` does: offline reports of log files, or a live follow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from nginx_canary.errors import BadInputError, ConfigError, LogFormatError
from nginx_canary.inputs import check_word
from nginx_canary.logs.analyze import AddressBook, Analyzer, feed_blocks, unmarked_forcing
from nginx_canary.logs.format import FormatSpec, compile_format
from nginx_canary.logs.health import UnparsedWatch, describe, find_sample, mostly_unparsed
from nginx_canary.logs.reader import block_batches, block_views
from nginx_canary.logs.sources import format_for_file, log_for_upstream, named_format
from nginx_canary.logs.window import WindowedStats
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.reading import Settings, read_config

ESCAPES = ("default", "json", "none")


@dataclass(frozen=True)
class LogQuery:
    """Which format and which servers: as the user asked on the command line."""

    format_name: Optional[str] = None
    log_format: Optional[str] = None
    escape: str = "default"
    upstream: Optional[str] = None
    canary: Sequence[str] = ()


@dataclass
class Prepared:
    """An analyzer ready to be fed, and what the user should know about how it was set up."""

    analyzer: Analyzer
    spec: FormatSpec
    warnings: List[str] = field(default_factory=list)


def _check(query: LogQuery) -> None:
    if query.format_name is not None and query.log_format is not None:
        raise BadInputError("give --format or --log-format, not both")
    if query.escape not in ESCAPES:
        raise BadInputError(f"--escape must be one of {', '.join(ESCAPES)}")
    if query.format_name is not None:
        check_word("--format", query.format_name)
    if query.upstream is not None:
        check_word("--upstream", query.upstream)
    if query.canary and query.upstream is None:
        raise BadInputError("--canary needs --upstream")


def _config(settings: Settings, query: LogQuery, warnings: List[str]) -> Optional[NginxConfig]:
    try:
        return read_config(settings)
    except ConfigError as exc:
        if query.log_format is None:
            raise
        warnings.append(f"nginx config not read ({exc}); servers are shown without their upstreams")
        return None


def prepare(settings: Settings, query: LogQuery, logfile: Optional[str], *,
            clock: Callable[[], float] = time.time, horizon_seconds: int = 300) -> Prepared:
    """Resolve the format and the address book and build an :class:`Analyzer`.

    Raises:
        BadInputError: conflicting options, unknown format or upstream, a format
            lacking the variables per-upstream analysis needs.
        ConfigError: the nginx config is needed and cannot be read.
    """
    _check(query)
    warnings: List[str] = []
    config = _config(settings, query, warnings)
    if query.log_format is not None:
        spec = FormatSpec("--log-format", query.log_format, query.escape)
    elif query.format_name is not None:
        spec = named_format(config, query.format_name)
    elif config is not None and logfile is not None:
        spec = format_for_file(config, settings.nginx(), logfile)
    else:
        raise BadInputError("name the log format with --format NAME or --log-format STRING")
    if query.upstream is not None and config is not None:
        config.upstream(query.upstream)  # a clear error for an unknown name
    compiled = compile_format(spec)
    book = AddressBook.from_config(config, upstream=query.upstream, canary=query.canary)
    if query.canary and config is not None:
        missing = [a for a in query.canary if a not in {s.address for s in config.upstream(query.upstream).servers}]
        if missing:
            raise BadInputError(f"{missing[0]!r} is not a server of upstream {query.upstream!r}")
    analyzer = Analyzer(compiled, book, WindowedStats(horizon_seconds=horizon_seconds, clock=clock),
                        only_upstream=query.upstream)
    if query.upstream is not None and query.canary and config is not None:
        warnings += unmarked_forcing(config, query.upstream, query.canary, analyzer)
    return Prepared(analyzer, spec, warnings + analyzer.warnings)


def analyze_files(settings: Settings, files: Sequence[str], query: LogQuery) -> Prepared:
    """Read ``files`` whole (plain or .gz) into one analyzer.

    Raises:
        BadInputError: a file cannot be read, or see :func:`prepare`.
        LogFormatError: the lines mostly do not fit the format (see
            :mod:`nginx_canary.logs.health`): the message says how many and shows one.
    """
    if not files:
        raise BadInputError("give at least one LOGFILE (or --follow)")
    prepared = prepare(settings, query, files[0])
    analyzer = prepared.analyzer
    for path in files:
        feed_blocks(analyzer, block_views(path))
    analyzer.flush()
    if mostly_unparsed(analyzer.lines, analyzer.unparsed):
        where = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more file(s)"
        raise LogFormatError(describe(analyzer.unparsed, analyzer.lines, prepared.spec.name, where,
                                      _first_misfit(analyzer, files)))
    return prepared


def _first_misfit(analyzer: Analyzer, files: Sequence[str]) -> Optional[bytes]:
    """A line of ``files`` that does not fit the format, looked for in each file's first block."""
    for path in files:
        for block, _ in block_batches(path):
            sample = find_sample(analyzer.compiled, block.split(b"\n")[:-1])
            if sample is not None:
                return sample
            break
    return None


def follow_log(settings: Settings, logfile: Optional[str], query: LogQuery, *, interval: float,
               emit: Callable[[Dict[str, object]], None], should_stop: Callable[[], bool],
               clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> Prepared:
    """Follow one log from its end; call ``emit`` with a cumulative snapshot every ``interval`` seconds.

    Runs until ``should_stop()`` is true (the CLI stops it on Ctrl-C).

    Raises:
        BadInputError: see :func:`prepare`, or no log to follow.
        LogFormatError: the most recent lines read mostly do not fit the format
            (the rule a rollout applies, :class:`nginx_canary.logs.health.UnparsedWatch`).
    """
    # Here, not at the top: reading whole files (the usual analyze) need not load watchdog.
    from nginx_canary.logs.tail import LogTailer

    if not interval > 0:
        raise BadInputError("--interval must be a positive number of seconds")
    if logfile is None:
        logfile = log_for_upstream(read_config(settings), settings.nginx(), query.upstream)
    prepared = prepare(settings, query, logfile, clock=wall_clock)
    analyzer = prepared.analyzer
    with LogTailer(logfile, from_end=True) as tailer:
        overlong = 0
        watch = UnparsedWatch()
        next_emit = clock() + interval
        while not should_stop():
            tailer.wait(max(0.0, min(0.25, next_emit - clock())))
            seen, unparsed = analyzer.lines, analyzer.unparsed
            lines = tailer.read_lines()
            if tailer.overlong != overlong:
                analyzer.count_unparsed(tailer.overlong - overlong)
                overlong = tailer.overlong
            if lines:
                analyzer.feed(lines, at=wall_clock())
            watch.read(analyzer.lines - seen, analyzer.unparsed - unparsed, analyzer.compiled, lines)
            reason = watch.reason(prepared.spec.name, logfile)
            if reason is not None:
                raise LogFormatError(reason)
            if clock() >= next_emit:
                emit(analyzer.report())
                next_emit += interval
                if next_emit < clock():
                    next_emit = clock() + interval
    return prepared
