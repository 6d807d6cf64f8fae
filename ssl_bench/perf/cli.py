"""`ssl-bench-perf`: arguments, sizes, the run of every measurement and the output files."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from ssl_bench.data import load_data
from ssl_bench.device import resolve_device, resolve_precision
from ssl_bench.errors import UserError
from ssl_bench.interrupts import stop_cleanly
from ssl_bench.paths import argument_path
from ssl_bench.perf.conventional import conventional_images
from ssl_bench.perf.measure import (
    Sizes,
    measure_evaluator,
    measure_flops,
    measure_jobs,
    measure_memory,
    measure_pipelines,
    measure_precision,
)
from ssl_bench.perf.results import Recorder, markdown_table, write_outputs
from ssl_bench.perf.steps import DEFAULT_DATA_ROOT, SEED, TASKS, compose_config, data_overrides
from ssl_bench.schema import count, positive_int, validate

PARITY_NOTES = [
    "Both pipelines feed the same model, head, loss, optimiser and step code (`Trainer`); "
    "only the batch source differs. The conventional one decodes/serves PIL images per sample, "
    "applies torchvision RandomCrop/RandomHorizontalFlip/ToTensor/Normalize and the task's "
    "pseudo-labelling per sample in DataLoader workers, then collates.",
    "With an image folder the conventional pipeline decodes each JPEG whenever a sample is drawn, "
    "as torchvision's ImageFolder does, while ours decoded the set once into a cached tensor; "
    "`--conventional-source memory` serves PIL images from an in-memory array instead "
    "(torchvision's CIFAR10 style) to leave decoding out.",
    "Random draws come from each worker's RNG: same distributions as ours, not the same numbers. "
    "With the randomness off, the conventional samples equal ours (tests/test_perf.py).",
    "RandomCrop pads with the mean pixel rounded to uint8; ours pads normalised images with "
    "exact zeros (the mean pixel).",
    "Rotation: the conventional batch is image-major (4 rotations of an image adjacent), ours "
    "rotation-major; the model sees the same set of inputs.",
    "Inpainting random masks (random_block/random_region) are drawn per sample with the task's "
    "own mask function; central masks are identical.",
    "On CPU the conventional DataLoader workers and the training threads share the same cores; "
    "that contention is part of what is measured.",
    "FLOP counts cover convolutions and matmuls only (BatchNorm, ReLU, pooling uncounted); on "
    "CUDA, cuDNN convolutions may use TF32 while the reference torch.mm is strict float32.",
    "Peak RSS is a fresh child process's high-water mark (Python, torch, data and evaluator), "
    "restarted just before the evaluator where Linux allows; `eval_rss_before_eval_mb` is what "
    "was resident then. The evaluator also holds the test set's conv2 features and indexes the "
    "cache into per-K copies, so the peak can exceed the theoretical cache size.",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ssl-bench-perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=argument_path, default=DEFAULT_DATA_ROOT,
                   help="CIFAR-10 (image folder or torchvision files); synthetic data when missing")
    p.add_argument("--out", type=argument_path, default="runs/perf.csv",
                   help="CSV path; the Markdown table goes next to it")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for tests, not for numbers")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated pretext tasks")
    p.add_argument("--parts", default="abcdefg",
                   help="which measurements: a (batch build share), b (vs conventional), c (evaluator), "
                        "d (FLOP/s), e (memory), f (fp32 vs bf16), g (one job vs one per core)")
    p.add_argument("--steps", type=positive_int, default=None, help="timed training steps per measurement")
    p.add_argument("--repeats", type=positive_int, default=None, help="timing windows (median reported)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: train.batch_size (128)")
    p.add_argument("--workers", type=count, default=2, help="conventional DataLoader workers")
    p.add_argument("--eval-k", type=positive_int, default=None, help="labels per class for (c) (default 100)")
    p.add_argument("--eval-steps", type=positive_int, default=None,
                   help="evaluator steps for (c); default: what the profile gives K")
    p.add_argument("--memory-k", type=positive_int, default=5000,
                   help="labels per class for (e) (5000 = all)")
    p.add_argument("--conventional-source", choices=("auto", "files", "memory"), default="auto",
                   help="files: decode the JPEGs per sample (torchvision ImageFolder); memory: PIL "
                        "images from an in-memory array (torchvision CIFAR10); auto: files when "
                        "--data-root is an image folder")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. backbone=nin precision=bf16")
    args = p.parse_args(argv)
    unknown = sorted(set(args.tasks.split(",")) - set(TASKS))
    if unknown:
        p.error(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    if not args.parts or set(args.parts) - set("abcdefg"):
        p.error(f"--parts takes letters from abcdefg, got {args.parts!r}")
    return args


def make_sizes(args: argparse.Namespace, cfg: DictConfig, device: torch.device) -> Sizes:
    """Full size fits ~10 minutes on a 2-core CPU; --quick is seconds."""
    if args.quick:
        sizes = Sizes(batch_size=16, steps=1, repeats=1, warmup=1, eval_k=10, eval_steps=4,
                      memory_k=args.memory_k, matmul_n=512, matmul_reps=2)
    else:
        sizes = Sizes(batch_size=int(cfg.train.batch_size), steps=24, repeats=3, warmup=2,
                      eval_k=100, eval_steps=None, memory_k=args.memory_k,
                      matmul_n=2048 if device.type == "cpu" else 8192, matmul_reps=5, min_window_s=1.0)
    sizes.batch_size = args.batch_size or sizes.batch_size
    sizes.steps = args.steps or sizes.steps
    sizes.repeats = max(1, min(args.repeats or sizes.repeats, sizes.steps))
    sizes.eval_k = args.eval_k or sizes.eval_k
    sizes.eval_steps = args.eval_steps or sizes.eval_steps
    return sizes


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> None:
    """Run every measurement, print the table, write the CSV and the Markdown report."""
    args = parse_args(argv)
    try:
        with stop_cleanly("ssl-bench-perf"):
            _main(args)
    except UserError as exc:
        print(f"ssl-bench-perf: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _main(args: argparse.Namespace) -> None:
    rec = Recorder()
    root = args.data_root
    extra, fallback = data_overrides(root, args.quick, args.overrides)
    base = [*extra, "progress=false", *args.overrides]
    device = resolve_device(args.device)
    validate(compose_config(base))
    auto_precision = resolve_precision(compose_config(base).precision, device)
    base.append(f"precision={auto_precision}")  # every composed config gets the resolved one
    cfg = compose_config(base)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(SEED)
    sizes = make_sizes(args, cfg, device)
    if fallback:
        rec.say(f"NOTE: {fallback}")
    data = load_data(cfg.data)
    rec.say(f"data: {data.source}, {len(data.unlabeled)} unlabeled / {len(data.train)} train / "
            f"{len(data.test)} test images; device {device}, {torch.get_num_threads()} threads; {sizes}")
    base_images, source = conventional_images(data, root, args.conventional_source)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    eval_setting = "not measured"

    def header() -> list[str]:
        lines = [
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {time.perf_counter() - rec.start:.0f} s; "
            f"torch {torch.__version__}; device {device} ({hardware}); parts {args.parts}",
            f"data: {data.source}" + (f" (**{fallback}**)" if fallback else ""),
            f"conventional pipeline: {source}; DataLoader with {args.workers} persistent workers",
            f"backbone {cfg.backbone.name}, batch {sizes.batch_size}, precision {cfg.precision}, "
            f"channels_last {cfg.channels_last}; {sizes.steps} timed steps in {sizes.repeats} windows "
            f"(median) after {sizes.warmup} warm-up",
            f"evaluator (c): {eval_setting}; memory (e): K={sizes.memory_k} clamped to the smallest class",
        ]
        return (["**--quick: tiny sizes, the numbers are not meaningful**"] if args.quick else []) + lines

    def save() -> Path:  # after every part, so a failure late in the run keeps the rest
        return write_outputs(rec.rows, Path(args.out), header(), PARITY_NOTES)

    if set(args.parts) & set("ab"):
        images = data.unlabeled.to(device)
        for name in args.tasks.split(","):
            versus = f" vs conventional, {args.workers} workers" if "b" in args.parts else ""
            rec.say(f"{name}: ours{versus}")
            measure_pipelines(name, compose_config([*base, f"task={name}"]), data, images, base_images,
                              device, sizes, args.workers, rec, conventional="b" in args.parts)
            save()
        del images
    if "c" in args.parts:
        rec.say("evaluator: cached conv2 features vs recomputing conv1-conv2")
        eval_setting = measure_evaluator(cfg, data, device, sizes, rec)
        save()
    if "d" in args.parts:
        rec.say("FLOP/s: backbone training vs float32 matmul")
        measure_flops(cfg, data, device, sizes, rec)
        save()
    if "e" in args.parts:
        rec.say("peak memory of the cached-feature evaluator (fresh process)")
        measure_memory(cfg, device, sizes, rec)
        save()
    if "f" in args.parts:
        rec.say(f"precision: fp32 vs bf16 autocast (auto picks {auto_precision} here)")
        measure_precision(cfg, data, device, sizes, rec, auto_precision)
        save()
    if "g" in args.parts and device.type == "cpu":
        rec.say("parallelism: one process with every core vs one single-thread process per core")
        measure_jobs(cfg, data, sizes, rec)
    md = save()
    print("\n" + "\n".join(header()) + "\n\n" + markdown_table(rec.rows))
    print(f"\nwrote {args.out} and {md}")


if __name__ == "__main__":
    main()
