"""Inventory sub-commands: ls, catalog, info, scan, add, rm, config, doctor, export, import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tui import formatting as fmt
from tui.cli.context import Context
from tui.errors import InvalidInputError, NotFoundError
from tui.kinds import KINDS, RUNNABLE
from tui.metadata.kinds import MODEL_FORMATS
from tui.settings import SETTING_NAMES, env_var
from tui.terminal_text import clean_line

FORMATS = MODEL_FORMATS
UNSAFE_NOTE = ("unsafe format: a pickle can run code when it is loaded; ModelDeck only "
               "inspects it, never loads it")


def register(sub: Any) -> None:
    """Add this module's sub-commands."""
    p = sub.add_parser("ls", help="list installed and discovered models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--status", choices=["installed", "missing", "deleting"])
    p.add_argument("--format", choices=list(FORMATS))
    p.add_argument("--kind", choices=list(KINDS),
                   help="only models of this kind (llm, vlm, lora, diffusion, vae, ...)")
    p.add_argument(
        "--sort", choices=["name", "size", "params", "last-used", "speed"], default="name"
    )
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("catalog", help="list built-in and custom catalog entries")
    p.add_argument("--kind", choices=KINDS, help="only entries of this kind (llm, vlm, diffusion, "
                   "lora, vae, embedding, …)")
    p.add_argument("--format", choices=["gguf", "safetensors", "diffusers"])
    p.add_argument("--search", "-s", metavar="TEXT", help="words that must all match")
    p.add_argument("--tag", help="only entries with this tag (chat, coder, tiny, ...)")
    p.add_argument("--custom", action="store_true", help="only your custom entries")
    p.add_argument("--remove", metavar="ID", help="remove a custom entry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser("info", help="details of an installed model, catalog entry or file")
    p.add_argument("target", help="model id, catalog id, or a path to a .gguf / model folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("scan", help="discover models on disk and register them")
    p.add_argument("dir", nargs="?", help="scan only this folder (inside a managed folder)")
    p.add_argument(
        "--verify-duplicates", action="store_true", help="confirm duplicates with full sha256"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("add", help="add a custom catalog entry")
    add = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    a = add.add_parser("hf", help="a Hugging Face repo with files, a quant or globs")
    a.add_argument("repo", help="owner/name")
    a.add_argument("--file", action="append", dest="files", metavar="PATH", default=[])
    a.add_argument("--quant", help="GGUF quantization, e.g. Q4_K_M")
    a.add_argument("--include", action="append", metavar="GLOB", default=[])
    a.add_argument("--revision", default="main")
    a.add_argument("--format", choices=["gguf", "safetensors"])
    a.add_argument("--id", dest="entry_id")
    a.add_argument("--name")
    a.add_argument("--json", action="store_true")
    a = add.add_parser("url", help="a direct download URL")
    a.add_argument("url")
    a.add_argument("--sha256", help="expected sha256, checked after download")
    a.add_argument("--format", choices=["gguf", "safetensors"])
    a.add_argument("--id", dest="entry_id")
    a.add_argument("--name")
    a.add_argument("--json", action="store_true")
    a = add.add_parser("local", help="a model already on this machine (registers it too)")
    a.add_argument("path")
    a.add_argument("--id", dest="entry_id")
    a.add_argument("--name")
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("rm", help="delete an installed model's files and its record")
    p.add_argument("model_id")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("config", help="print the effective settings and where each came from")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "doctor", help="check Python, backends, GPU, disk, Hub token and the inventory"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--repair", action="store_true",
        help="if the inventory is broken: keep it aside, rebuild it from what is readable in "
        "it and a scan of the model folders",
    )
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("export", help="write a manifest of the installed models")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="set up the models of a manifest (downloads them)")
    p.add_argument("manifest")
    p.add_argument("--dry-run", action="store_true", help="validate and show, change nothing")
    p.add_argument(
        "--no-download", action="store_true", help="only record the jobs, do not start them"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)


# -- ls ----------------------------------------------------------------------------------

_SORT_KEYS: dict[str, Any] = {
    "name": lambda m: (m.name.lower(), m.id),
    "size": lambda m: -m.size_bytes,
    "params": lambda m: -(m.parameters or 0),
    "last-used": lambda m: -(m.last_used_at or 0),
    "speed": lambda m: -(m.tokens_per_s or 0),
}


def _reconcile(ctx: Context) -> None:
    """Finish interrupted moves and deletes (and mark missing models); what was finished and
    the paths left alone go to stderr."""
    from tui.inventory_ops import reconcile

    report = reconcile(ctx.settings, ctx.services.inventory)
    for line in [*report.finished_moves, *report.refused]:
        print(f"modeldeck: {line}", file=sys.stderr)


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck ls``."""
    inventory = ctx.services.inventory
    _reconcile(ctx)
    models = inventory.list_models(status=args.status)
    if args.format:
        models = [m for m in models if m.format == args.format]
    if args.kind:
        models = [m for m in models if m.kind == args.kind]
    models.sort(key=_SORT_KEYS[args.sort])
    remotes = _remote_rows(ctx) if not (args.status or args.format or args.kind) else []
    if args.json:
        ctx.print_json([m.to_dict() for m in models]
                       + [{"id": mid, "source": "remote", "remote": r.name, "url": r.url}
                          for mid, r in remotes])
        return 0
    if not models and not remotes:
        if args.kind or args.format:
            print("No models match.")
            return 0
        print(f"No models yet. Run 'modeldeck scan' or 'modeldeck pull <id>' "
              f"(models dir: {clean_line(ctx.settings.models_dir)}).")
        return 0
    rows = [
        [
            m.id, m.kind, m.format + ("*" if _unsafe(m.metadata) else ""),
            m.quantization or "-", fmt.params(m.parameters),
            fmt.size(m.size_bytes), m.status, m.source,
            f"{m.tokens_per_s:.1f}" if m.tokens_per_s else "-", fmt.ago(m.last_used_at),
        ]
        for m in models
    ] + [[mid, "-", "remote", "-", "-", "-", "remote", "remote", "-", "-"]
         for mid, _r in remotes]
    print(fmt.table(
        ["ID", "KIND", "FORMAT", "QUANT", "PARAMS", "SIZE", "STATUS", "SOURCE", "TOK/S",
         "LAST USED"],
        rows,
    ))
    total = sum(m.size_bytes for m in models)
    print(f"\n{len(models)} models, {fmt.size(total)}"
          + (f"; {len(remotes)} on remotes" if remotes else ""))
    if any(_unsafe(m.metadata) for m in models):
        print(f"* {UNSAFE_NOTE}")
    return 0


def _unsafe(meta: Any) -> bool:
    extra = getattr(meta, "extra", None)
    return isinstance(extra, dict) and extra.get("unsafe_format") is True


def _remote_rows(ctx: Context) -> list[Any]:
    """Models of the registered remotes (``<remote>/<id>``); a warning per unreachable one."""
    from tui.remote.models import remote_listing

    rows, warnings = remote_listing(ctx.settings.state_dir)
    for line in warnings:
        ctx.err(f"modeldeck: warning: {line}")
    return rows


# -- catalog -----------------------------------------------------------------------------


def cmd_catalog(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck catalog``."""
    catalog = ctx.services.catalog
    if args.remove:
        catalog.remove(args.remove)
        if not args.json:
            print(f"Removed custom entry {clean_line(args.remove)}.")
        return 0
    entries = catalog.search(
        text=args.search, format=args.format, tag=args.tag, kind=args.kind,
        custom_only=args.custom,
    )
    if args.json:
        ctx.print_json([e.to_dict() for e in entries])
        return 0
    if not entries:
        print("No catalog entries match.")
        return 0
    rows = []
    for e in entries:
        quants = ", ".join(
            f"{q.quant}{'*' if q.default else ''} {fmt.size(q.size)}" for q in e.quants
        )
        size_text = quants or fmt.size(e.size_for() or None)
        kind = e.kind + (f" ({e.base_model})" if e.base_model else "")
        rows.append([
            e.id, kind, e.format or "-", fmt.params(e.parameters),
            "gated" if e.gated else "", "built-in" if e.builtin else "custom", size_text,
        ])
    print(fmt.table(
        ["ID", "KIND", "FORMAT", "PARAMS", "ACCESS", "SOURCE", "SIZES (* = default)"], rows
    ))
    managed = sorted({e.kind for e in entries if not e.runnable})
    if managed:
        print(f"\nNot runnable here (downloaded, sized and deleted only): {', '.join(managed)}.")
    return 0


# -- info --------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck info``."""
    target = args.target
    inventory = ctx.services.inventory
    model = inventory.get_model(target)
    if model is not None:
        data: dict[str, Any] = {"entry": "installed", **model.to_dict()}
    else:
        entry = ctx.services.catalog.get(target)
        if entry is not None:
            data = {"entry": "catalog", **entry.to_dict()}
        else:
            path = Path(target).expanduser()
            if not path.exists():
                raise NotFoundError(
                    f"{target!r} is not a model id, catalog id or existing path",
                    hint="see 'modeldeck ls' and 'modeldeck catalog'",
                )
            data = {"entry": "file", **_read_path(path)}
    if args.json:
        ctx.print_json(data)
        return 0
    _print_info(data)
    return 0


def _read_path(path: Path) -> dict[str, Any]:
    """What a file or folder holds: the model it belongs to, read whole (a split GGUF's shard
    describes the set; a GGUF model its projector)."""
    from tui.metadata.files import is_regular_file
    from tui.metadata.kinds import kind_of
    from tui.registration import group_model_files, model_candidates, pick_group, read_metadata

    if not (path.is_dir() or is_regular_file(path)):  # a FIFO or device is never opened
        raise InvalidInputError(
            f"{path} is not a regular file or folder", hint="give a model file or folder"
        )
    group = pick_group(group_model_files(model_candidates(path)), path)
    if group is None:
        raise InvalidInputError(
            f"{path} holds no model ModelDeck reads",
            hint="GGUF, safetensors, ONNX, TFLite, Core ML or PyTorch files",
        )
    form, main, members = group
    meta = read_metadata(form, main, members if form == "gguf" else None)
    return {
        "path": str(main),
        "format": meta.format or form,
        "kind": kind_of(meta, form),
        "size_bytes": sum(m.stat().st_size for m in members),
        "metadata": meta.to_dict(),
        "files": [{"path": str(m), "size": m.stat().st_size} for m in members],
    }


def _print_info(data: dict[str, Any]) -> None:
    meta = data.get("metadata") or {}
    lines: list[tuple[str, Any]] = [
        ("id", data.get("id")),
        ("name", data.get("name") or meta.get("name")),
        *_kind_lines(data, meta),
        ("format", data.get("format")),
        ("status", data.get("status")),
        ("source", data.get("source") or data.get("repo") or data.get("url")),
        ("repo", data.get("repo") or data.get("source_ref")),
        ("revision", data.get("revision")),
        ("path", data.get("path")),
        ("architecture", data.get("architecture") or meta.get("architecture")),
        ("parameters", fmt.params(data.get("parameters") or meta.get("parameters"))),
        ("quantization", data.get("quantization") or meta.get("quantization")),
        ("dtype", meta.get("dtype")),
        ("context length", data.get("context_length") or meta.get("context_length")),
        ("layers", meta.get("n_layers")),
        ("heads / kv heads",
         f"{meta.get('n_heads')} / {meta.get('n_kv_heads')}" if meta.get("n_heads") else None),
        ("embedding size", meta.get("embedding_size")),
        ("vocab size", meta.get("vocab_size")),
        ("ignored values", _ignored(meta)),
        ("chat template", "yes" if meta.get("has_chat_template") else (
            "no" if meta and data.get("kind") in (*RUNNABLE, None) else None)),
        ("size", fmt.size(data.get("size_bytes")) if data.get("size_bytes") else None),
        ("gated", "yes" if data.get("gated") else None),
        ("license", data.get("license")),
        ("load time", f"{data['load_seconds']:.2f} s" if data.get("load_seconds") else None),
        ("tokens/s", f"{data['tokens_per_s']:.1f}" if data.get("tokens_per_s") else None),
        ("last used", fmt.ago(data["last_used_at"]) if data.get("last_used_at") else None),
    ]
    # Every value may come from a model file or the catalog: one line each, escaped.
    for key, value in lines:
        if value not in (None, "", "-"):
            print(f"{key + ':':17} {clean_line(value)}")
    for q in data.get("quants") or []:
        mark = " (default)" if q["default"] else ""
        print(f"{'quant:':17} {clean_line(q['quant']):8} {fmt.size(q['size'])}{mark}")
    files = data.get("files") or []
    if files and data.get("entry") in ("installed", "file"):
        print("files:")
        for f in files:
            sha = f" sha256 {clean_line(f['sha256'][:12])}…" if f.get("sha256") else ""
            checked = f" (verified: {clean_line(f['verified'])})" if f.get("verified") else ""
            print(f"  {clean_line(f['path'])}  {fmt.size(f['size'])}{sha}{checked}")


def _kind_lines(data: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, Any]]:
    """What kind of model it is and the details that go with it (LoRA rank and family, ONNX
    opset, a VLM's projector, an unsafe pickle, the cached revisions, the set of shards)."""
    from tui.metadata.kinds import FORMAT_LABELS, describe, embeds_only, not_runnable
    from tui.metadata.types import ModelMetadata

    kind = data.get("kind")
    if kind not in KINDS:
        return []
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    if "base_family" not in extra and isinstance(data.get("base_model"), str):
        extra = {**extra, "base_family": data["base_model"]}  # a catalog entry's base model
    fmt_name = str(data.get("format") or "")
    record = ModelMetadata.from_dict({**meta, "kind": kind}) if meta else ModelMetadata(
        format=fmt_name, kind=kind)  # a catalog entry: its kind, no metadata yet
    if kind == "tokenizer":
        note = "; not a model"
    elif embeds_only(fmt_name, record):
        note = "; embeddings only (POST /v1/embeddings on modeldeck serve)"
    elif not_runnable("it", fmt_name, record) is None:
        note = ""
    elif kind in RUNNABLE:
        note = f" ({FORMAT_LABELS.get(fmt_name, fmt_name)}); managed, not runnable here"
    else:
        note = "; managed, not runnable here"
    lines: list[tuple[str, Any]] = [("kind", describe(kind, extra) + note)]
    if data.get("source") == "civitai" and isinstance(extra.get("base_model"), str):
        lines.append(("base model", extra["base_model"]))  # as CivitAI names it
    if extra.get("unsafe_format") is True:
        lines.append(("warning", UNSAFE_NOTE))
        suspicious = extra.get("suspicious_imports")
        if isinstance(suspicious, list) and suspicious:
            shown = ", ".join(str(s) for s in suspicious[:5])
            more = f" and {len(suspicious) - 5} more" if len(suspicious) > 5 else ""
            lines.append(("imports", f"{shown}{more} — could run code"))
        if extra.get("pickle_inspected"):
            lines.append(("inspected", extra["pickle_inspected"]))
    if extra.get("opset") is not None:
        ir = f" (IR {extra['ir_version']})" if extra.get("ir_version") is not None else ""
        lines.append(("opset", f"{extra['opset']}{ir}"))
    for key, label in (("schema_version", "TFLite schema"),
                       ("specification_version", "Core ML spec"), ("model_type", "model type"),
                       ("pipeline", "pipeline")):
        if extra.get(key) is not None:
            lines.append((label, extra[key]))
    io = _io_text(extra)
    if io:
        lines.append(("inputs → outputs", io))
    projector = extra.get("projector")
    if isinstance(projector, dict) and projector.get("file"):
        what = [str(projector.get("projector_type") or ""),
                fmt.params(projector.get("parameters"))]
        lines.append(("projector", f"{projector['file']} ({', '.join(w for w in what if w)})"
                      if any(what) else projector["file"]))
    components = extra.get("components")
    if isinstance(components, dict) and components:
        lines.append(("components", ", ".join(
            f"{name} {c.get('class') or '?'}"
            + (f" {fmt.params(c['parameters'])}" if isinstance(c, dict) and c.get(
                "parameters") else "")
            for name, c in list(components.items())[:12] if isinstance(c, dict))))
    revisions = extra.get("revisions")
    if isinstance(revisions, list) and revisions:
        lines.append(("revisions", ", ".join(
            f"{str(r.get('commit'))[:12]} ({', '.join(r.get('refs') or []) or 'detached'})"
            for r in revisions[:8] if isinstance(r, dict))))
    if meta.get("split_count"):
        lines.append(("split set", f"{meta['split_count']} shards"))
    return lines


