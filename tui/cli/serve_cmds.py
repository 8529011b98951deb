"""``modeldeck serve``, ``ps``, ``load``, ``unload``.

``serve`` runs the API server in the foreground (Ctrl-C stops it gracefully). ``ps``, ``load``
and ``unload`` talk to the server ``serve.json`` names when it is alive, else act in this
process: ``ps`` then shows nothing loaded, ``load`` checks the fit and really loads the model
(reporting what it took) and unloads it as the command exits, ``unload`` says nothing is
loaded. The API key is never an argument: ``--api-key-env VAR`` names the variable holding it,
``--api-key-file F`` a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from tui.cli.runtime_cmds import _gpu_layers, _positive_int
from tui.errors import InvalidInputError
from tui.terminal_text import clean_line


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0 to 65535 (0: any free port)")
    return value


def register(subparsers: Any) -> None:
    """Add ``serve``, ``ps``, ``load`` and ``unload``."""
    serve = subparsers.add_parser(
        "serve", help="serve an OpenAI-compatible API and the management API",
        description="Serve the installed models over an OpenAI-compatible API (/v1) and the "
        "management API (/api, docs at /docs) until Ctrl-C. Binds 127.0.0.1 unless --host "
        "says otherwise; another address needs an API key (from --api-key-env or "
        "--api-key-file, never the command line).")
    serve.add_argument("--host", help="address to bind (default: serve_host, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: serve_port, 8765)")
    serve.add_argument("--api-key-env", metavar="VAR",
                       help="environment variable holding the API key (default: "
                       "serve_api_key_env, MODELDECK_SERVE_API_KEY)")
    serve.add_argument("--api-key-file", metavar="F", help="file holding the API key")
    serve.set_defaults(func=cmd_serve)

    ps = subparsers.add_parser("ps", help="models loaded by the running server",
                               description="What the running modeldeck serve has loaded: "
                               "memory, slots, requests, keep-alive left.")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    ps.set_defaults(func=cmd_ps)

    load = subparsers.add_parser(
        "load", help="load a model in the running server (or check it loads)",
        description="Load a model in the running modeldeck serve. Without a server, load it "
        "here to show it fits and loads, then unload it as the command exits.")
    load.add_argument("model_id", help="model id (see 'modeldeck ls')")
    load.add_argument("--ctx", type=_positive_int, help="context length per answer")
    load.add_argument("--gpu-layers", type=_gpu_layers, help="auto, all or N")
    load.add_argument("--parallel", type=_positive_int,
                      help="GGUF: answers decoded together (default: parallel_requests)")
    load.add_argument("--threads", type=_positive_int, help="llama.cpp CPU threads")
    load.add_argument("--keep-alive", metavar="D",
                      help="how long it stays loaded idle: 300, 5m, 1h, -1 = until unloaded")
    load.add_argument("--force", action="store_true", help="load even if it won't fit")
    load.add_argument("--json", action="store_true", help="machine-readable output")
    load.set_defaults(func=cmd_load)

    unload = subparsers.add_parser("unload", help="unload a model from the running server",
                                   description="Unload a model from the running modeldeck "
                                   "serve. A model answering requests is refused unless "
                                   "--force (then each answer ends saying why).")
    unload.add_argument("model_id", help="model id")
    unload.add_argument("--force", action="store_true", help="stop its answers")
    unload.set_defaults(func=cmd_unload)


# -- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, ctx: Any) -> int:
    """Handler of ``modeldeck serve``."""
    from tui.serve.auth import check_bind, is_loopback, load_api_key
    from tui.serve.client import find_server
    from tui.serve.state import read_state

    settings = ctx.settings
    host = args.host if args.host is not None else settings.serve_host
    port = args.port if args.port is not None else settings.serve_port
    env_name = args.api_key_env or settings.serve_api_key_env
    key_file = args.api_key_file or settings.serve_api_key_file
    key = load_api_key(env_name=env_name, key_file=key_file,
                       explicit_env=args.api_key_env is not None)
    check_bind(host, key, env_name)
    try:
        running = find_server(settings)
        info = running.info if running is not None else None
    except InvalidInputError:  # alive, and wants a key this process lacks
        info = read_state(settings.state_dir)
    if info is not None:
        raise InvalidInputError(
            f"modeldeck serve already runs for this state dir at {info.url} (pid {info.pid})",
            hint="stop it first, or use another --state-dir")
    return asyncio.run(_serve(ctx, host, port, key, env_name, is_loopback(host)))


async def _serve(ctx: Any, host: str, port: int, key: str | None, env_name: str,
                 loopback: bool) -> int:
    from tui.serve.server import start_server

    services = ctx.services
    handler = _log_handler(key)
    try:
        handle = await start_server(services, host=host, port=port, api_key=key)
    except BaseException:
        _drop_handler(handler)
        raise
    url, bound = handle.url, handle.port
    print(clean_line(f"ModelDeck is serving on {url} — OpenAI API: {url}/v1, docs: {url}/docs"))
    if loopback:
        print(f"from your computer: ssh -N -L {bound}:127.0.0.1:{bound} user@pod, "
              f"then use http://127.0.0.1:{bound}/v1")
    else:
        print(clean_line(f"listening on {host}: clients must send the API key "
                         "(Authorization: Bearer …)"))
    print(f"API key: {'required (from ' + env_name + ' or the key file)' if key else 'none'}"
          "; Ctrl-C stops")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopper, handle.task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        print("stopping…", file=sys.stderr)
        await handle.stop()
        if "downloads" in services.__dict__:
            await services.downloads.stop()
        await services.runtime.aclose()
        _drop_handler(handler)
    return 0


class _OneLine(logging.Formatter):
    """``modeldeck serve: warning: …`` on one line, no traceback, the key replaced."""

    def __init__(self, key: str | None) -> None:
        super().__init__()
        self.key = key

    def format(self, record: logging.LogRecord) -> str:
        from tui.download.errors import redact

        text = redact(record.getMessage())
        if self.key:
            text = text.replace(self.key, "***")
        return f"modeldeck serve: {record.levelname.lower()}: {clean_line(text, 300)}"


_LOGGERS = ("tui", "uvicorn")


def _log_handler(key: str | None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine(key))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    return handler


def _drop_handler(handler: logging.Handler) -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.removeHandler(handler)
        logger.propagate = True


# -- ps, load, unload -------------------------------------------------------------------------


def _server(ctx: Any) -> Any:
    from tui.serve.client import find_server

    return find_server(ctx.settings)


def _model_id(text: str) -> str:
    from tui.serve.validate import check_model_id

    return check_model_id(text, "the model id")


def cmd_ps(args: argparse.Namespace, ctx: Any) -> int:
    """Handler of ``modeldeck ps``."""
    server = _server(ctx)
    models = server.ps() if server is not None else []
    if args.json:
        ctx.print_json({"server": server.url if server else None, "models": models})
        return 0
    if server is None:
        print("no modeldeck serve is running: nothing is loaded (start one with: "
              "modeldeck serve)")
        return 0
    if not models:
        print(clean_line(f"nothing loaded ({server.url})"))
        return 0
    from tui import formatting as fmt

    rows = [("ID", "MEMORY", "CONTEXT", "SLOTS", "RUNNING", "QUEUED", "UNLOADS", "WHERE")]
    for m in models:
        rows.append((
            clean_line(m.get("id"), 40), fmt.size(_int(m.get("memory_bytes"))),
            str(_int(m.get("context_length"))), str(_int(m.get("slots"))),
            str(_int(m.get("running"))), str(_int(m.get("queued"))), _until(m),
            clean_line(m.get("fit") or "", 40),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _until(m: dict[str, Any]) -> str:
    """When keep-alive unloads it: ``in 4 min``, ``never``, ``when idle``."""
    left = m.get("unload_in_s")
    if isinstance(left, int | float) and not isinstance(left, bool):
        return f"in {left / 60:.0f} min" if left >= 90 else f"in {left:.0f} s"
    if m.get("keep_alive_s") is None:
        return "never"
    return "when idle"


def cmd_load(args: argparse.Namespace, ctx: Any) -> int:
    """Handler of ``modeldeck load``."""
    from tui.serve.validate import parse_keep_alive

    model_id = _model_id(args.model_id)
    keep_alive = parse_keep_alive(args.keep_alive) if args.keep_alive is not None else None
    server = _server(ctx)
    if server is not None:
        body: dict[str, Any] = {}
        if args.ctx is not None:
            body["context_length"] = args.ctx
        if args.gpu_layers is not None:
            body["gpu_layers"] = args.gpu_layers
        if args.parallel is not None:
            body["parallel"] = args.parallel
        if args.threads is not None:
            body["threads"] = args.threads
        if args.force:
            body["force"] = True
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        info = server.load(model_id, body)
        if args.json:
            ctx.print_json(info)
        else:
            print(clean_line(_loaded_line(info) + f" (server {server.url})"))
        return 0
    return asyncio.run(_load_here(ctx, args, model_id))


async def _load_here(ctx: Any, args: argparse.Namespace, model_id: str) -> int:
    from tui.runtime.types import LoadOptions
    from tui.serve.manage_api import loaded_dict

    runtime = ctx.services.runtime
    try:
        ctx.services.inventory.require_model(model_id)
        options = LoadOptions(context_length=args.ctx, gpu_layers="auto" if args.gpu_layers is None
                              else args.gpu_layers,
                              parallel=args.parallel, threads=args.threads, force=args.force)
        info = await runtime.load(model_id, options)
        data = loaded_dict(info)
        if args.json:
            ctx.print_json({**data, "server": None})
        else:
            print(clean_line(_loaded_line(data, until=False)))
            print("no modeldeck serve is running, so it is unloaded as this command exits "
                  "(start one with: modeldeck serve)")
        return 0
    finally:
        await runtime.aclose()


def _loaded_line(info: dict[str, Any], until: bool = True) -> str:
    from tui import formatting as fmt

    seconds = info.get("load_seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    fit = f" ({info['fit']})" if info.get("fit") else ""
    slots = _int(info.get("slots"))
    return (f"loaded {info.get('id')}{fit}{took}: context {_int(info.get('context_length'))}"
            f" × {slots} slot{'s' if slots != 1 else ''}, about "
            f"{fmt.size(_int(info.get('memory_bytes')))}"
            + (f"; unloads {_until(info)}" if until else ""))


def cmd_unload(args: argparse.Namespace, ctx: Any) -> int:
    """Handler of ``modeldeck unload``."""
    model_id = _model_id(args.model_id)
    server = _server(ctx)
    if server is None:
        ctx.services.inventory.require_model(model_id)
        raise InvalidInputError(f"{model_id} is not loaded: no modeldeck serve is running")
    if not server.unload(model_id, args.force):
        raise InvalidInputError(f"{model_id} is not loaded in {server.url}",
                                hint="see modeldeck ps")
    print(clean_line(f"unloaded {model_id} from {server.url}"))
    return 0
