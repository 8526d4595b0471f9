"""Pretraining throughput: training samples/s of a recipe's model, the loader's samples/s beside it, and
the achieved FLOP/s (model FLOPs utilisation on a GPU with a known peak).

    python benchmarks/bench_pretrain.py                                   # tiny on this CPU
    python benchmarks/bench_pretrain.py --recipe base --device cuda --precision bf16-mixed --batch-size 256

Data: a mock survey of the observed universe generated into a temporary folder (or --data DIR).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 peak FLOP/s by device name fragment, for MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def build_model(recipe: Path, manifest):
    """The recipe's encoders and model, built the way LightningCLI would (class_path / init_args)."""
    from astrofm.models.multimodal import MultiModalModel
    from astrofm.models.registry import build_encoder

    model_cfg = yaml.safe_load(recipe.read_text())["model"]
    encoders = {m: build_encoder(spec["class_path"], spec.get("init_args", {}))
                for m, spec in model_cfg["encoders"].items()}
    model = MultiModalModel(encoders, embed_dim=model_cfg.get("embed_dim", 128),
                            head_hidden_dim=model_cfg.get("head_hidden_dim"))
    model.set_statistics(manifest.to_dict())
    return model


def loader_throughput(path: str, batch_size: int, workers: int, batches: int) -> float:
    from astrofm.data.loader import LoaderConfig, make_dataloader

    config = LoaderConfig(path=path, batch_size=batch_size, num_workers=workers, resampled=True,
                          samples_per_epoch=batch_size * batches * max(workers, 1))
    iterator = iter(make_dataloader(config))
    next(iterator)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for batch in iterator:
        seen += len(batch["id"])
    return seen / (time.perf_counter() - start)


def training_throughput(model, path: str, batch_size: int, workers: int, steps: int, device: str,
                        precision: str) -> dict:
    from astrofm.augment import AugmentConfig, augment_batch
    from astrofm.data.loader import LoaderConfig, make_dataloader
    from astrofm.losses import MultiModalContrastiveLoss

    model.to(device).train()
    loss_fn = MultiModalContrastiveLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    config = LoaderConfig(path=path, batch_size=batch_size, num_workers=workers, resampled=True,
                          samples_per_epoch=batch_size * (steps + 3), partial_batches=False)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16-mixed")

    def to_device(batch):
        return {k: ({n: t.to(device, non_blocking=True) for n, t in v.items()} if isinstance(v, dict) and
                    k != "labels" else v) for k, v in batch.items()}

    def step(batch):
        batch = to_device(augment_batch(batch, AugmentConfig()))
        with autocast:
            embeddings = model(batch)
            loss, _ = loss_fn(embeddings, batch["mask"], model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return batch

    iterator = iter(make_dataloader(config))
    flops_per_step = None
    for warm in range(3):
        batch = next(iterator)
        if warm == 2:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                step(batch)
            flops_per_step = counter.get_total_flops()
        else:
            step(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for batch in iterator:
        step(batch)
        seen += len(batch["id"])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    steps_done = seen / batch_size
    result = {"samples_per_s": seen / elapsed, "steps": int(steps_done), "seconds": elapsed,
              "flops_per_sample": flops_per_step / batch_size if flops_per_step else None}
    if flops_per_step:
        result["achieved_tflops"] = flops_per_step * steps_done / elapsed / 1e12
        if device.startswith("cuda"):
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
            result["device_name"] = name
            result["mfu"] = flops_per_step * steps_done / elapsed / peak if peak and precision == "bf16-mixed" else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tiny", help="configs/pretrain/NAME.yaml")
    parser.add_argument("--data", default=None, help="dataset folder (default: a fresh mock survey)")
    parser.add_argument("--n", type=int, default=3000, help="objects in the generated mock survey")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from astrofm.data.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        path = args.data
        if path is None:
            from astrofm.sims import MockConfig, generate_mock

            path = str(Path(tmp) / "observed")
            generate_mock(MockConfig(suite="observed", n=args.n, out=path, seed=0, workers=args.workers,
                                     shard_size=250), progress=False)
        manifest = load_manifest(path)
        model = build_model(REPO / "configs" / "pretrain" / f"{args.recipe}.yaml", manifest)
        train = training_throughput(model, path, args.batch_size, args.workers, args.steps, args.device,
                                    args.precision)
        loader = loader_throughput(path, args.batch_size, args.workers, batches=args.steps)
    print(json.dumps({
        "benchmark": "pretrain", "recipe": args.recipe, "device": args.device, "precision": args.precision,
        "batch_size": args.batch_size, "workers": args.workers, "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_samples_per_s": round(train["samples_per_s"], 1),
        "loader_samples_per_s": round(loader, 1),
        "loader_over_train": round(loader / train["samples_per_s"], 2),
        "flops_per_sample": train["flops_per_sample"],
        "achieved_tflops": round(train.get("achieved_tflops") or 0.0, 4),
        "mfu": train.get("mfu"),
        "device_name": train.get("device_name"),
    }))


if __name__ == "__main__":
    main()