def _io_text(extra: dict[str, Any]) -> str | None:
    """``input_ids [batch, seq] → logits`` for a graph model (ONNX, TFLite, Core ML)."""
    def side(items: Any, total: Any) -> str:
        if not isinstance(items, list):
            return ""
        names = []
        for item in items[:4]:
            if not isinstance(item, dict):
                continue
            shape = item.get("shape")
            dims = f" [{', '.join(str(d) for d in shape)}]" if isinstance(shape, list) and \
                shape else ""
            names.append(f"{item.get('name') or '?'}{dims}")
        more = total - len(names) if isinstance(total, int) and total > len(names) else 0
        return ", ".join(names) + (f" (+{more})" if more else "")

    ins = side(extra.get("inputs"), extra.get("n_inputs"))
    outs = side(extra.get("outputs"), extra.get("n_outputs"))
    return f"{ins} → {outs}" if ins or outs else None


def _ignored(meta: dict[str, Any]) -> str | None:
    """The out-of-range values a reader dropped (``extra["ignored_values"]``), on one line."""
    extra = meta.get("extra")
    ignored = extra.get("ignored_values") if isinstance(extra, dict) else None
    if not isinstance(ignored, dict) or not ignored:
        return None
    return "; ".join(f"{name} {value}" for name, value in ignored.items())


