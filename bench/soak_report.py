#!/usr/bin/env python3
"""bench/soak.sh's report: reads the ghz JSON reports, the CPU times and the RSS samples the script
left in its work directory, prints the soak numbers, and writes the acknowledged Update payload for
strata-soak-check (payload.txt: one "LABEL BASE64_PIXELS" line per sample of one stream).

Prints "acknowledged Update streams: K" (OK streams of both phases: only a stream the server
answered with its UpdateSummary counts; a failed one is an error and fails the soak anyway).
Exit status 1 if any call failed or the RSS growth is not below --rss_limit_pct; 2 on bad input.
"""
import argparse
import json
import os
import sys


def load_phase(work, phase, rpc):
    with open(os.path.join(work, f"{phase}.{rpc}.json")) as f:
        report = json.load(f)
    with open(os.path.join(work, f"{phase}.{rpc}.time")) as f:
        # bash `time` with TIMEFORMAT='%U %S %R': the last line is "user system wall".
        user, system, wall = (float(x) for x in f.read().split()[-3:])
    return report, user + system, wall


def percentile(report, pct):
    for entry in report.get("latencyDistribution") or []:
        if entry.get("percentage") == pct:
            return entry.get("latency", 0) / 1e6
    return float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--update_config", required=True)
    parser.add_argument("--rss_limit_pct", default="5")
    args = parser.parse_args()

    failed = False
    acknowledged = 0
    ghz_cpu = {}
    print(f"{'phase':7} {'rpc':8} {'calls':>8} {'errors':>7} {'calls/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'ghz cpu s':>10} {'wall s':>7}")
    for phase in ("warmup", "soak"):
        for rpc in ("predict", "update"):
            report, cpu, wall = load_phase(args.work, phase, rpc)
            codes = report.get("statusCodeDistribution") or {}
            count = report.get("count", 0)
            ok = codes.get("OK", 0)
            errors = count - ok
            if errors or report.get("errorDistribution"):
                failed = True
                print(f"  {phase} {rpc}: errors {report.get('errorDistribution')} codes {codes}")
            if count == 0:
                failed = True
                print(f"  {phase} {rpc}: no calls completed")
            if rpc == "update":
                acknowledged += ok
            ghz_cpu[phase] = ghz_cpu.get(phase, 0) + cpu
            print(f"{phase:7} {rpc:8} {count:8d} {errors:7d} {report.get('rps', 0):9.1f} "
                  f"{percentile(report, 50):8.2f} {percentile(report, 99):8.2f} {cpu:10.1f} "
                  f"{wall:7.1f}")

    with open(os.path.join(args.work, "server.usage")) as f:
        rss_start, rss_end, server_ticks, ticks_per_s = (int(x) for x in f.read().split())
    _, _, soak_wall = load_phase(args.work, "soak", "predict")
    samples = []
    with open(os.path.join(args.work, "rss.log")) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 2:
                samples.append(int(fields[1]))
    growth = 100.0 * (rss_end - rss_start) / rss_start
    limit = "not checked" if args.rss_limit_pct == "off" else f"limit {args.rss_limit_pct}%"
    print(f"server RSS: {rss_start / 1024:.1f} MiB after warm-up, {rss_end / 1024:.1f} MiB at the "
          f"end, growth {growth:+.2f}% ({limit}); "
          f"{len(samples)} one-second samples, min {min(samples) / 1024:.1f} MiB, "
          f"max {max(samples) / 1024:.1f} MiB")
    if args.rss_limit_pct != "off" and not growth < float(args.rss_limit_pct):
        failed = True
        print(f"  RSS growth {growth:.2f}% is not below {args.rss_limit_pct}%")
    server_cpu = server_ticks / ticks_per_s
    print(f"CPU during the measured {soak_wall:.1f} s: ghz {ghz_cpu['soak']:.1f} s, server "
          f"{server_cpu:.1f} s, of {os.cpu_count() * soak_wall:.1f} core-seconds "
          f"({os.cpu_count()} cores)")

    with open(args.update_config) as f:
        config = json.load(f)
    lines = []
    for message in config["data"]:
        for sample in message["samples"]:
            lines.append(f"{sample['label']} {sample['sample']['pixels']}\n")
    with open(os.path.join(args.work, "payload.txt"), "w") as f:
        f.writelines(lines)
    print(f"acknowledged Update streams: {acknowledged} x {len(lines)} samples = "
          f"{acknowledged * len(lines)} samples")
    print(f"calls: {'FAIL' if failed else 'PASS'} (0 errors required)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
