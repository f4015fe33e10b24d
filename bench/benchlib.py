"""What the fleet benchmarks share: a server on a fresh SQLite directory, a
tenant with an admin token, a fleet of simulated agents holding long-polls,
and readings of the server's metrics and CPU time. Only the standard library."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = "fleet-bench-root"
SETTINGS_FIELDS = ("enabled_by_default", "user_groups", "device_groups", "logout_on_enable",
                   "exclude_user_groups", "exclude_device_groups", "rollout_percent")


def call(base, method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read().decode()
        return json.loads(text) if text else None


def metric(base, name, labels=None):
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    shown = re.escape("{" + labels + "}") if labels else r"(?:\{[^}]*\})?"
    match = re.search(rf"^{name}{shown} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def cpu_seconds(pid):
    """User and system CPU time the process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def policies_sent(base):
    """Syncs answered with a changed policy: pushed to a held long-poll, or
    answered to an agent that was between two long-polls."""
    return metric(base, "entitle_syncs_total", 'outcome="policy"')


class Bench:
    """A server, its `fleet` tenant and whatever else was started; stopped
    (and its data removed) on leaving the `with` block."""

    def __init__(self, binary, port):
        self.binary = binary
        self.base = f"http://127.0.0.1:{port}"
        self.data = tempfile.mkdtemp(prefix="fleet-bench-")
        self.processes = []
        self.server = None
        self.tenant = None
        self.admin = None

    def __enter__(self):
        self.server = self.start(
            [self.binary, "serve", "--listen", self.base.removeprefix("http://"),
             "--data-dir", self.data, "--bootstrap-admin-token", ROOT,
             "--enrollments-per-minute", "4000000", "--log-format", "json"],
            quiet=True)
        for _ in range(100):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        self.tenant = call(self.base, "POST", "/api/v1/tenants", ROOT, {"name": "fleet"})
        self.admin = call(self.base, "POST", "/api/v1/tenants/fleet/tokens", ROOT,
                          {"name": "bench", "role": "admin"})["token"]
        return self

    def __exit__(self, *_):
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    def start(self, command, quiet=False):
        output = subprocess.DEVNULL if quiet else sys.stderr
        process = subprocess.Popen(command, stdout=output, stderr=output)
        self.processes.append(process)
        return process

    def api(self, method, path, body=None):
        return call(self.base, method, "/api/v1/tenants/fleet" + path, self.admin, body)

    def save(self, service, **changes):
        """Saves a service's settings with `changes` over the stored ones."""
        path = f"/entitlements/{service}"
        settings = self.api("GET", path)
        settings.update(changes)
        self.api("PUT", path, {k: v for k, v in settings.items() if k in SETTINGS_FIELDS})

    def fleet(self, agents, users):
        """Starts `agents` simulated agents over `users` new users and waits
        until every one holds a long-poll."""
        fleet = self.start(
            [self.binary, "fleet", "--server", self.base,
             "--enrollment-key", self.tenant["enrollment_key"], "--agents", str(agents),
             "--create-users", str(users), "--token", self.admin, "--tenant", "fleet",
             "--parallel", "64", "--duration", "600"])
        deadline = time.time() + 900
        while self.metric("entitle_held_long_polls") < agents:
            if time.time() > deadline or fleet.poll() is not None:
                sys.exit("the fleet did not hold its long-polls")
            time.sleep(0.5)
        time.sleep(2)

    def user_names(self):
        users, cursor = [], None
        while True:
            page = self.api("GET", "/users?limit=100" + (f"&cursor={cursor}" if cursor else ""))
            users += [u["user_name"] for u in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                return users

    def patch_user(self, user_name, body):
        self.api("PATCH", "/users/" + urllib.parse.quote(user_name, safe=""), body)

    def metric(self, name, labels=None):
        return metric(self.base, name, labels)

    def cpu(self):
        return cpu_seconds(self.server.pid)


def follow_propagation(bench, start, pushed_before, settle_s=5, limit_s=60):
    """Samples (seconds since `start`, policies pushed since, server CPU)
    until the count has stood still for `settle_s` (or `limit_s` passed).
    Samples before `start` (a change announced ahead) have negative times."""
    samples, last_change = [], time.time()
    while time.time() < start + limit_s:
        pushed = policies_sent(bench.base) - pushed_before
        now = time.time()
        if not samples or pushed != samples[-1][1]:
            last_change = now
        samples.append((now - start, pushed, bench.cpu()))
        if pushed > 0 and now - last_change > settle_s:
            break
        time.sleep(0.02)
    return samples


def reached(samples, share):
    """Seconds from the start until `share` of the agents answered were, or
    None; the agents answered are those counted when the count settled."""
    concerned = samples[-1][1] if samples else 0
    return next((t for t, n, _ in samples if concerned and n >= share * concerned), None)


def alternate_rounds(binaries, rounds, round_of, digits=2):
    """Runs `round_of(binary)` for each binary in turn, `rounds` times over,
    so that the binaries compared see the machine in the same states; prints
    each round's figures and returns each binary's medians."""
    results = {binary: [] for binary in binaries}
    for n in range(rounds):
        for binary in binaries:
            result = round_of(binary)
            results[binary].append(result)
            print(f"round {n + 1}, {binary}: "
                  + ", ".join(f"{k} {v:.{digits}f}" for k, v in result.items()), flush=True)
    return {binary: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            for binary, runs in results.items()}