# -- scan --------------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck scan``."""
    from tui.discovery import Scanner

    _reconcile(ctx)
    scanner = Scanner(ctx.settings, ctx.services.inventory)
    report = scanner.scan(
        Path(args.dir) if args.dir else None, verify_duplicates=args.verify_duplicates
    )
    if args.json:
        ctx.print_json(report.to_dict())
        return 0
    print(f"Scanned {', '.join(map(clean_line, report.roots))} in {report.seconds:.2f} s: "
          f"{len(report.models)} models ({len(report.added)} new, {len(report.updated)} "
          f"updated, {len(report.missing)} missing); {report.files_read} read, "
          f"{report.files_cached} unchanged.")
    if report.kinds:
        print("Kinds: " + ", ".join(f"{n} {kind}" for kind, n in report.kinds.items()) + ".")
    for path, error in report.errors:
        print(f"  skipped {clean_line(path)}: {clean_line(error)}")
    for path, warning in report.warnings:
        print(f"  note {clean_line(path)}: {clean_line(warning)}")
    for d in report.duplicates:
        how = "sha256" if d.verified else "sampled hash"
        print(f"  duplicate ({how}, {fmt.size(d.size)} each, {fmt.size(d.wasted_bytes)} "
              f"wasted): {', '.join(map(clean_line, d.paths))}")
    if report.duplicates:
        print(f"Reclaimable: {fmt.size(report.wasted_bytes)}")
    return 0


