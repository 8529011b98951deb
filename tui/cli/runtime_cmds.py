"""``modeldeck run`` (stream an answer, or a simple REPL) and ``modeldeck fit`` (memory check)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from typing import Any

from tui.errors import InvalidInputError, ModelDeckError, NotFoundError
from tui.terminal_text import clean, clean_line


def _gpu_layers(text: str) -> str | int:
    value = text.strip().lower()
    if value in ("auto", "all"):
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("use auto, all or a number of layers") from None
    if number < 0:
        raise argparse.ArgumentTypeError("the number of GPU layers must be 0 or more")
    return number


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: Any) -> None:
    """Add ``run`` and ``fit``."""
    run = subparsers.add_parser(
        "run",
        help="load a model and stream an answer (a REPL without -p)",
        description="Stream one answer to stdout (metrics on stderr). Without -p, read "
        "prompts line by line from stdin until EOF or /exit, keeping the conversation "
        "(trimmed to the context, oldest turns first); /new, /clear, /system TEXT, /help.",
    )
    run.add_argument("model", nargs="?", help="model id (see 'modeldeck ls'), .gguf file or folder")
    run.add_argument("-p", "--prompt", help="the prompt; omit for a REPL on stdin")
    run.add_argument("--system", help="system prompt")
    _load_args(run)
    run.add_argument("--max-tokens", type=_positive_int, default=512)
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--top-p", type=float, default=0.95)
    run.add_argument("--seed", type=int)
    run.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    run.add_argument("--endpoint", help="OpenAI-compatible base URL (vLLM, llama-server, Ollama…)")
    run.add_argument("--model", dest="remote_model", help="model name on the endpoint")
    run.add_argument(
        "--api-key-env",
        default="MODELDECK_API_KEY",
        help="environment variable holding the endpoint API key (default MODELDECK_API_KEY, "
        "then OPENAI_API_KEY)",
    )
    run.set_defaults(func=run_command)

    fit = subparsers.add_parser(
        "fit",
        help="estimate whether a model fits in free RAM/VRAM",
        description="Weights + KV cache + compute buffers against free memory. Works for "
        "installed models, files, folders and catalog entries (before a download).",
    )
    fit.add_argument("model", help="model id, .gguf file, model folder or catalog id")
    fit.add_argument("--ctx", type=_positive_int, help="context length (default: min(model, 4096))")
    fit.add_argument("--gpu-layers", type=_gpu_layers, default="auto")
    fit.add_argument("--parallel", type=_positive_int,
                     help="GGUF: answers decoded together, each with its own KV cache "
                     "(default: the parallel_requests setting)")
    fit.add_argument("--quant", help="catalog entries: which quantization")
    fit.add_argument("--json", action="store_true", help="machine-readable output")
    fit.set_defaults(func=fit_command)


def _load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ctx", type=_positive_int, help="context length (default: min(model, 4096))"
    )
    parser.add_argument("--gpu-layers", type=_gpu_layers, default="auto", help="auto, all or N")
    parser.add_argument("--threads", type=_positive_int, help="llama.cpp CPU threads")
    parser.add_argument("--batch", type=_positive_int, default=512, help="llama.cpp batch size")
    parser.add_argument("--flash-attn", action="store_true", help="llama.cpp flash attention")
    parser.add_argument("--dtype", default="auto", help="transformers dtype (auto, float16, …)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="transformers: run the model repo's own Python code")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="transformers: load pickle (.bin/.pt) weights")
    parser.add_argument("--force", action="store_true", help="load even if it won't fit")


def _options(args: argparse.Namespace) -> Any:
    from tui.runtime.types import LoadOptions

    return LoadOptions(
        context_length=args.ctx,
        gpu_layers=args.gpu_layers,
        threads=args.threads,
        batch=args.batch,
        flash_attention=args.flash_attn,
        seed=args.seed,
        parallel=1,  # one conversation: one KV cache, not parallel_requests of them
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        force=args.force,
    )


def run_command(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck run``."""
    from tui.runtime.types import GenParams, ModelSpec

    params = GenParams(
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        stop=tuple(args.stop),
        seed=args.seed,
    )
    key_var = None
    if args.endpoint:
        if not args.remote_model:
            raise InvalidInputError("--endpoint needs --model NAME (the model on that server)")
        key_var = next((v for v in (args.api_key_env, "OPENAI_API_KEY") if os.environ.get(v)),
                       None)
        key = os.environ[key_var] if key_var else None
        target: Any = ModelSpec.endpoint(args.endpoint, args.remote_model, key)
    elif args.model:
        target = args.model
        remote = _remote_target(ctx, args.model)
        if remote is not None:
            target = ModelSpec.endpoint(remote[0].url, remote[1], remote[0].key())
            return _run_remote(ctx, args, target, remote[0], params)
    else:
        raise InvalidInputError("give a model id or path, or --endpoint URL --model NAME")
    coro = _run(ctx, target, _options(args), params, args.prompt, args.system)
    if not args.endpoint:
        return asyncio.run(coro)
    from tui.runtime.backends.openai import EndpointAuthError

    try:
        return asyncio.run(coro)
    except EndpointAuthError as exc:  # say which variable the key came from, or should
        if key_var:
            hint = f"check the key in ${key_var}, or name another variable with --api-key-env"
        else:
            hint = (f"no key was sent: put it in ${args.api_key_env} or name the variable "
                    "with --api-key-env VAR")
        raise EndpointAuthError(exc.message, hint=hint) from None


