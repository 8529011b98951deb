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