# -- add ---------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck add hf|url|local``."""
    catalog = ctx.services.catalog
    if args.kind == "hf":
        entry = catalog.add_hf(
            args.repo, files=args.files, quant=args.quant, include=args.include,
            revision=args.revision, format=args.format, entry_id=args.entry_id, name=args.name,
        )
    elif args.kind == "url":
        entry = catalog.add_url(
            args.url, sha256=args.sha256, entry_id=args.entry_id, name=args.name,
            format=args.format,
        )
    else:
        entry = _add_local(ctx, Path(args.path), args.entry_id, args.name)
    if args.json:
        ctx.print_json(entry.to_dict())
    else:
        print(f"Added {entry.source} entry {clean_line(entry.id)}.")
    return 0


def _add_local(ctx: Context, path: Path, entry_id: str | None, name: str | None):
    from tui.registration import (
        build_record,
        group_model_files,
        model_candidates,
        pick_group,
        read_metadata,
    )
    from tui.store import ModelFile

    path = path.expanduser()
    if not path.exists():
        raise NotFoundError(f"no such file or folder: {path}")
    group = pick_group(group_model_files(model_candidates(path)), path)
    if group is None:
        raise InvalidInputError(f"{path} is neither a model file nor a model folder")
    form, main, members = group
    meta = read_metadata(form, main, members if form == "gguf" else None)  # fails before writing
    entry = ctx.services.catalog.add_local(path, entry_id=entry_id, name=name)
    files = [
        ModelFile(str(m.resolve()), m.stat().st_size, None, m.stat().st_mtime_ns) for m in members
    ]
    inventory = ctx.services.inventory
    existing = inventory.find_by_path(str(main.resolve()))
    record = build_record(
        model_id=existing.id if existing else entry.id, fmt=form, path=main.resolve(),
        files=files, metadata=meta, source="local", source_ref=str(main.resolve()),
        catalog_id=entry.id, name=name,
    )
    inventory.upsert_model(record)
    return entry