def _run_remote(ctx: Any, args: argparse.Namespace, target: Any, remote: Any,
                params: Any) -> int:
    """``modeldeck run <remote>/<model>``: the OpenAI client backend with the remote's URL and
    the key read now from its variable."""
    from tui.runtime.backends.openai import EndpointAuthError

    try:
        return asyncio.run(_run(ctx, target, _options(args), params, args.prompt, args.system))
    except EndpointAuthError as exc:
        hint = (f"check the key in ${remote.key_env}" if remote.key_env else
                f"no key was sent: modeldeck remote add {remote.name} URL --key-env VAR --replace")
        raise EndpointAuthError(exc.message, hint=hint) from None


def _remote_target(ctx: Any, model: str) -> Any:
    """``(remote, upstream id)`` when ``model`` is ``<remote>/<id>`` of a registered remote
    (an existing path wins)."""
    from pathlib import Path

    from tui.remote.registry import load_remotes, split_model

    if "/" not in model or Path(model).exists():
        return None
    return split_model(model, load_remotes(ctx.settings.state_dir))


REPL_HELP = (
    "/new: a new conversation (the system prompt stays) | /clear: forget this conversation's "
    "turns | /system TEXT: set the system prompt (/system alone removes it) | /help | /exit"
)
_COMMAND = re.compile(r"/([a-z]+)(?:\s+(.*))?", re.DOTALL)


async def _run(ctx: Any, target: Any, options: Any, params: Any, prompt: str | None,
               system: str | None) -> int:
    from tui.chat.session import ChatSession

    runtime = ctx.services.runtime
    try:
        info = await runtime.load(target, options)
        ctx.err(f"loaded {info.name} in {info.load_seconds:.2f}s"
                + (f" ({info.fit_label})" if info.fit_label else ""))
        session = ChatSession(info.id, system or "")
        if prompt is not None:
            session.add_user(prompt)
            await _answer(ctx, runtime, info.id, session.messages(), params)
            return 0
        interactive = sys.stdin.isatty()
        loop = asyncio.get_running_loop()
        while True:
            if interactive:
                sys.stderr.write("> ")
                sys.stderr.flush()
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            command = _COMMAND.fullmatch(text)
            if command is not None:
                if command.group(1) in ("exit", "quit"):
                    break
                session = _repl_command(ctx, session, command.group(1), command.group(2))
                continue
            session.add_user(text)
            try:
                messages = await _fit(ctx, runtime, info, session, params)
                reply = await _answer(ctx, runtime, info.id, messages, params)
            except ModelDeckError as exc:  # the conversation goes on, without this prompt
                session.discard_last_user()
                ctx.err(f"modeldeck: error: {exc}")
                continue
            session.add_assistant(reply)
        return 0
    finally:
        await runtime.aclose()


def _repl_command(ctx: Any, session: Any, name: str, argument: str | None) -> Any:
    """Run a REPL command; returns the conversation to go on with."""
    from tui.chat.session import ChatSession

    if name == "new":
        ctx.err("new conversation")
        return ChatSession(session.model_id, session.system)
    if name == "clear":
        session.clear()
        ctx.err("conversation cleared")
    elif name == "system":
        session.system = (argument or "").strip()
        ctx.err("system prompt set" if session.system else "system prompt removed")
    elif name == "help":
        ctx.err(REPL_HELP)
    else:
        ctx.err(f"unknown command /{name}; /help lists them")
    return session


async def _fit(ctx: Any, runtime: Any, info: Any, session: Any, params: Any) -> list[Any]:
    """The conversation trimmed to the context (a note on stderr when turns are left out)."""
    context = info.context_length
    if not context:  # an endpoint
        return session.messages()

    trimmed = await session.fit_for(
        runtime, context, params.max_tokens,
        hint="shorten the prompt, /system to shorten the system prompt, lower --max-tokens, "
        "or run with a larger --ctx")
    note = trimmed.note()
    if note:
        ctx.err(f"({note})")
    return trimmed.messages


