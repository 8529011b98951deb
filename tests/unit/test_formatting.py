"""Human-readable numbers used by the CLI."""

from __future__ import annotations

import pytest

from tui import formatting as fmt


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (0, "-"), (12, "12"), (1500, "1.5K"), (135_000_000, "135M"),
     (494_032_768, "494M"), (999_885_952, "1.0B"), (7_615_616_512, "7.6B"),
     (123_400_000_000, "123B"), (1_500_000_000_000, "1.5T")],
)
def test_params(n, text) -> None:
    assert fmt.params(n) == text


def test_sizes_rates_and_tables() -> None:
    assert fmt.size(None) == "-" and fmt.size(4 * 2**30) == "4.0 GiB"
    assert fmt.rate(None) == "-" and fmt.rate(35 * 2**20) == "35 MiB/s"
    assert fmt.ago(None) == "never" and fmt.ago(100.0, now=160.0) == "1m ago"
    assert fmt.table(["A", "BB"], [["xyz", "1"]]) == "A    BB\nxyz  1"