# -- rm ----------------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck rm``: list what goes (files, bytes, refusals), ask, delete."""
    from tui.inventory_ops import describe, plan_removal, refusal, remove_model, summary

    plan = plan_removal(ctx.settings, ctx.services.inventory, args.model_id)
    shown = clean_line(args.model_id)
    if not args.json:
        print(summary(plan))
        for line in describe(plan):
            print(f"  {line}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInputError(
                f"refusing to delete {shown} without confirmation", hint="pass -y"
            )
        question = "Forget it (files stay)? [y/N] " if plan.forget_only else "Delete? [y/N] "
        answer = input(question).strip().lower()
        if answer not in ("y", "yes"):
            print("Nothing deleted.")
            return 1
    shown_before = {f.path for f in plan.refused}
    plan = remove_model(ctx.settings, ctx.services.inventory, args.model_id)
    if args.json:
        ctx.print_json({
            "id": args.model_id, "freed_bytes": plan.freed_bytes,
            "forgot_only": plan.forget_only,
            "deleted": [str(f.path) for f in plan.to_delete],
            "refused": [{"path": str(f.path), "reason": f.note} for f in plan.refused],
        })
        return 0
    for f in plan.refused:
        if f.path not in shown_before:
            print(f"  {refusal(f)}")
    if plan.forget_only:
        print(f"Forgot {shown}; its files outside the managed folders were kept.")
    else:
        kept = f"; kept {len(plan.refused)} path(s) as listed" if plan.refused else ""
        print(f"Deleted {shown}, freed {fmt.size(plan.freed_bytes)}{kept}.")
    return 0


