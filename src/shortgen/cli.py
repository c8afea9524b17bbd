"""The command line: a thin `main(argv) -> int`. Only this module prints or chooses exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import ExitStatus, PortError, ShortgenError, describe, quiet_libraries, status_of


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (its usage block is what --help is for), exit 2."""

    def error(self, message: str):
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _parser(cmd: str | None = None) -> argparse.ArgumentParser:
    """The command line. `cmd`: the command about to run, if known: only it gets the settings' flags
    (declaring them all on every command took 40 ms of each run's start)."""
    p = _Parser(prog="shortgen", description="Turn episode scripts into vertical short videos.")
    p.add_argument("--version", action="version", version=f"shortgen {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def settings_flags(sp):
        if cmd is None or sp.prog.split()[-1] == cmd:
            _settings_flags(sp)

    r = sub.add_parser("render", help="render episodes (files, series files or directories)")
    r.add_argument("paths", nargs="+", type=Path)
    r.add_argument("-j", "--jobs", type=int, help="a series' parts rendered at once (default: the usable cores)")
    r.add_argument("-q", "--quiet", action="store_true")
    r.add_argument(
        "--scheduler",
        help="render on a Dask cluster: tcp://HOST:8786, or local[:N] to start one here (env SHORTGEN_SCHEDULER; "
        "needs pip install 'shortgen[cluster]')",
    )
    settings_flags(r)

    c = sub.add_parser("check", help="check segment durations against the budget (scripts or rendered output dirs)")
    c.add_argument("paths", nargs="+", type=Path)
    c.add_argument("--format", choices=("table", "json", "junit"), default="table")
    c.add_argument("-o", "--out", type=Path, help="write the report here instead of stdout")
    settings_flags(c)

    pl = sub.add_parser("plan", help="print the timeline of an episode without rendering")
    pl.add_argument("path", type=Path)
    pl.add_argument("--json", action="store_true", help="the full plan as JSON")
    settings_flags(pl)

    im = sub.add_parser("import", help="write an episode script from an article of the series (plain text or Markdown)")
    im.add_argument("article", type=Path)
    im.add_argument("-o", "--out", type=Path, help="the script to write (default: scripts/partN.yaml)")
    im.add_argument("--force", action="store_true", help="replace an existing script")
    im.add_argument("--no-check", dest="check", action="store_false", help="do not speak the script to check its budget")
    settings_flags(im)

    ga = sub.add_parser("gallery", help="write output/index.html: every rendered part, playable in a browser")
    ga.add_argument("out", nargs="?", type=Path, help="the output folder (default: the settings' output_dir)")

    cl = sub.add_parser("clean", help="prune the cache")
    cl.add_argument("--older-than", type=float, metavar="DAYS", help="only entries unused for this many days")
    cl.add_argument("--cache-dir", type=Path)

    sc = sub.add_parser("schema", help="print the JSON Schema of episode (or series) files, for editors")
    sc.add_argument("kind", nargs="?", choices=("episode", "series"), default="episode")

    pv = sub.add_parser("preview", help="a page on 127.0.0.1 that plays the episode and renders it again on every save")
    pv.add_argument("paths", nargs="+", type=Path)
    pv.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    pv.add_argument("--open", action="store_true", help="open the page in the browser")
    settings_flags(pv)

    v = sub.add_parser("voices", help="list the voices the speech engine has")
    v.add_argument("filter", nargs="?", default="")
    return p


def _settings_flags(sp: argparse.ArgumentParser) -> None:
    """A command's flags for the settings, derived from their own declarations (settings.py) and held to
    the same rules as a file."""
    from .settings import flags

    for name, flag, text, rule in flags():
        if rule is not None and rule.kind == "bool":
            sp.add_argument(flag, dest=name, action="store_false", default=None, help=text)
        else:
            kind = {"int": int, "float": float}.get(rule.kind, str) if rule is not None else Path
            sp.add_argument(flag, dest=name, type=kind, help=text)


def _cli_layer(a: argparse.Namespace) -> dict:
    from .script.load import check_cli_layer
    from .settings import flags

    keys = [name for name, _, _, _ in flags()] + ["jobs"]
    return check_cli_layer({k: getattr(a, k) for k in keys if getattr(a, k, None) is not None})


class _Printer:
    """Progress on stderr: one updating line on a terminal, plain stage lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last: tuple | None = None

    def __call__(self, ev: dict) -> None:
        if self.quiet:
            return
        seg = f" {ev['segment']}" if ev.get("segment") else ""
        count = f" ({ev['done']}/{ev['total']})" if ev.get("total") else ""
        eta = f"  ETA {ev['eta']:.0f}s" if ev.get("eta") is not None else ""
        line = f"[{ev['episode']}] {ev['stage']}{seg}{count}{eta}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            if ev["stage"] == "done":
                sys.stderr.write("\n")
        elif (ev["episode"], ev["stage"], ev.get("segment")) != self.last:
            sys.stderr.write(line + "\n")
        self.last = (ev["episode"], ev["stage"], ev.get("segment"))
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_libraries()
    args = _parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    try:
        return int(_dispatch(args))
    except KeyboardInterrupt:
        print(
            "shortgen: interrupted; each output folder holds one complete set of files (the previous one where "
            "its render had not finished); nothing half-written was kept",
            file=sys.stderr,
        )
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (`shortgen ... | head`): the work is done, say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is quiet
        return ExitStatus.OK
    except (ShortgenError, OSError) as e:
        print(f"shortgen: {describe(e)}", file=sys.stderr)
        return status_of(e)


def _dispatch(a: argparse.Namespace) -> ExitStatus:
    from .cache import Cache
    from .settings import Settings

    if a.cmd == "clean":
        cache = Cache(a.cache_dir or Settings().cache_dir)
        n, size = cache.clean(a.older_than)
        print(f"removed {n} files ({size / 1e6:.1f} MB) from {cache.root}")
        return ExitStatus.OK
    if a.cmd == "voices":
        from .speech.narrate import EspeakEngine

        for v in EspeakEngine().voices():
            if a.filter.lower() in v.lower():
                print(v)
        return ExitStatus.OK
    if a.cmd == "schema":
        from .script import schema

        model, title = (schema.EPISODE, "shortgen episode") if a.kind == "episode" else (schema.SERIES, "shortgen series")
        print(json.dumps(schema.json_schema(model, title), indent=2))
        return ExitStatus.OK
    if a.cmd == "plan":
        return _plan(a)
    if a.cmd == "import":
        return _import(a)
    if a.cmd == "gallery":
        page = _gallery(a.out or Settings().output_dir)
        print(f"wrote {page}")
        return ExitStatus.OK
    if a.cmd == "check":
        return _check(a)
    if a.cmd == "preview":
        return _preview(a)
    return _render(a)


def _engine_cache(layer: dict):
    from .cache import Cache
    from .settings import Settings
    from .speech.narrate import EspeakEngine

    return EspeakEngine(), Cache(layer.get("cache_dir") or Settings().cache_dir)


def _plan(a) -> ExitStatus:
    from .script.load import load_episode
    from .timeline import speak_and_plan

    layer = _cli_layer(a)
    ep = load_episode(a.path, layer)
    engine, cache = _engine_cache(layer)
    m = speak_and_plan(ep, engine, cache)
    if a.json:
        print(json.dumps(m.plan.to_dict(), indent=2))
    else:
        fps = m.plan.fps
        for seg in m.plan.segments:
            print(f"{seg.start:6d}-{seg.end:6d}  {seg.frames / fps:6.2f} s  {seg.kind:7s} {seg.name}  ({len(seg.cues)} cues)")
        print(f"total {m.plan.total_frames} frames, {m.plan.total_frames / fps:.2f} s at {fps} fps")
    return ExitStatus.OK


def _import(a) -> ExitStatus:
    from . import check
    from .script import article
    from .script.load import load_episode
    from .timeline import speak_and_plan

    t0 = time.monotonic()
    layer = _cli_layer(a)
    art = article.read(a.article)
    out = a.out or Path("scripts") / f"part{art.part}.yaml"
    text, warnings = article.script(art, out)
    for w in warnings:
        print(f"shortgen: warning: {w}", file=sys.stderr)
    article.write(out, text, a.force)
    print(
        f"wrote {out}: part {art.part}, {text.count('  - name:')} segments, {len(warnings)} warnings"
        f" ({time.monotonic() - t0:.2f} s)"
    )
    if not a.check:
        return ExitStatus.OK
    ep = load_episode(out, layer)
    engine, cache = _engine_cache(layer)
    m = speak_and_plan(ep, engine, cache)
    problems = check.problems(m) + check.fit_problems(m)
    print(check.format_table(check.rows(m)))
    for msg in problems:
        print(f"shortgen: {msg}", file=sys.stderr)
    print(f"checked in {time.monotonic() - t0:.1f} s")
    if check.problems(m):
        return ExitStatus.OVER_BUDGET
    return ExitStatus.BAD_INPUT if problems else ExitStatus.OK


def _check(a) -> ExitStatus:
    from . import check
    from .rendered import check_rendered
    from .script.load import expand_targets, load_episode
    from .timeline import speak_and_plan
    from .video.encode import FfmpegEncoder

    layer = _cli_layer(a)
    engine, cache = _engine_cache(layer)
    rows, messages = [], []
    status = ExitStatus.OK

    scripts, rendered = _scripts_and_rendered(a.paths)
    try:
        targets = expand_targets(scripts, rendering=False) if scripts or not rendered else []
    except ShortgenError as e:
        targets, status = [], status_of(e)
        rows.append(check.error_row("-", str(e)))
        messages.append(str(e))
    for path in targets:
        try:
            m = speak_and_plan(load_episode(path, layer), engine, cache)
            rows += check.rows(m)
            messages += check.problems(m)
            for msg in check.fit_problems(m):  # what render would refuse, check refuses too
                rows.append(check.error_row(path, msg, "(text fit)"))
                messages.append(msg)
                status = ExitStatus.BAD_INPUT if status == ExitStatus.OK else status
        except ShortgenError as e:
            rows.append(check.error_row(path, str(e)))
            messages.append(str(e))
            status = max(status, status_of(e)) if status != ExitStatus.OVER_BUDGET else status
    for d in rendered:
        try:
            r, msgs = check_rendered(d, FfmpegEncoder(), engine, cache, layer)
            rows += r
            messages += msgs
        except ShortgenError as e:
            rows.append(check.error_row(d, str(e), "(rendered file)", "BAD"))
            messages.append(str(e))
            status = status_of(e)
    if any(not r.ok and r.failure == "BAD" for r in rows):
        status = max(status, ExitStatus.BAD_RENDER) if status != ExitStatus.OVER_BUDGET else status
    if any(not r.ok for r in rows) and status == ExitStatus.OK:
        status = ExitStatus.OVER_BUDGET
    _report(a, rows, messages)
    return status


def _scripts_and_rendered(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """`check`'s arguments sorted: scripts (files, series, folders of scripts) and rendered output folders
    (one part's, or an output folder of parts, not a render's hidden staging folder)."""

    def is_rendered(p: Path) -> bool:
        return p.is_dir() and (p / "manifest.json").exists()

    scripts, rendered = [], []
    for p in paths:
        if is_rendered(p):
            rendered.append(p)
        elif p.is_dir() and not any(p.glob("*.y*ml")) and any(is_rendered(d) for d in p.iterdir()):
            rendered += sorted(d for d in p.iterdir() if is_rendered(d) and not d.name.startswith("."))
        else:
            scripts.append(p)
    return scripts, rendered


def _report(a, rows: list, messages: list[str]) -> None:
    """`check`'s report, in its format, to stdout or `--out`; each problem on stderr too."""
    from . import check

    report = {
        "table": lambda: check.format_table(rows) + ("\n\n" + "\n".join(messages) if messages else ""),
        "json": lambda: check.format_json(rows, messages),
        "junit": lambda: check.format_junit(rows, messages),
    }[a.format]()
    if a.out:
        from .publish.outputs import write_text

        write_text(a.out, report + "\n")
        print(f"wrote {a.out}", file=sys.stderr)
    else:
        print(report)
    for msg in messages:
        print(f"shortgen: {msg}", file=sys.stderr)


def _preview(a) -> ExitStatus:
    """Serve the preview until Ctrl-C: the address printed, the renders' progress and errors on the page."""
    import time

    from .preview import Preview, close, exit_now, serve
    from .script.load import expand_targets
    from .settings import keep_freed_memory
    from .video.encode import FfmpegEncoder

    keep_freed_memory()
    layer = _cli_layer(a)
    targets = expand_targets(a.paths)
    engine, _ = _engine_cache(layer)
    preview = Preview(targets, layer, engine, FfmpegEncoder())
    try:
        httpd, url = serve(preview, a.port)
    except OSError as e:
        raise PortError(f"--port {a.port}: cannot listen on 127.0.0.1 ({e.strerror or e})") from None
    try:
        _stop_on_interrupt()  # before the address: a caller may stop it as soon as it reads it
        print(f"shortgen preview: {url} (Ctrl-C stops it)", flush=True)
        if a.open:
            import webbrowser

            webbrowser.open(url)
        while True:  # in short sleeps: a signal the kernel hands to another thread wakes no long sleep here,
            time.sleep(0.25)  # and its handler runs only when this thread next runs (one stop in five hung)
    except KeyboardInterrupt:  # how a preview is stopped: no error, and now, even mid-render
        if not close(preview, httpd):
            exit_now(ExitStatus.OK)
        return ExitStatus.OK
    except BaseException:
        close(preview, httpd)
        raise


def _stop_on_interrupt() -> None:
    """Ctrl-C (SIGINT) and SIGTERM both stop a preview cleanly. A process started in the background by a
    shell inherits SIGINT ignored, and Python then leaves it so: the preview would not have stopped."""
    import signal

    def stop(signum, frame):  # noqa: ARG001 (the signal's frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


def _render(a) -> ExitStatus:
    import gc

    from .settings import keep_freed_memory
    from .speech import espeak_worker

    keep_freed_memory()
    # a render allocates many objects that live until its end: collected every 50,000 allocations
    # instead of every 700 (a one-word edit: 100 collections, 28 ms, down to one of 15 ms)
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        return _render_targets(a)
    finally:
        gc.set_threshold(*thresholds)
        espeak_worker.stop_standby()


def _render_targets(a) -> ExitStatus:
    scheduler = a.scheduler or os.environ.get("SHORTGEN_SCHEDULER")
    if not scheduler and len(a.paths) == 1 and a.paths[0].is_file():  # one part, as a rule (a series' parts
        # speak in worker processes of their own: a series file's standby is let go unused)
        from .speech.espeak_worker import start_standby

        start_standby()  # the speech worker starts while the rest of this process imports and loads
    from .script.load import expand_targets

    layer = _cli_layer(a)
    targets = expand_targets(a.paths)
    printer = _Printer(a.quiet)
    if scheduler:  # Dask is imported only here
        from .series import cluster

        spec = cluster.Scheduler.parse(scheduler)
        t0 = time.monotonic()
        outcomes = cluster.render_many(targets, layer, spec, sink=printer)
        return _finish(outcomes, time.monotonic() - t0, layer)
    if len(targets) == 1:
        from .script.load import load_episode
        from .timeline import speak_ahead

        ep = load_episode(targets[0], layer, audio=False)  # render_episode checks its audio files
        engine, cache = _engine_cache(layer)
        ahead = speak_ahead(ep, engine, cache)  # the speech is asked for before the renderer is imported

        from .render import render_episode
        from .video.encode import FfmpegEncoder

        res = render_episode(ep, engine, FfmpegEncoder(), cache, sink=printer, ahead=ahead)
        _print_result(res)
        return ExitStatus.OK
    from .series.batch import render_many

    t0 = time.monotonic()
    outcomes = render_many(targets, layer, jobs=a.jobs, sink=printer)
    return _finish(outcomes, time.monotonic() - t0, layer)


def _finish(outcomes, wall: float, layer: dict) -> ExitStatus:
    """A series' summary table, its gallery, and the exit status: the worst failure's."""
    print(_summary(outcomes, wall))
    for out in sorted({Path(o.out_dir).parent for o in outcomes if o.out_dir}):
        print(f"gallery: {_gallery(out, layer)}")
    bad = [o for o in outcomes if not o.ok]
    for o in bad:
        print(f"shortgen: {o.error}", file=sys.stderr)
    return ExitStatus(max(o.exit_code for o in bad)) if bad else ExitStatus.OK


def _gallery(out: Path, layer: dict | None = None) -> Path:
    """The series' page: each part's status is `shortgen check`'s on its folder."""
    from .publish import gallery
    from .rendered import check_rendered
    from .video.encode import FfmpegEncoder

    engine, cache = _engine_cache(layer or {})

    def status(d: Path) -> tuple[bool, str]:
        kept = _status_memory(d, cache.root)
        if kept is not None and kept.is_file():
            ok, text = json.loads(kept.read_text())
            return bool(ok), str(text)
        try:
            rows, msgs = check_rendered(d, FfmpegEncoder(), engine, cache, layer)
        except ShortgenError as e:
            return False, str(e)
        bad = [r for r in rows if not r.ok]
        if bad or msgs:
            return False, "; ".join(msgs) or f"{len(bad)} segments failed"
        longest = max((r.seconds for r in rows if r.segment), default=0.0)
        verdict = (True, f"file probed, every segment within budget (longest {longest:.2f} s)")
        if kept is not None:
            from .cache import keep

            keep(kept, verdict)
        return verdict

    return gallery.write(out, status)


def _status_memory(d: Path, cache_root: Path) -> Path | None:
    """Where a part's good status is kept: by its folder's files and its script, each by stat (any write or
    replacement changes its ctime and inode), so a series no-op probes no MP4 again."""
    from .cache import memory_path

    try:
        script = Path(json.loads((d / "manifest.json").read_text())["inputs"]["script"])
        facts = []
        for p in sorted([*d.iterdir(), script]):
            st = p.stat()
            facts.append((str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return memory_path(cache_root / "checks", "status", facts)


def _print_result(res) -> None:
    fps = res.plan.fps
    state = "rendered" if res.rendered else "up to date (cached)"
    print(f"{res.episode.path}: {state} in {res.seconds:.1f} s")
    for name, path in res.files.items():
        print(f"  {name:10s} {path}")
    for seg in res.plan.segments:
        label = f"{seg.number}. {seg.name}" if seg.number else seg.kind
        print(f"  {seg.frames / fps:6.2f} s  {label}")
    for f in res.fits:
        print(f"  note: segment {f.segment + 1} speaks at {f.to_rate} wpm (fitted from {f.from_rate}) to stay in budget")
    print(
        f"  total {res.plan.total_frames / fps:.2f} s; loudness {res.loudness[0]:.1f} LUFS, true peak {res.loudness[1]:.1f} dBTP"
    )


def _summary(outcomes, wall: float) -> str:
    head = ("part", "status", "duration", "render time", "work")
    body = [
        (
            o.name,
            "ok" if o.ok else "FAILED",
            f"{o.duration:.2f} s" if o.ok else "-",
            f"{o.seconds:.1f} s",
            ("rendered" if o.rendered else "cached") if o.ok else o.error.split(": ")[-1][:60],
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body]]
    return "\n".join(lines + [f"{sum(o.ok for o in outcomes)}/{len(outcomes)} parts ok in {wall:.1f} s"])


def run() -> None:
    sys.exit(main())
