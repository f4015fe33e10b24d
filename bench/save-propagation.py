#!/usr/bin/env python3
"""How fast, and at what cost, a save that concerns every device reaches a
node's held fleet (issue 14, target 2).

    cargo build --release -p entitle
    bench/save-propagation.py --bin target/release/entitle [--bin other/entitle …]
        [--agents 10000] [--users 200] [--rounds 3]

For each binary, alternating over `--rounds` rounds: starts `entitle serve` on
a fresh SQLite directory with Private Access off for everyone, enrolls
`--agents` simulated agents over `--users` users (`entitle fleet`, each holding
a long-poll), then saves Private Access on for everyone. Reports when 50/90/99/100 %
of the agents were answered with the changed policy (`entitle_syncs_total{outcome="policy"}`),
counted from just before the save was sent; the server's CPU time (/proc) from
then until 2 s after the last answer, less what it used over an equal window
before the save (the agents' own re-polls every 60 s), which covers every
agent's next long-poll; and the devices the sync path read from the store
meanwhile (`entitle_sync_device_reads_total`, absent from builds before it), and
the shared reads of the tenant's versions (`entitle_sync_version_reads_total`, idem).
Only the standard library.
"""

import argparse
import time

from benchlib import Bench, alternate_rounds, follow_propagation, policies_sent, reached

AFTER_S = 2.0


def round_of(binary, args, port):
    with Bench(binary, port) as bench:
        bench.save("private_access", enabled_by_default=False, user_groups=[], device_groups=[])
        bench.fleet(args.agents, args.users)
        if args.pause_before_save:
            # Time to attach a profiler (perf record -g -p PID) to the server.
            print(f"server pid {bench.server.pid}; saving in {args.pause_before_save} s", flush=True)
            time.sleep(args.pause_before_save)
        reads = bench.metric("entitle_sync_device_reads_total")
        version_reads = bench.metric("entitle_sync_version_reads_total")
        pushed_before = policies_sent(bench.base)
        start = time.time()
        bench.save("private_access", enabled_by_default=True)
        samples = follow_propagation(bench, start, pushed_before, settle_s=AFTER_S)
        cpu_start = samples[0][2]
        # The last sample is taken AFTER_S after the count last moved.
        busy_s = samples[-1][0]
        used = samples[-1][2] - cpu_start
        quiet_start = bench.cpu()
        time.sleep(busy_s)
        quiet = bench.cpu() - quiet_start
        answered = samples[-1][1]
        at = {share: reached(samples, share) for share in (0.5, 0.9, 0.99, 1.0)}
        return {
            "answered": answered,
            "p50_ms": at[0.5] * 1000,
            "p90_ms": at[0.9] * 1000,
            "p99_ms": at[0.99] * 1000,
            "all_ms": at[1.0] * 1000,
            "cpu_ms": (used - quiet) * 1000,
            "cpu_us_per_agent": (used - quiet) / max(answered, 1) * 1e6,
            "device_reads": bench.metric("entitle_sync_device_reads_total") - reads,
            "version_reads": bench.metric("entitle_sync_version_reads_total") - version_reads,
        }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", action="append", required=True)
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=19500)
    parser.add_argument("--pause-before-save", type=float, default=0,
                        help="seconds to wait, once the fleet holds, before the save")
    args = parser.parse_args()
    medians = alternate_rounds(args.bin, args.rounds,
                               lambda binary: round_of(binary, args, args.port), digits=1)
    print(f"\n{args.agents} agents held over {args.users} users; one save that turns Private "
          f"Access on for everyone; medians of {args.rounds} rounds:")
    for binary, median in medians.items():
        print(f"{binary}: " + ", ".join(f"{k} {v:.1f}" for k, v in median.items()))


if __name__ == "__main__":
    main()