# -- config / doctor ---------------------------------------------------------------------


def cmd_config(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck config``."""
    settings = ctx.settings
    values = settings.as_dict()
    if args.json:
        ctx.print_json({
            "config_file": str(settings.config_path) if settings.config_path else None,
            "settings": {
                k: {"value": values[k], "source": settings.source_of(k), "env": env_var(k)}
                for k in SETTING_NAMES
            },
        })
        return 0
    print(f"config file: {clean_line(settings.config_path or 'none found')}")
    rows = []
    for key in SETTING_NAMES:
        value = values[key]
        text = ", ".join(value) if isinstance(value, list) else str(value)
        rows.append([key, text or "-", settings.source_of(key)])
    print(fmt.table(["SETTING", "VALUE", "FROM"], rows))
    return 0


def cmd_doctor(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck doctor [--repair]``."""
    if args.repair:
        return _repair(args, ctx)
    from tui.doctor import run_checks

    checks = run_checks(ctx.settings)
    if args.json:
        ctx.print_json([c.to_dict() for c in checks])
    else:
        for c in checks:
            print(f"[{c.status:4}] {c.name:14} {clean_line(c.detail)}")
    return 1 if any(c.status == "fail" for c in checks) else 0


_TABLE_LABELS = {"custom_entries": "custom entries", "model_files": "model files",
                 "jobs": "download jobs", "job_files": "download files"}


def _repair(args: argparse.Namespace, ctx: Context) -> int:
    from tui.repair import repair_inventory

    report = repair_inventory(ctx.settings)
    if args.json:
        ctx.print_json(report.to_dict())
        return 0
    if report.problem is None:
        state = "is healthy" if report.path.exists() else "does not exist yet"
        print(f"Inventory {report.path} {state}; nothing to repair.")
        return 0
    print(f"Found: {report.problem}")
    print(f"Moved it (and its -wal/-shm) to {report.moved_to}; it is kept, delete it once you "
          "no longer need it.")
    got = [f"{c} {_TABLE_LABELS.get(t, t)}" for t, (c, _) in report.salvaged.items() if c]
    lost = sum(n for _, n in report.salvaged.values())
    if got:
        print(f"Recovered from it: {', '.join(got)}"
              + (f" (at least {lost} rows were unreadable)" if lost else "") + ".")
    else:
        print("Nothing could be read back from it.")
    scan = report.scan
    if scan is not None:
        print(f"Scanned {', '.join(scan.roots)}: {len(scan.models)} models on disk "
              f"({len(scan.added)} added to the new inventory).")
    if report.orphan_parts:
        print(f"{len(report.orphan_parts)} partial downloads have no job any more and were left "
              f"in place (e.g. {report.orphan_parts[0]}); pull those models again.")
    print("Done: 'modeldeck ls' lists the models.")
    return 0


# -- export / import ---------------------------------------------------------------------


def cmd_export(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck export``."""
    from tui.manifest import export_manifest

    data = export_manifest(ctx.services.inventory, ctx.settings.models_dir)
    text = json.dumps(data, indent=2) + "\n"
    if args.output:
        from tui.atomic import write_text_atomic

        write_text_atomic(Path(args.output), text)
        print(f"Wrote {len(data['models'])} models to {clean_line(args.output)}"
              + (f" ({len(data['skipped'])} skipped: no remote source)" if data["skipped"] else ""))
    else:
        sys.stdout.write(text)
    return 0


def cmd_import(args: argparse.Namespace, ctx: Context) -> int:
    """``modeldeck import``."""
    from tui.manifest import read_manifest

    manifest = read_manifest(Path(args.manifest))
    if args.dry_run:
        if args.json:
            ctx.print_json([e.to_dict() for e in manifest.entries])
        else:
            for e in manifest.entries:
                size = sum(f.size or 0 for f in e.files)
                where = clean_line(f"{e.id}: {e.repo or e.url} @ {e.revision or '-'}")
                print(f"would fetch {where} ({len(e.files)} files, {fmt.size(size)})")
        return 0
    from tui.cli.import_run import run_import

    return run_import(ctx, manifest, start=not args.no_download, as_json=args.json)
