"""The benchmark through two worker trees beside its baselines, in one run over loopback.

    python bench/run.py [--rate 40] [--seconds 3] [--quic-mb 20] [--udp-mb 120] [--no-runtime]

Prints one table (measure, value, baseline, ratio): the worker -> worker QUIC tunnel beside bare
aioquic, the worker UDP benchmark beside iperf3 at the same offered rate and a raw socket pair,
registration -> tunnel up, CPU seconds per MB in the worker trees, the sans-I/O core alone, and
(unless --no-runtime) the figures of bench/actors.py and bench/rendezvous.py. Writes it, with a
plot of throughput over time, to bench/out/ (table.txt, throughput.png). See
docs/PERFORMANCE.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import (  # noqa: E402
    Measure,
    aioquic_stream,
    iperf3_udp,
    progress,
    raw_udp,
    sansio_udp,
)
from tree_runs import tree_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
Row = tuple[str, str, str, str]


def mb(value: float) -> str:
    return f"{value:.1f} MB/s"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "-"


def rows(raw: Measure, iperf: Measure, paced: Measure, adaptive: Measure, quic: Measure,
         rate: float) -> list[Row]:
    return [
        ("raw Python UDP pair (1200 B), goodput", mb(raw.mb_per_s), "-", "-"),
        ("raw Python UDP pair, loss", pct(raw.loss), "-", "-"),
        (f"iperf3 -u at {rate:g} MB/s, goodput", mb(iperf.mb_per_s), f"offered {rate:g} MB/s",
         ratio(iperf.mb_per_s, rate)),
        (f"sans-I/O at {rate:g} MB/s, goodput", mb(paced.mb_per_s),
         f"iperf3 {mb(iperf.mb_per_s)}", ratio(paced.mb_per_s, iperf.mb_per_s)),
        (f"sans-I/O at {rate:g} MB/s, goodput", mb(paced.mb_per_s), f"raw {mb(raw.mb_per_s)}",
         ratio(paced.mb_per_s, raw.mb_per_s)),
        (f"sans-I/O at {rate:g} MB/s, loss", pct(paced.loss), f"iperf3 {pct(iperf.loss)}", "-"),
        ("sans-I/O adaptive, goodput", mb(adaptive.mb_per_s), f"raw {mb(raw.mb_per_s)}",
         ratio(adaptive.mb_per_s, raw.mb_per_s)),
        ("sans-I/O adaptive, loss", pct(adaptive.loss), f"raw {pct(raw.loss)}", "-"),
        ("bare aioquic, one stream (uvloop)", mb(quic.mb_per_s), f"raw {mb(raw.mb_per_s)}",
         ratio(quic.mb_per_s, raw.mb_per_s)),
    ]


def tree_rows(trees: dict[str, Any], raw: Measure, iperf: Measure, quic: Measure,
              rate: float) -> list[Row]:
    udp, tunnel = trees["udp"], trees["quic"]
    return [
        ("worker -> worker QUIC tunnel, one stream", mb(tunnel.mb_per_s),
         f"bare aioquic {mb(quic.mb_per_s)}", ratio(tunnel.mb_per_s, quic.mb_per_s)),
        (f"worker UDP benchmark at {rate:g} MB/s, goodput", mb(udp.mb_per_s),
         f"iperf3 {mb(iperf.mb_per_s)}", ratio(udp.mb_per_s, iperf.mb_per_s)),
        (f"worker UDP benchmark at {rate:g} MB/s, goodput", mb(udp.mb_per_s),
         f"raw {mb(raw.mb_per_s)}", ratio(udp.mb_per_s, raw.mb_per_s)),
        (f"worker UDP benchmark at {rate:g} MB/s, loss", pct(udp.loss),
         f"iperf3 {pct(iperf.loss)}", "-"),
        ("registration -> tunnel up (both sides)", f"{trees['tunnel_up_ms']:.0f} ms", "-", "-"),
        ("CPU s per MB, worker trees, UDP run", f"{trees['udp_cpu_per_mb']:.3f} s", "-", "-"),
        ("CPU s per MB, worker trees, QUIC run", f"{trees['quic_cpu_per_mb']:.3f} s", "-", "-"),
    ]


def runtime_figures() -> list[str]:
    """The last lines of bench/actors.py and bench/rendezvous.py, as they print them."""
    lines = []
    for script, args in (("actors.py", ["--messages", "50000", "--asks", "500",
                                        "--restarts", "5"]), ("rendezvous.py", [])):
        progress(f"bench/{script}")
        try:
            done = subprocess.run([sys.executable, str(Path(__file__).parent / script), *args],
                                  capture_output=True, text=True, timeout=600)
            out = done.stdout + (f"\n(exit {done.returncode}) {done.stderr[-300:]}"
                                 if done.returncode else "")
        except subprocess.TimeoutExpired:
            out = "(timed out after 600 s)"
        lines += ["", f"bench/{script} {' '.join(args)}:", *out.strip().splitlines()[-14:]]
    return lines


def table(lines: list[Row], measures: list[Measure]) -> str:
    header: Row = ("measure", "value", "baseline", "ratio")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(4)]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in [header, *lines]]
    text.insert(1, "-+-".join("-" * w for w in widths))
    text += ["", *(f"{m.name}: {m.detail}" for m in measures)]
    return "\n".join(text)


def plot(measures: list[Measure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for measure in measures:
        if measure.series:
            times, rates = zip(*measure.series, strict=True)
            axes.plot(times, rates, marker=".", label=measure.name)
    axes.set_xlabel("seconds since the start")
    axes.set_ylabel("MB/s (received, per interval)")
    axes.set_title("Loopback throughput, 1200-byte datagrams")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="offered MB/s (default 40)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measure (default 3)")
    parser.add_argument("--quic-mb", type=float, default=20.0, help="MB on the QUIC stream")
    parser.add_argument("--udp-mb", type=float, default=120.0, help="MB of the worker UDP run")
    parser.add_argument("--no-runtime", action="store_true",
                        help="leave out bench/actors.py and bench/rendezvous.py")
    args = parser.parse_args()
    progress("raw UDP socket pair")
    raw = raw_udp(min(args.seconds, 2.0))
    progress(f"iperf3 -u at {args.rate:g} MB/s")
    iperf = iperf3_udp(args.rate, args.seconds)
    progress(f"sans-I/O sender and receiver at {args.rate:g} MB/s")
    paced = sansio_udp(args.rate, args.seconds)
    progress("sans-I/O sender and receiver, adaptive")
    adaptive = sansio_udp(None, args.seconds)
    progress(f"bare aioquic, {args.quic_mb:g} MB on one stream")
    quic = aioquic_stream(args.quic_mb)
    progress("two worker trees (the demo): a UDP run and a QUIC run")
    trees = tree_runs(args.rate, args.udp_mb, args.quic_mb)
    measures = [raw, iperf, paced, adaptive, quic, trees["udp"], trees["quic"]]
    text = table(tree_rows(trees, raw, iperf, quic, args.rate)
                 + rows(raw, iperf, paced, adaptive, quic, args.rate), measures)
    if not args.no_runtime:
        text += "\n" + "\n".join(runtime_figures())
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "table.txt").write_text(text + "\n")
    plot(measures, OUT / "throughput.png")
    progress(f"wrote {OUT / 'table.txt'} and {OUT / 'throughput.png'}")


if __name__ == "__main__":
    main()
