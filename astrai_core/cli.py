"""The ``astrai`` command: ``astrai <command> ...``.

Each command group registers itself through one ``add_<group>_parser(subparsers)`` function that
sets ``func`` (called with the parsed arguments, returns the exit code); add a group by writing
such a function and listing it in :data:`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from astrai_core.errors import AstraiError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="data folder (default: $ASTRAI_HOME or the user data folder)")
    p.add_argument("--collection", default="default", help="document collection (default: %(default)s)")


# ---- astrai index ----------------------------------------------------------------------------
def add_index_parser(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser("index", help="manage indexed documents (add, list, remove, search)")
    isub = index.add_subparsers(dest="index_command", required=True, metavar="{add,list,remove,search}")

    p = isub.add_parser("add", help="index files or folders (folders recurse)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--password", default=None, help="password for encrypted PDFs")
    p.add_argument("--embedder", default=None, help="local sentence-transformers folder (default: bundled)")
    _add_common(p)
    p.set_defaults(func=cmd_index_add)

    p = isub.add_parser("list", help="list indexed documents")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_common(p)
    p.set_defaults(func=cmd_index_list)

    p = isub.add_parser("remove", help="remove documents (a folder removes all documents under it)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _add_common(p)
    p.set_defaults(func=cmd_index_remove)

    p = isub.add_parser("search", help="search the indexed documents")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5, help="number of results (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {file, page, score, text}")
    p.add_argument("--embedder", default=None, help="local sentence-transformers folder (default: bundled)")
    _add_common(p)
    p.set_defaults(func=cmd_index_search)


def _open(args: argparse.Namespace, create: bool = True):
    from astrai_core.paths import user_data_dir
    from astrai_core.rag import Collection, load_embedder

    data_dir = user_data_dir(args.data_dir)
    if not create and not Collection.exists(data_dir, args.collection):
        return None
    embedder = load_embedder(args.embedder) if getattr(args, "embedder", None) else None
    return Collection.open(data_dir, args.collection, embedder=embedder)


def _progress_printer(stream) -> Callable:
    last = [0.0]

    def show(p) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and p.files_done < p.files_total:
            return
        last[0] = now
        eta = f", ETA {p.eta_s:.0f}s" if p.eta_s is not None else ""
        print(f"\r[{p.files_done}/{p.files_total} files] {p.pages} pages, {p.chunks} chunks{eta}   ",
              end="", file=stream, flush=True)

    return show


def cmd_index_add(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        print(f"error: {p}: no such file or folder", file=sys.stderr)
    with _open(args) as coll:
        report = coll.add([p for p in args.paths if p not in missing], password=args.password,
                          progress=_progress_printer(sys.stderr) if sys.stderr.isatty() else None)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for o in report.outcomes:
        detail = f"{o.pages} pages, {o.chunks} chunks" if o.status in ("indexed", "unchanged") else o.reason
        print(f"{o.status:9} {o.path}" + (f"  ({detail})" if detail else ""))
    print(f"{len(report.indexed)} indexed, {len(report.unchanged)} unchanged, {len(report.failed)} failed")
    return 1 if (report.failed or missing) else 0


def cmd_index_list(args: argparse.Namespace) -> int:
    coll = _open(args, create=False)
    docs = [] if coll is None else coll.documents()
    if coll is not None:
        coll.close()
    if args.json:
        print(json.dumps([{"path": d.path, "status": d.status, "pages": d.pages, "chunks": d.chunks,
                           "notes": d.notes} for d in docs], ensure_ascii=False, indent=2))
    else:
        for d in docs:
            print(f"{d.status:8} {d.pages:5} pages {d.chunks:6} chunks  {d.path}" + (f"  [{d.notes}]" if d.notes else ""))
        print(f"{len(docs)} documents in collection {args.collection!r}")
    return 0


def cmd_index_remove(args: argparse.Namespace) -> int:
    coll = _open(args, create=False)
    removed = [] if coll is None else coll.remove(args.paths)
    if coll is not None:
        coll.close()
    for p in removed:
        print(f"removed {p}")
    if not removed:
        print(f"error: nothing to remove for {', '.join(args.paths)} in collection {args.collection!r}",
              file=sys.stderr)
        return 1
    return 0


def cmd_index_search(args: argparse.Namespace) -> int:
    coll = _open(args, create=False)
    hits = [] if coll is None else coll.search(args.query, k=args.k)
    if coll is not None:
        coll.close()
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no results")
    for n, h in enumerate(hits, 1):
        mark = "" if h.relevant else "  (weak match)"
        print(f"[{n}] {h.file} p.{h.page}  score {h.score:.4f}{mark}\n    {' '.join(h.text.split())[:300]}")
    return 0


# ---- entry point -----------------------------------------------------------------------------
def add_assistant_parsers(sub: argparse._SubParsersAction) -> None:
    """``astrai ask`` / ``chat`` / ``serve``: defined in :mod:`astrai_core.assistant`."""
    from astrai_core.assistant import add_commands

    add_commands(sub)


COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [add_index_parser, add_assistant_parsers]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astrai", description="AstrAI: offline Chinese-English assistant")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AstraiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished files are kept, the next run resumes the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
