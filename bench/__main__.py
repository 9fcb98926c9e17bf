"""`python -m bench [--quick]`: run every suite and print each one's part as it ends (a full
run takes over an hour on two cores), then the whole table and every fact. results/latest.json
is written after every suite, so a run stopped early keeps what it measured."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from . import (
    datasets,
    engine,
    floors,
    hosts,
    images,
    regression,
    replicas,
    scoring,
    serving,
    streaming,
    system,
)
from .common import Row, gemm_peak_gflops, machine, print_table, write_results

# What one suite gives: rows for the table, lines of its own, and facts for the results.
Part = tuple[list[Row], list[str], dict[str, float]]


def _rows(run: Callable[[], list[Row]]) -> Callable[[], Part]:
    return lambda: (run(), [], {})


def _table(run: Callable[[], tuple[list[Row], dict[str, float]]]) -> Callable[[], Part]:
    def part() -> Part:
        rows, facts = run()
        return rows, [], facts
    return part


def _lines(run: Callable[[], tuple[list[str], dict[str, float]]]) -> Callable[[], Part]:
    def part() -> Part:
        lines, facts = run()
        return [], lines, facts
    return part


def suites(quick: bool) -> list[tuple[str, Callable[[], Part]]]:
    """Every suite in the order a run takes them: in-process first, the Dask fits last."""
    return [
        ("engine", _rows(lambda: engine.run(quick=quick))),
        ("scoring", _rows(lambda: scoring.run(quick=quick))),
        ("system", _table(system.run)),
        ("streaming", _table(streaming.run)),
        ("images", _rows(images.run)),
        ("serving", _lines(serving.run)),
        ("floors", _lines(floors.run)),
        ("regression", _lines(regression.run)),
        ("replicas", _lines(replicas.run)),
        ("hosts", _lines(hosts.run)),
        ("datasets", _lines(lambda: datasets.run(quick=quick))),
    ]


def _fact_lines(facts: dict[str, float]) -> list[str]:
    return [f"{key:<32} {value:8.2f}" for key, value in facts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="skip the multi-seed full fits")
    args = parser.parse_args()
    meta: dict[str, object] = dict(machine())
    peak = gemm_peak_gflops()
    meta["gemm_peak_gflops_f32"] = peak
    print(", ".join(f"{key} {value}" for key, value in meta.items()))
    print(f"numpy float32 GEMM peak measured in this run: {peak:.1f} GFLOP/s")
    print("GFLOP/s counts 2*n*k*d per distance pass, as a GEMM would; ratio = ours / reference\n", flush=True)
    rows: list[Row] = []
    lines: list[str] = []
    facts: dict[str, float] = {}
    for name, suite in suites(args.quick):
        began = time.perf_counter()
        found, said, learned = suite()
        rows += found
        lines += [*said, ""] if said else []
        facts.update(learned)
        print(f"== {name}: {time.perf_counter() - began:.0f} s")
        if found:
            print_table(found, peak)
        print("\n".join(said + _fact_lines(learned)), flush=True)
        write_results(rows, {**meta, **facts})
    print("\n== every suite\n")
    print_table(rows, peak)
    print()
    print("\n".join(lines + _fact_lines(facts)))


if __name__ == "__main__":
    main()
