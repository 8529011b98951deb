"""``modeldeck run`` (stream an answer, or a simple REPL) and ``modeldeck fit`` (memory check)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any

from tui.errors import InvalidInputError, NotFoundError
from tui.terminal_text import clean, clean_line

EXIT_COMMANDS = {"/exit", "/quit"}


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
        "prompts line by line from stdin until EOF or /exit, keeping the conversation.",
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

    if args.endpoint:
        if not args.remote_model:
            raise InvalidInputError("--endpoint needs --model NAME (the model on that server)")
        key = os.environ.get(args.api_key_env) or os.environ.get("OPENAI_API_KEY") or None
        target: Any = ModelSpec.endpoint(args.endpoint, args.remote_model, key)
    elif args.model:
        target = args.model
    else:
        raise InvalidInputError("give a model id or path, or --endpoint URL --model NAME")
    params = GenParams(
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        stop=tuple(args.stop),
        seed=args.seed,
    )
    return asyncio.run(_run(ctx, target, _options(args), params, args.prompt, args.system))


async def _run(ctx: Any, target: Any, options: Any, params: Any, prompt: str | None,
               system: str | None) -> int:
    runtime = ctx.services.runtime
    try:
        info = await runtime.load(target, options)
        ctx.err(f"loaded {info.name} in {info.load_seconds:.2f}s"
                + (f" ({info.fit_label})" if info.fit_label else ""))
        history: list[dict[str, str]] = []
        if system:
            history.append({"role": "system", "content": system})
        if prompt is not None:
            history.append({"role": "user", "content": prompt})
            await _answer(ctx, runtime, info.id, history, params)
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
            if text in EXIT_COMMANDS:
                break
            history.append({"role": "user", "content": text})
            reply = await _answer(ctx, runtime, info.id, history, params)
            history.append({"role": "assistant", "content": reply})
        return 0
    finally:
        await runtime.aclose()


async def _answer(ctx: Any, runtime: Any, model_id: str, history: list[dict[str, str]],
                  params: Any) -> str:
    """Stream one answer to stdout. The model's text is untrusted: each delta is cleaned
    (character by character, so an escape sequence split across deltas is caught too)."""
    parts: list[str] = []
    out = sys.stdout
    async with contextlib.aclosing(runtime.generate(model_id, history, params)) as stream:
        async for item in stream:
            if isinstance(item, str):
                parts.append(item)
                out.write(clean(item))
                out.flush()
            else:
                out.write("\n")
                out.flush()
                ctx.err(item.summary())
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
