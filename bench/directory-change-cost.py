#!/usr/bin/env python3
"""What a directory change that concerns one user costs a node holding a
large fleet (issue 14, target 2: work proportional to the devices whose
policy changes, not to the devices held).

    cargo build --release -p entitle
    bench/directory-change-cost.py --bin target/release/entitle [--bin other/entitle …]
        [--agents 10000] [--users 1000] [--changes 20] [--rounds 3]

For each binary, alternating over `--rounds` rounds: starts `entitle serve`
on a fresh SQLite directory, turns Internet Access on for everyone, enrolls
`--agents` simulated agents over `--users` users (`entitle fleet`, each holding
a long-poll), then deactivates `--changes` users one by one (each change is
one rebuild, and turns Internet Access off on that user's devices). The
server's CPU time (`/proc/PID/stat`) is read over 0.5 s after each change and
over 0.5 s before it. Reports the CPU each change cost beyond its quiet window
(the agents' own re-polls every 60 s fall in both), the held long-polls that decided again
(`entitle_held_long_poll_rechecks_total`, absent before it existed) and the
agents answered with a changed policy. Only the standard library.
"""

import argparse
import time

from benchlib import Bench, alternate_rounds

WINDOW_S = 0.5


def round_of(binary, args, port):
    with Bench(binary, port) as bench:
        bench.save("internet_access", enabled_by_default=True, user_groups=[], device_groups=[])
        bench.fleet(args.agents, args.users)
        users = bench.user_names()[: args.changes]
        rechecks = bench.metric("entitle_held_long_poll_rechecks_total")
        pushed = bench.metric("entitle_policy_changes_pushed_total")
        # The fleet's agents re-poll every 60 s whatever happens: each change
        # is measured over a window right after it, less an equal window right
        # before it, so that both see the same background.
        quiet = busy = 0.0
        for user in users:
            before = bench.cpu()
            time.sleep(WINDOW_S)
            changed = bench.cpu()
            bench.patch_user(user, {"active": False})
            time.sleep(WINDOW_S)
            quiet += changed - before
            busy += bench.cpu() - changed
        return {
            "cpu_per_change_ms": (busy - quiet) / len(users) * 1000,
            "rechecks_per_change": (bench.metric("entitle_held_long_poll_rechecks_total")
                                    - rechecks) / len(users),
            "pushed_per_change": (bench.metric("entitle_policy_changes_pushed_total")
                                  - pushed) / len(users),
            "quiet_cpu_ms": quiet / len(users) * 1000,
        }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", action="append", required=True)
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=19490)
    args = parser.parse_args()
    medians = alternate_rounds(args.bin, args.rounds,
                               lambda binary: round_of(binary, args, args.port))
    print(f"\n{args.agents} agents held over {args.users} users; {args.changes} changes, "
          f"each deactivating one user (about {args.agents / args.users:.0f} devices); medians of "
          f"{args.rounds} rounds:")
    for binary, median in medians.items():
        print(f"{binary}: {median['cpu_per_change_ms']:.1f} ms of server CPU per change, "
              f"{median['rechecks_per_change']:.0f} held long-polls decided again, "
              f"{median['pushed_per_change']:.0f} answered with a changed policy "
              f"(a quiet window: {median['quiet_cpu_ms']:.1f} ms of CPU)")


if __name__ == "__main__":
    main()
