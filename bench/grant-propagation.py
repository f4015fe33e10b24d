#!/usr/bin/env python3
"""How fast a time-bound grant reaches held agents (issue 15).

    cargo build --release -p entitle
    bench/grant-propagation.py [--agents 10000] [--users 200] [--bin target/release/entitle]

Starts `entitle serve` on a fresh SQLite directory, creates a tenant, enrolls a
fleet of simulated agents (`entitle fleet`, each holding a long-poll), then
creates one grant of Private Access per fleet user, all starting at the same
moment a few seconds ahead (nothing else changes: no save, no poll). The server
wakes the held long-polls at that moment by itself; the script polls
`/metrics` and reports when 50/90/99/100 % of the agents were answered with the
changed policy (`entitle_syncs_total{outcome="policy"}`), counted from the grants'
start, and the server's CPU time from the start until all of them were (from
/proc; it includes each agent's next long-poll). Only the standard library: no
install step.
"""

import argparse
import datetime
import sys
import time

from benchlib import Bench, follow_propagation, policies_sent, reached


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--bin", default="target/release/entitle")
    parser.add_argument("--port", type=int, default=19480)
    parser.add_argument("--lead-seconds", type=float, default=4.0)
    args = parser.parse_args()
    with Bench(args.bin, args.port) as bench:
        base = bench.base
        # Private Access off for everyone, so that the grant is what turns it on.
        bench.save("private_access", enabled_by_default=False, user_groups=[], device_groups=[])
        bench.fleet(args.agents, args.users)
        users = bench.user_names()
        # Each grant is a write and a rebuild, which wakes no held long-poll
        # until the grant starts: they all start together, well after the last
        # is made.
        start = (datetime.datetime.now(datetime.timezone.utc)
                 + datetime.timedelta(seconds=args.lead_seconds + len(users) * 0.1))
        pushed_before = policies_sent(base)
        starts_at = start.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for user in users:
            bench.api("POST", "/grants",
                      {"user": user, "service": "private_access", "starts_at": starts_at,
                       "duration": "1h", "justification": "grant propagation benchmark"})
        if time.time() >= start.timestamp():
            sys.exit("the grants were not all made before their start: raise --lead-seconds")
        if policies_sent(base) != pushed_before:
            sys.exit("a grant changed a policy before its start")
        # Samples until the count has stood still for 5 s (or 60 s passed):
        # the grant concerns every agent but the legacy clients, which ignore
        # grants (the fleet runs one agent in 20 on a client too old for ZPA).
        # Server CPU is sampled with the count: the baseline is the last sample
        # before the start, the cost what it used until the count reached its end.
        samples = follow_propagation(bench, start.timestamp(), pushed_before)
        concerned = samples[-1][1] if samples else 0
        print(f"{args.agents} agents of {len(users)} users, one grant per user starting at {starts_at};"
              f" {concerned:.0f} agents answered with the grant (the others run legacy clients)")
        for share in [0.5, 0.9, 0.99, 1.0]:
            at = reached(samples, share)
            shown = f"{at * 1000:.0f} ms after the grants' start" if at is not None else "not within 60 s"
            print(f"{share * 100:.0f} % of them hold the grant: {shown}")
        before = [cpu for t, _, cpu in samples if t < 0]
        done = next((cpu for _, n, cpu in samples if concerned and n >= concerned), None)
        if before and done is not None:
            used = done - before[-1]
            print(f"server CPU from the start until all held it: {used:.2f} s"
                  f" ({used / concerned * 1e6:.0f} µs per agent answered, its next long-poll included;"
                  f" {used / args.agents * 1e6:.0f} µs per held agent)")


if __name__ == "__main__":
    main()
