"""``modeldeck remote add|ls|rm``: OpenAI-compatible upstreams registered by name."""

from __future__ import annotations

import argparse
from typing import Any

from tui.terminal_text import clean_line


def register(sub: Any) -> None:
    """Add ``remote``."""
    p = sub.add_parser(
        "remote", help="register OpenAI-compatible upstreams (vLLM, SGLang, llama-server, …)",
        description="A remote's models appear as <remote>/<model-id> in modeldeck ls, "
        "modeldeck run and modeldeck serve (which proxies requests to it). The key is read "
        "from the named environment variable when a request is made; it is never stored.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    a = verbs.add_parser("add", help="register an upstream by name")
    a.add_argument("name", help="letters, digits, '.', '_', '-'")
    a.add_argument("url", help="its base URL, e.g. http://10.0.0.5:8000/v1")
    a.add_argument("--key-env", metavar="VAR",
                   help="environment variable holding its API key (the name, not the key)")
    a.add_argument("--replace", action="store_true", help="replace a remote of that name")
    a.set_defaults(func=cmd_add)
    ls = verbs.add_parser("ls", help="the remotes, whether they answer, their model count")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    rm = verbs.add_parser("rm", help="forget a remote (nothing on it is touched)")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_rm)

    e = sub.add_parser(
        "engine", help="managed engines: modeldeck serve starts, watches and restarts them",
        description="A managed engine is a local OpenAI-compatible server (vllm serve, "
        "llama-server, python -m llama_cpp.server) that the running modeldeck serve starts, "
        "waits on (/health or /v1/models), registers as the remote NAME, restarts when it "
        "crashes (at most 5 times in a row) and stops with itself. It gets modeldeck serve's "
        "environment: keys go there, never on its command line.")
    verbs = e.add_subparsers(dest="verb", metavar="VERB", required=True)
    st = verbs.add_parser("start", help="start an engine: modeldeck engine start NAME -- CMD…")
    st.add_argument("name")
    st.add_argument("--url", help="its base URL (default: http://HOST:PORT from its --host "
                    "and --port)")
    st.add_argument("--key-env", metavar="VAR",
                    help="environment variable holding the key it asks for (as remote add)")
    st.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                    help="how long to wait for it to be healthy (default 600; 0: do not wait)")
    st.add_argument("command", nargs=argparse.REMAINDER, help="-- and its command line")
    st.set_defaults(func=cmd_engine_start)
    sp = verbs.add_parser("stop", help="stop an engine (SIGTERM, then SIGKILL)")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_engine_stop)
    el = verbs.add_parser("ls", help="the engines, their state, pid and restarts")
    el.add_argument("--json", action="store_true")
    el.set_defaults(func=cmd_engine_ls)
    lg = verbs.add_parser("log", help="the tail of an engine's output")
    lg.add_argument("name")
    lg.add_argument("-n", "--lines", type=int, default=50)
    lg.set_defaults(func=cmd_engine_log)


def cmd_add(args: argparse.Namespace, ctx: Any) -> int:
    from tui.remote.registry import add_remote

    remote = add_remote(ctx.settings.state_dir, args.name, args.url, args.key_env,
                        replace=args.replace)
    key = f", key from ${remote.key_env}" if remote.key_env else ", no key"
    print(clean_line(f"added remote {remote.name}: {remote.url}{key}; its models are "
                     f"{remote.name}/<model-id>"))
    return 0


def cmd_ls(args: argparse.Namespace, ctx: Any) -> int:
    from tui import formatting as fmt
    from tui.remote.models import list_all
    from tui.remote.registry import load_remotes

    results = list_all(load_remotes(ctx.settings.state_dir))
    if args.json:
        ctx.print_json([{"name": r.remote.name, "url": r.remote.url,
                         "key_env": r.remote.key_env, "reachable": r.reachable,
                         "models": list(r.ids), "skipped": r.skipped, "error": r.error}
                        for r in results])
        return 0
    if not results:
        print("No remotes. Add one with: modeldeck remote add NAME URL [--key-env VAR]")
        return 0
    rows = [[r.remote.name, r.remote.url, r.remote.key_env or "-",
             "yes" if r.reachable else "no", str(len(r.ids)) if r.reachable else "-"]
            for r in results]
    print(fmt.table(["NAME", "URL", "KEY ENV", "REACHABLE", "MODELS"], rows))
    for r in results:
        if r.error:
            ctx.err(f"modeldeck: warning: remote {r.remote.name} is unreachable: {r.error}")
        elif r.skipped:
            ctx.err(f"modeldeck: warning: remote {r.remote.name}: {r.skipped} model ids "
                    "skipped (too many, too long or unprintable)")
    return 0


