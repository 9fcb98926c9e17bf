"""`python -m bench [--quick]`: run every suite, print the table, write results/latest.json."""

from __future__ import annotations

import argparse

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
from .common import gemm_peak_gflops, machine, print_table, write_results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="skip the multi-seed full fits")
    args = parser.parse_args()
    meta = machine()
    peak = gemm_peak_gflops()
    meta["gemm_peak_gflops_f32"] = peak
    print(", ".join(f"{key} {value}" for key, value in meta.items()))
    print(f"numpy float32 GEMM peak measured in this run: {peak:.1f} GFLOP/s")
    print("GFLOP/s counts 2*n*k*d per distance pass, as a GEMM would; ratio = ours / reference\n")
    rows = engine.run(quick=args.quick)
    rows += scoring.run(quick=args.quick)
    system_rows, facts = system.run()
    rows += system_rows
    stream_rows, stream_facts = streaming.run()
    rows += stream_rows
    facts.update(stream_facts)
    rows += images.run()
    serving_lines, serving_facts = serving.run()
    facts.update(serving_facts)
    floor_lines, floor_facts = floors.run()
    facts.update(floor_facts)
    regression_lines, regression_facts = regression.run()
    facts.update(regression_facts)
    replica_lines, replica_facts = replicas.run()
    facts.update(replica_facts)
    host_lines, host_facts = hosts.run()
    facts.update(host_facts)
    dataset_lines, dataset_facts = datasets.run(quick=args.quick)
    facts.update(dataset_facts)
    print_table(rows, peak)
    print()
    print("\n".join(serving_lines + [""] + floor_lines + [""] + regression_lines + [""] + replica_lines + [""] + host_lines + [""]
                    + dataset_lines))
    print()
    for key, value in facts.items():
        print(f"{key:<32} {value:8.2f}")
    meta.update(facts)
    write_results(rows, meta)


if __name__ == "__main__":
    main()