async def _answer(ctx: Any, runtime: Any, model_id: str, messages: list[Any],
                  params: Any) -> str:
    """Stream one answer to stdout. The model's text is untrusted: each delta is cleaned
    (character by character, so an escape sequence split across deltas is caught too)."""
    parts: list[str] = []
    out = sys.stdout
    try:
        async with contextlib.aclosing(runtime.generate(model_id, messages, params)) as stream:
            async for item in stream:
                if isinstance(item, str):
                    parts.append(item)
                    out.write(clean(item))
                    out.flush()
                else:
                    out.write("\n")
                    out.flush()
                    ctx.err(item.summary())
    except ModelDeckError:
        if parts:  # the error line starts on a line of its own
            out.write("\n")
            out.flush()
        raise
    return "".join(parts)


def fit_command(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck fit``."""
    from tui.runtime.fit import check_fit
    from tui.runtime.types import LoadOptions

    runtime = ctx.services.runtime
    options = LoadOptions(context_length=args.ctx, gpu_layers=args.gpu_layers,
                          parallel=args.parallel)

    async def estimate() -> tuple[Any, str]:
        try:
            try:
                return await runtime.fit(args.model, options), "installed"
            except NotFoundError:
                entry = _catalog_entry(ctx, args.model)
                if entry is None:
                    raise
                if not entry.runnable:
                    return entry, "by-size"
                slots = runtime.slots_for(entry.format, options)
                est = _catalog_estimate(entry, args.quant, args.ctx, slots)
                memory = await asyncio.get_running_loop().run_in_executor(
                    None, runtime.memory_probe
                )
                return check_fit(est, memory, args.gpu_layers), "catalog"
        finally:
            await runtime.aclose()

    result, source = asyncio.run(estimate())
    if source == "by-size":
        return _fit_by_size(ctx, result, args.quant, args.json)
    if args.json:
        data = result.to_dict()
        data["source"] = source
        ctx.print_json(data)
    else:
        print(clean_line(result.summary()))
        for note in result.estimate.assumptions:
            print(f"  assumption: {clean_line(note)}")
    return 0


def _fit_by_size(ctx: Any, entry: Any, quant: str | None, as_json: bool) -> int:
    """A catalog entry of a kind ModelDeck does not run (an image model, a LoRA, a VAE, …):
    one line with the disk space its files need and what the models volume has free."""
    import shutil

    from tui import formatting as fmt

    size = entry.size_for(quant if quant and entry.quants else None)
    free = None
    folder = ctx.settings.models_dir
    with contextlib.suppress(OSError):
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent  # the volume the models dir will be made on
        free = shutil.disk_usage(folder).free
    if as_json:
        ctx.print_json({
            "source": "catalog", "id": entry.id, "kind": entry.kind, "runnable": False,
            "disk_bytes": size, "free_bytes": free,
            "fits_on_disk": None if free is None else size <= free,
        })
        return 0
    where = f" ({fmt.size(free)} free in {folder})" if free is not None else ""
    print(clean_line(f"{entry.name} ({entry.kind}) is not runnable here; needs "
                     f"{fmt.size(size)} on disk{where}"))
    return 0


def _catalog_entry(ctx: Any, entry_id: str) -> Any:
    try:
        catalog = ctx.services.catalog
    except ImportError:
        return None
    return catalog.get(entry_id)


def _catalog_estimate(entry: Any, quant: str | None, context: int | None,
                      parallel: int = 1) -> Any:
    from tui.runtime.fit import estimate_from_catalog

    extra = entry.extra or {}
    chosen = entry.quant(quant) if quant and entry.quants else entry.default_quant
    size = chosen.size if chosen else sum(f.size or 0 for f in entry.files)
    if not entry.parameters and not size:
        raise NotFoundError(
            f"catalog entry {entry.id!r} lists neither a parameter count nor file sizes",
            hint="download it, then run 'modeldeck fit' on the installed model",
        )
    return estimate_from_catalog(
        entry.parameters or 0,
        quantization=chosen.quant if chosen else extra.get("dtype", "BF16"),
        context=context,
        n_layers=extra.get("n_layers"),
        n_heads=extra.get("n_heads"),
        n_kv_heads=extra.get("n_kv_heads"),
        head_dim=extra.get("head_dim"),
        weights_bytes=size or None,
        parallel=parallel,
    )
