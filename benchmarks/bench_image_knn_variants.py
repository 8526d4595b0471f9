"""Image kNN redshift under variants of the embedding and of the distance, each chosen on val, scored on test:
what might close the gap between the kNN and the MLP probe on the same image embeddings (README, bright_griz).

    python benchmarks/bench_image_knn_variants.py --embeddings EMB_DIR [--model MODEL_DIR --data DATA_DIR]

Variants (every one a distance-weighted kNN whose k, whitening and power `fit_knn` chooses on val, as
`astrofm regress` does):
  embedding             the stored image embeddings (the figure `astrofm regress` reports)
  pca                   the embeddings projected on their first d principal components (d chosen on val)
  cross_modal           image queries among the training spectra's embeddings (the shared space)
  local_linear          not an average: a weighted ridge plane through each stamp's neighbours in the kNN's
                        space (probes.fit_local_linear, SDSS DR12's photo-z estimator): how much of the kNN's
                        loss is its averaging, and where in the label range (`by_label_decile`)
  orientation_averaged  (--model, --data) each stamp's embedding averaged over its 8 turns and flips
  pre_head_features     (--model, --data) the image encoder's output before the projection head
Prints ONE JSON object: per variant test r2 and nmad and what was chosen; `by_label_decile`: in ten
equal-count bins of the true label on test, the kNN's and the local plane's mean error and their squared
error as a share of the test variance (each sums over the bins to 1 - R^2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from downstream.regression.metrics import is_redshift_like, nmad, r2  # noqa: E402
from downstream.regression.probes import (  # noqa: E402
    KNN_GRID,
    KNN_POWER_GRID,
    fit_knn,
    fit_local_linear,
    knn_predict,
)

PCA_COMPONENTS = (8, 12, 16, 24, 32, 48, 64)


def load(emb: str, modality: str, target: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(Path(emb) / f"{modality}.parquet", columns=["id", "split", "embedding", target])
    y = table.column(target).to_numpy(zero_copy_only=False).astype(np.float64)
    keep = np.isfinite(y)  # objects without the label take no part, as in `astrofm regress`
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return {"id": np.array(table.column("id").to_pylist())[keep],
            "split": np.array(table.column("split").to_pylist())[keep],
            "x": vectors[keep].astype(np.float32), "y": y[keep], "redshift_like": is_redshift_like(target)}


def rows(table: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    keep = table["split"] == split
    return table["x"][keep], table["y"][keep]


def scored(predicted: np.ndarray, y: np.ndarray, chosen: dict, redshift_like: bool) -> dict:
    """r2 and nmad as `astrofm regress` reports them (for redshift, NMAD of dz / (1 + z))."""
    return {"r2": round(r2(y, predicted), 4), "nmad": round(nmad(y, predicted, redshift_like), 4),
            "chosen": chosen}


def knn_variant(table: dict) -> tuple[dict, float]:
    """Test scores of `fit_knn` on a table's rows, and its best validation MSE (for choices made above it)."""
    probe = fit_knn(*rows(table, "train"), *rows(table, "val"))
    chosen = {k: probe.chosen[k] for k in ("k", "whiten", "power")}
    x_test, y_test = rows(table, "test")
    best_val_mse = min(probe.chosen["val_mse_by_k"].values())
    return scored(probe.predict(x_test), y_test, chosen, table["redshift_like"]), best_val_mse


def local_linear_variant(table: dict) -> tuple[dict, list[dict]]:
    """The local plane's test scores, and `by_label_decile`: where in the label range it and the kNN err."""
    train, val = rows(table, "train"), rows(table, "val")
    x_test, y_test = rows(table, "test")
    local = fit_local_linear(*train, *val)
    chosen = {k: local.chosen[k] for k in ("k", "components", "ridge", "whiten")}
    predicted = {"knn": fit_knn(*train, *val).predict(x_test), "local_linear": local.predict(x_test)}
    edges = np.quantile(y_test, np.linspace(0.0, 1.0, 11))
    which = np.clip(np.searchsorted(edges, y_test, side="right") - 1, 0, 9)
    variance = float(np.var(y_test)) * len(y_test)
    deciles = []
    for b in range(10):
        rows_b = which == b
        entry = {"label": [round(float(edges[b]), 4), round(float(edges[b + 1]), 4)], "n": int(rows_b.sum())}
        for name, p in predicted.items():
            error = p[rows_b] - y_test[rows_b]
            entry[f"{name}_bias"] = round(float(error.mean()), 4) if rows_b.any() else None
            entry[f"{name}_mse_share"] = round(float(np.sum(error ** 2)) / variance, 4)
        deciles.append(entry)
    return scored(predicted["local_linear"], y_test, chosen, table["redshift_like"]), deciles


