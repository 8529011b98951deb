"""One vocabulary (:mod:`tui.formatting`): binary sizes with the same digits in the text and
the compact form, one rate, one duration (ETA) and one "ago" format; readable ids from names
in any script; and no second byte formatter anywhere in ``tui/``."""

from __future__ import annotations

import ast
import itertools
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui import formatting as fmt
from tui.safe_paths import slugify

from tests.support.checks import REPO

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(("n", "text", "compact"), [
    (0, "0 B", "0B"), (512, "512 B", "512B"), (999, "999 B", "999B"),
    (1000, "1.0 KiB", "1.0Ki"), (1536, "1.5 KiB", "1.5Ki"), (10 * KiB - 52, "9.9 KiB", "9.9Ki"),
    (10 * KiB - 51, "10 KiB", "10Ki"), (191_100_000, "182 MiB", "182Mi"),
    (999 * MiB, "999 MiB", "999Mi"), (1000 * MiB, "1.0 GiB", "1.0Gi"),
    (4_920_000_000, "4.6 GiB", "4.6Gi"), (int(12.3 * GiB), "12 GiB", "12Gi"),
    (80 * GiB, "80 GiB", "80Gi"), (3 * TiB, "3.0 TiB", "3.0Ti"), (-5 * MiB, "-5.0 MiB", "-5.0Mi"),
    (None, "-", "-"), (float("nan"), "-", "-"), (float("inf"), "-", "-"),
])
def test_sizes(n, text, compact) -> None:
    assert fmt.size(n) == text and fmt.size_compact(n) == compact


@given(st.integers(min_value=1000, max_value=999 << 60))
def test_the_compact_form_has_the_texts_digits_in_five_cells(n: int) -> None:
    text, compact = fmt.size(n), fmt.size_compact(n)
    assert compact == text.replace(" ", "").removesuffix("B")  # 4.6 GiB -> 4.6Gi
    assert len(compact) <= 5 and len(text) <= 8


@given(st.integers(min_value=0, max_value=1 << 62), st.integers(min_value=0, max_value=1 << 62))
def test_a_larger_size_never_reads_smaller(a: int, b: int) -> None:
    def value(n: int) -> float:
        digits, unit = fmt.size(n).split()
        return float(digits) * 1024 ** fmt.UNITS.index(unit)

    if a <= b:
        assert value(a) <= value(b)


def test_rates() -> None:
    assert fmt.rate(35 * MiB) == "35 MiB/s" and fmt.rate_compact(35 * MiB) == "35Mi/s"
    assert fmt.rate(0) == "0 B/s" and fmt.rate(None) == "-" and fmt.rate_compact(None) == "-"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (42, "42s"), (59.9, "59s"), (60, "1m00s"), (320, "5m20s"), (3599, "59m59s"),
    (3600, "1h00m"), (3720, "1h02m"), (100 * 3600 + 59, "100h00m"),
    (None, "-"), (-1, "-"), (float("nan"), "-"), (float("inf"), "-"),
])
def test_one_duration_format_for_etas_and_waits(seconds, text) -> None:
    assert fmt.duration(seconds) == text


def test_ago() -> None:
    now = 1_750_000_000.0
    assert fmt.ago(None, now) == "never" and fmt.ago(0, now) == "never"
    assert fmt.ago(now - 30, now) == "now" and fmt.ago(now + 30, now) == "now"  # clock skew
    assert fmt.ago(now - 5 * 60, now) == "5m ago" and fmt.ago(now - 3 * 3600, now) == "3h ago"
    assert fmt.ago(now - 12 * 86400, now) == "12d ago"


@pytest.mark.parametrize(("name", "slug"), [
    ("ＱＷＥＮ２．５", "qwen2.5"),  # full-width: NFKC
    ("ＱＷＥＮ２．５－７Ｂ（Ｉｎｓｔｒｕｃｔ）", "qwen2.5-7b-instruct"),
    ("通义千问-7B", "通义千问-7b"),  # kept as Unicode letters
    ("通义千问　7B【指令】", "通义千问-7b-指令"),  # ideographic space and brackets
    ("Модель 7B", "модель-7b"), ("ℌ𝔢𝔩𝔩𝔬", "hello"), ("Ünïcödé Modél", "ünïcödé-modél"),
    ("\u0301\u0301-Llama", "llama"),  # an accent with no letter is dropped
    ("\u200bfoo\u202e", "foo"), ("..", "model"), ("-_-", "model"),
])
def test_ids_are_readable_in_any_script(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_an_id_is_cut_between_letters_not_inside_one() -> None:
    name = "a" * 79 + "e\u0301\u0323x"  # e + two accents NFKC cannot fold into one letter
    cut = slugify(name)
    assert cut == "a" * 79 and not unicodedata.category(cut[-1]).startswith("M")


@given(st.text(max_size=120))
def test_ids_are_stable_short_and_never_hex(text: str) -> None:
    slug = slugify(text)
    assert slugify(slug) == slug and 0 < len(slug) <= 80
    assert slug[0] not in "-." and not unicodedata.category(slug[0]).startswith("M")
    assert "\\x" not in slug and "%" not in slug


# -- one formatter: no second one anywhere in tui/ -------------------------------------------

BYTE_UNITS = {"KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"}
LADDER = BYTE_UNITS | {"B", "K", "M", "G", "T", "P"}
# Fixed limits said exactly ("a line 1 MiB", "16 KiB"), not sizes of files or memory.
ALLOWED = {("tui/runtime/backends/openai.py", "_mib")}


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]


def _formats_bytes(fn: ast.FunctionDef) -> bool:
    """A ladder of byte units (a tuple or list with ``B`` or ``KiB``… and another unit), or
    a quotient shown with a byte unit right after it (``f"{n / GiB:.1f} GiB"``)."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Tuple | ast.List):
            words = {e.value for e in node.elts
                     if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if words & (BYTE_UNITS | {"B"}) and len(words & LADDER) >= 2:
                return True
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for value, after in itertools.pairwise(parts):
                if (isinstance(value, ast.FormattedValue)
                        and any(isinstance(b, ast.BinOp) and isinstance(b.op, ast.Div)
                                for b in ast.walk(value.value))
                        and isinstance(after, ast.Constant)
                        and str(after.value).strip().split("/")[0] in BYTE_UNITS):
                    return True
    return False


def test_no_byte_formatter_outside_the_vocabulary() -> None:
    found = []
    for file in sorted((REPO / "tui").rglob("*.py")):
        rel = str(file.relative_to(REPO))
        if rel == "tui/formatting.py":
            continue
        tree = ast.parse(file.read_text())
        found += [f"{rel}:{fn.lineno} {fn.name}" for fn in _functions(tree)
                  if _formats_bytes(fn) and (rel, fn.name) not in ALLOWED]
    assert not found, "format bytes with tui.formatting:\n" + "\n".join(found)


def test_the_formatter_check_finds_a_formatter() -> None:
    code = ('def human(n):\n    for u in ("B", "KiB", "MiB"):\n        n /= 1024\n'
            'def short(n):\n    for u in ("B", "K", "M", "G"):\n        n /= 1024\n'
            'def gib(n):\n    return f"{n / 2**30:.1f} GiB"\n'
            'def limit(n):\n    return f"{n >> 20} MiB limit"\n'
            'def count(n):\n    return f"{n / 1e6:.1f}M"\n')
    assert [fn.name for fn in _functions(ast.parse(code)) if _formats_bytes(fn)] == [
        "human", "short", "gib"]
