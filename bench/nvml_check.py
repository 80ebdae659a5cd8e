"""Exercise the GPU agent's NVML layer (`drivers/nvml.py`) on real NVIDIA GPUs, timing each call.

For every GPU (or those given with --gpus): name, power-limit range and default, current limit,
instant power (and whether the driver has the instant field or only the averaged reading), then,
unless --read-only, set a limit inside the range (default: the middle of the range), read it back,
watch the instant power for --watch-s, and restore the original limit, whatever happened.

Needs nvidia-ml-py and an NVIDIA driver; setting limits needs root (or CAP_SYS_ADMIN). Never a
traceback: where NVML is absent it says so and exits 3; where setting limits is refused it says why,
still runs the read-only part, and exits 4. `--fake` runs the same code against
`simulators/fake_nvml.py` (a check of this script, not of a GPU).

    .venv/bin/python bench/nvml_check.py                # read, set mid-range, restore
    sudo .venv/bin/python bench/nvml_check.py --limit-fraction 0.8 --watch-s 2
    .venv/bin/python bench/nvml_check.py --read-only
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_header, reproduce_command

from mullet.drivers.nvml import Nvml, NvmlError

EXIT_NO_NVML = 3
EXIT_SET_REFUSED = 4
NO_PERMISSION = 4  # NVML_ERROR_NO_PERMISSION
NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED

T = TypeVar("T")
timings: dict[str, list[float]] = {}


def timed(what: str, call: Callable[[], T]) -> T:
    started = time.perf_counter()
    try:
        return call()
    finally:
        timings.setdefault(what, []).append((time.perf_counter() - started) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, nargs="*", default=None, help="GPU indices (default: all)")
    parser.add_argument("--read-only", action="store_true", help="do not set any limit")
    parser.add_argument(
        "--limit-fraction", type=float, default=0.5, help="where in [min, max] to set the test limit"
    )
    parser.add_argument("--watch-s", type=float, default=1.0, help="instant power samples after setting")
    parser.add_argument("--samples", type=int, default=20, help="power reads timed per GPU")
    parser.add_argument("--fake", action="store_true", help="use the fake NVML (checks this script only)")
    args = parser.parse_args()
    print_header(
        "NVML check",
        "the GPU agent's NVML calls on this machine's GPUs: ranges, instant power, set + restore, timings",
        reproduce_command(
            "nvml_check.py",
            [
                ("--read-only", args.read_only),
                ("--limit-fraction", args.limit_fraction),
                ("--watch-s", args.watch_s),
                ("--samples", args.samples),
                ("--fake", args.fake),
                *([("--gpus", args.gpus)] if args.gpus is not None else []),
            ],
        ),
    )
    if not 0 <= args.limit_fraction <= 1:
        print("--limit-fraction must be within [0, 1]", file=sys.stderr)
        return 2
    try:
        nvml = Nvml(_fake_lib() if args.fake else None)
    except ImportError:
        print("nvidia-ml-py (pynvml) is not installed: pip install nvidia-ml-py")
        return EXIT_NO_NVML
    try:
        gpus = timed("open (init + ranges)", lambda: nvml.open(args.gpus))
    except NvmlError as exc:
        print(f"NVML unavailable: {exc} (code {exc.code}); no NVIDIA driver or GPU here?")
        return EXIT_NO_NVML
    if not gpus:
        print("NVML reports no GPUs")
        nvml.close()
        return EXIT_NO_NVML
    refused = False
    try:
        for gpu in gpus:
            refused |= check_gpu(nvml, gpu, args)
    finally:
        nvml.close()
    print("timings (ms): call  n  median  max")
    for what, samples in timings.items():
        ordered = sorted(samples)
        print(f"  {what:28s} {len(ordered):3d}  {ordered[len(ordered) // 2]:8.3f}  {ordered[-1]:8.3f}")
    if refused:
        print("setting power limits was refused (run as root, or check `nvidia-smi -q -d POWER`)")
        return EXIT_SET_REFUSED
    return 0


def check_gpu(nvml: Nvml, gpu: Any, args: argparse.Namespace) -> bool:
    """Returns True when setting a limit was refused."""
    index = gpu.index
    print(
        f"GPU {index}: {gpu.name}  limit range {gpu.min_limit_w:.1f}-{gpu.max_limit_w:.1f} W,"
        f" default {gpu.default_limit_w:.1f} W"
    )
    original_w = timed("limit read", lambda: nvml.limit_w(index))
    powers = [timed("power read", lambda: nvml.power_w(index)) for _ in range(args.samples)]
    source = "instant field" if nvml.uses_instant_power(index) else "power usage (averaged; no instant field)"
    print(f"  limit now {original_w:.1f} W; power {powers[-1]:.1f} W via {source}")
    if args.read_only:
        return False
    target_w = gpu.min_limit_w + args.limit_fraction * (gpu.max_limit_w - gpu.min_limit_w)
    try:
        timed("limit set", lambda: nvml.set_limit_w(index, target_w))
    except NvmlError as exc:
        why = {NO_PERMISSION: "no permission", NOT_SUPPORTED: "not supported on this GPU"}.get(
            exc.code or -1, f"code {exc.code}"
        )
        print(f"  set limit {target_w:.1f} W refused: {why} ({exc})")
        return True
    try:
        readback_w = timed("limit read", lambda: nvml.limit_w(index))
        print(f"  set {target_w:.1f} W -> reads back {readback_w:.1f} W")
        watch_end = time.perf_counter() + args.watch_s
        samples = []
        while time.perf_counter() < watch_end:
            samples.append((time.perf_counter(), timed("power read", lambda: nvml.power_w(index))))
            time.sleep(0.05)  # sampling period of this diagnostic, not synchronisation
        if samples:
            t0 = samples[0][0]
            trace = ", ".join(
                f"{(t - t0) * 1000:.0f} ms: {w:.0f} W" for t, w in samples[:: max(1, len(samples) // 8)]
            )
            print(f"  power after the set: {trace}")
    finally:
        try:
            timed("limit set", lambda: nvml.set_limit_w(index, original_w))
            print(f"  restored {nvml.limit_w(index):.1f} W (was {original_w:.1f} W)")
        except NvmlError as exc:
            print(f"  RESTORE FAILED: {exc}; set it back with: nvidia-smi -i {index} -pl {original_w:.0f}")
    return False


def _fake_lib() -> Any:
    from mullet.simulators.fake_nvml import FakeGpu, FakeNvml

    return FakeNvml([FakeGpu(demand_w=650), FakeGpu(demand_w=300, no_instant_power=True, deny_set=True)])


if __name__ == "__main__":
    sys.exit(main())