def pca_variant(table: dict) -> dict:
    """The kNN on the first d principal components of the training rows, d of PCA_COMPONENTS chosen by
    validation MSE: whether the low-variance directions the whitening lifts are noise to the kNN."""
    x_train, _ = rows(table, "train")
    mean = x_train.mean(axis=0)
    eigenvalues, vectors = np.linalg.eigh(np.cov(x_train, rowvar=False))
    vectors = vectors[:, np.argsort(eigenvalues)[::-1]]
    results = {}
    for d in (d for d in PCA_COMPONENTS if d < table["x"].shape[1]):
        projected = dict(table, x=((table["x"] - mean) @ vectors[:, :d]).astype(np.float32))
        results[d] = knn_variant(projected)
    best = min(results, key=lambda d: results[d][1])
    result = results[best][0]
    result["chosen"]["components"] = best
    result["test_r2_by_components"] = {d: results[d][0]["r2"] for d in results}
    return result


def cross_modal_variant(image: dict, spectrum: dict) -> dict:
    """Image queries, training spectra as the neighbours (plain distances: the space the two share)."""
    x_ref, y_ref = rows(spectrum, "train")
    (x_val, y_val), (x_test, y_test) = rows(image, "val"), rows(image, "test")
    grid = [(k, p) for k in KNN_GRID for p in KNN_POWER_GRID]
    k, p = min(grid, key=lambda c: np.mean((knn_predict(x_ref, y_ref, x_val, *c) - y_val) ** 2))
    predicted = knn_predict(x_ref, y_ref, x_test, k, p)
    return scored(predicted, y_test, {"k": k, "power": p}, image["redshift_like"])


def dihedral(images: dict):
    """The 8 turns-and-flips of every array shaped like the flux (flux, ivar); the identity first."""
    import torch

    shape = images["flux"].shape
    if shape[-1] != shape[-2]:
        raise ValueError(f"stamps of {shape[-2]} x {shape[-1]} pixels: quarter turns need square stamps")
    for turns in range(4):
        for flip in (False, True):
            def move(x, turns=turns, flip=flip):
                x = torch.rot90(x, turns, dims=(-2, -1))
                return torch.flip(x, dims=(-1,)) if flip else x
            yield {name: move(v) if torch.is_tensor(v) and v.shape == shape else v for name, v in images.items()}


def model_variants(model_dir: str, data: str, image: dict) -> dict[str, dict]:
    """Re-embed the stamps: averaged over their 8 orientations, and before the projection head."""
    import torch
    from tqdm import tqdm

    from astrofm.data.manifest import load_manifest
    from astrofm.embedstore.predict import EmbedStream
    from astrofm.models.io import load_model

    model = load_model(model_dir)
    manifest = load_manifest(data)
    stream = EmbedStream(data, [s for s in manifest.splits if manifest.count(s)], ["image"], 256)
    ids, averaged, features = [], [], []
    with torch.no_grad():
        for batch in tqdm(stream, total=len(stream), desc="re-embedding stamps", file=sys.stderr):
            keep = batch["mask"]["image"].bool().nonzero().squeeze(1)
            encoded = [model.encoders["image"](view) for view in dihedral(batch["image"])]  # the identity first
            ids += [batch["id"][i] for i in keep.tolist()]
            mean_direction = sum(model.heads["image"](features) for features in encoded)
            averaged.append(torch.nn.functional.normalize(mean_direction, dim=-1)[keep].numpy())
            features.append(encoded[0][keep].numpy())
    position = {object_id: i for i, object_id in enumerate(ids)}
    missing = [str(object_id) for object_id in image["id"] if object_id not in position]
    if missing:
        raise ValueError(f"{data}: no stamp for {len(missing)} objects of the embeddings (e.g. {missing[0]!r}); "
                         f"pass the dataset the embeddings came from")
    order = np.array([position[object_id] for object_id in image["id"]])  # the stored rows' order
    out = {}
    for name, vectors in (("orientation_averaged", averaged), ("pre_head_features", features)):
        out[name] = knn_variant(dict(image, x=np.concatenate(vectors)[order].astype(np.float32)))[0]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, help="embedding folder (image and spectrum)")
    parser.add_argument("--model", help="the model folder that made them (for the re-embedding variants)")
    parser.add_argument("--data", help="the dataset they came from (with --model)")
    parser.add_argument("--target", default="redshift")
    args = parser.parse_args(argv)
    if bool(args.model) != bool(args.data):
        parser.error("--model and --data go together")
    start = time.perf_counter()
    image, spectrum = load(args.embeddings, "image", args.target), load(args.embeddings, "spectrum", args.target)
    variants = {"embedding": knn_variant(image)[0], "pca": pca_variant(image),
                "cross_modal": cross_modal_variant(image, spectrum)}
    variants["local_linear"], by_label_decile = local_linear_variant(image)
    if args.model:
        variants.update(model_variants(args.model, args.data, image))
    print(json.dumps({"benchmark": "image_knn_variants", "embeddings": args.embeddings, "target": args.target,
                      "test_objects": int((image["split"] == "test").sum()), "variants": variants,
                      "by_label_decile": by_label_decile,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