def cmd_rm(args: argparse.Namespace, ctx: Any) -> int:
    from tui.remote.registry import remove_remote

    remote = remove_remote(ctx.settings.state_dir, args.name)
    print(clean_line(f"removed remote {remote.name} ({remote.url})"))
    return 0


# -- engines ----------------------------------------------------------------------------------


def _engine_server(ctx: Any) -> tuple[Any, dict[str, str]]:
    """The running server and the engine token header (the token file is made if absent)."""
    from tui.errors import InvalidInputError
    from tui.remote.engine import read_token
    from tui.serve.client import find_server
    from tui.serve.remote_api import TOKEN_HEADER

    server = find_server(ctx.settings)
    if server is None:
        raise InvalidInputError("no modeldeck serve is running: it is what runs and watches "
                                "engines", hint="start one with: modeldeck serve")
    token = read_token(ctx.settings.state_dir, create=True)
    if token is None:
        raise InvalidInputError(f"cannot use the engine token in {ctx.settings.state_dir}: "
                                "it must be a file of yours readable by you only",
                                hint="remove engine.token; it is made again")
    return server, {TOKEN_HEADER: token}


def _engine_request(server: Any, headers: dict[str, str], method: str, path: str,
                    body: Any = None, timeout: float | None = 30.0) -> Any:
    """A request to the engines API with the token."""
    return server.request(method, path, body, timeout=timeout, headers=headers)


def cmd_engine_start(args: argparse.Namespace, ctx: Any) -> int:
    import shlex
    import time

    from tui.errors import ModelDeckError
    from tui.remote.engine import check_command, engine_url
    from tui.remote.registry import check_env_name, check_name

    check_name(args.name)
    command = check_command(list(args.command))
    url = engine_url(command, args.url)
    if args.key_env:
        check_env_name(args.key_env)
    server, token = _engine_server(ctx)
    print(clean_line(f"starting engine {args.name} ({url}): {shlex.join(command)}"))
    _engine_request(server, token, "POST", "/api/engines",
                    {"name": args.name, "command": command, "url": args.url,
                     "key_env": args.key_env})
    if args.wait <= 0:
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        engine = _find(_engine_request(server, token, "GET", "/api/engines"), args.name)
        if engine.get("state") == "running":
            print(clean_line(f"engine {args.name} is up at {url}; its models are "
                             f"{args.name}/<model-id>"))
            return 0
        if engine.get("state") in ("failed", "stopped"):
            raise ModelDeckError(f"engine {args.name} did not start: "
                                 f"{engine.get('error') or engine.get('state')}",
                                 hint=f"see modeldeck engine log {args.name}")
        time.sleep(0.5)
    raise ModelDeckError(f"engine {args.name} is not healthy after {args.wait:g} s (modeldeck "
                         "serve keeps trying)", hint=f"see modeldeck engine log {args.name}")


def _find(answer: Any, name: str) -> dict[str, Any]:
    from tui.errors import NotFoundError

    engines = answer.get("engines") if isinstance(answer, dict) else None
    for engine in engines if isinstance(engines, list) else []:
        if isinstance(engine, dict) and engine.get("name") == name:
            return engine
    raise NotFoundError(f"no engine named {name!r} in the server")


def cmd_engine_stop(args: argparse.Namespace, ctx: Any) -> int:
    from urllib.parse import quote

    server, token = _engine_server(ctx)
    _engine_request(server, token, "DELETE", f"/api/engines/{quote(args.name, safe='')}",
                    timeout=None)
    print(clean_line(f"stopped engine {args.name}"))
    return 0


def cmd_engine_ls(args: argparse.Namespace, ctx: Any) -> int:
    from tui import formatting as fmt

    server, token = _engine_server(ctx)
    answer = _engine_request(server, token, "GET", "/api/engines")
    engines = [e for e in answer.get("engines", []) if isinstance(e, dict)] \
        if isinstance(answer, dict) else []
    if args.json:
        ctx.print_json(engines)
        return 0
    if not engines:
        print("No engines. Start one with: modeldeck engine start NAME -- COMMAND…")
        return 0
    rows = [[str(e.get("name")), str(e.get("state")), str(e.get("pid") or "-"),
             str(e.get("restarts")), str(e.get("url")), str(e.get("command"))[:80]]
            for e in engines]
    print(fmt.table(["NAME", "STATE", "PID", "RESTARTS", "URL", "COMMAND"], rows))
    for e in engines:
        if e.get("error"):
            ctx.err(f"modeldeck: engine {e.get('name')}: {e.get('error')}")
    return 0


def cmd_engine_log(args: argparse.Namespace, ctx: Any) -> int:
    from tui.remote.engine import log_tail

    for line in log_tail(ctx.settings.state_dir, args.name, max(1, min(args.lines, 10_000))):
        print(line)
    return 0
