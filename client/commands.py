"""What each `centroidal` command does with a connected Client and its parsed options."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import bars, datafiles, demo, export, feeding, figures
from .client import Client
from .errors import CentroidalError
from .results import BatchAck, ClusterScores, FitProgress, KScore, LabellingProgress, ModelInfo


def _load(options: argparse.Namespace, dtype: str | None) -> datafiles.DataFile:
    header = {None: "auto", True: "yes", False: "no"}[options.header]
    return datafiles.load_points(options.data, dtype, header)


def fit(client: Client, options: argparse.Namespace) -> int:
    if (options.data is None) == (options.source is None):
        raise ValueError("fit takes a file to upload or --source URI, one of them")
    if options.source is None and (options.columns or options.format or options.weight_column):
        raise ValueError("--columns, --format and --weight-column go with --source")
    data = _load(options, options.dtype) if options.data is not None else None
    columns = _columns(options)
    bar = None if options.quiet else bars.FitBar(f"fit {options.model}", options.max_iter)
    try:
        with data.explained() if data is not None else contextlib.nullcontext():
            result = client.fit(
                options.model, data.points if data is not None else None, options.clusters,
                source=options.source, columns=columns, format=options.format, weight_column=options.weight_column,
                init=options.init, n_init=options.n_init,
                max_iter=options.max_iter, tol=options.tol, seed=options.seed, metric=options.metric,
                algorithm=options.algorithm, n_neighbors=options.neighbors,
                return_labels=options.labels_out is not None, on_progress=bar,
                timeout=options.fit_timeout,
            )
    finally:
        if bar is not None:
            bar.close()
    if options.labels_out is not None and result.labels is not None:
        datafiles.save_array(options.labels_out, result.labels)
    print(
        f"model {result.model.name} version {result.version}: {result.n_samples} points, "
        f"{result.model.n_clusters} clusters, inertia {result.inertia:.6g}, "
        f"{result.n_iter} iterations, {result.elapsed_seconds:.2f}s"
    )
    return 0


# Seconds between saves of a --resume-file while batches go out (and once more at the end).
RESUME_EVERY_S = 1.0


def _stream_feed(options: argparse.Namespace) -> feeding.Feed:
    """A file's rows cut into batches, or a dataset's, per partition (--source)."""
    if (options.data is None) == (options.source is None):
        raise ValueError("stream takes a file or --source URI, one of them")
    if options.source is None:
        if options.columns or options.format or options.weight_column or options.resume_file:
            raise ValueError("--columns, --format, --weight-column and --resume-file go with --source")
        return feeding.file_feed(_load(options, options.dtype).points, options.batch_size, options.producer_id)
    uri = options.source if "://" in options.source else os.path.abspath(options.source)
    batches = feeding.DatasetBatches(uri, options.batch_size, columns=_columns(options), format=options.format,
                                     weight_column=options.weight_column)
    return feeding.dataset_feed(batches, options.model, options.producer_id, options.first_sequence,
                                options.resume_file, options.dtype)


def _columns(options: argparse.Namespace) -> tuple[str, ...]:
    """--columns as names: comma-separated, blanks dropped."""
    return tuple(column.strip() for column in options.columns.split(",") if column.strip())


def predict_dataset(client: Client, options: argparse.Namespace) -> int:
    columns = _columns(options)
    bar = None if options.quiet else tqdm(total=0, unit="rows", unit_scale=True, desc=f"labels by {options.model}")

    def show(progress: LabellingProgress) -> None:
        if bar is not None:
            bar.total = progress.rows_total
            bar.n = progress.rows_done
            bar.refresh()

    try:
        result = client.predict_dataset(
            options.model, options.source, options.output, columns=columns, format=options.format,
            version=options.version, return_distances=options.distances, overwrite=options.overwrite,
            on_progress=show, timeout=options.fit_timeout,
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"{result.rows} rows labelled by {options.model} version {result.model_version}: {result.files} files in "
          f"{result.output_uri}, {result.elapsed_seconds:.2f}s")
    return 0


def predict(client: Client, options: argparse.Namespace) -> int:
    data = _load(options, options.dtype)
    with data.explained():
        labels, distances = client.predict(
            options.model, data.points, version=options.version, return_distance=True
        )
    output = np.column_stack([labels, distances]) if options.distances else labels
    if options.out is not None:
        datafiles.save_array(options.out, output)
    elif options.distances:
        for label, distance in zip(labels, distances):
            print(f"{label},{distance:.9g}")
    else:
        sys.stdout.write("\n".join(map(str, labels.tolist())) + "\n")
    return 0


def stream(client: Client, options: argparse.Namespace) -> int:
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {options.batch_size}")
    feed = _stream_feed(options)
    total, first_sequence = feed.rows, options.first_sequence
    bar = None if options.quiet else bars.progress_bar(desc=f"stream {options.model}", total=total, unit="pt",
                                                  unit_scale=True)
    sent = 0

    duplicates = 0

    def progress(ack: BatchAck) -> None:
        nonlocal duplicates
        duplicates += ack.duplicate
        if bar is not None:
            done = min(total, feed.rows_before(ack.sequence - first_sequence + 1))
            bar.update(done - bar.n)
            bar.set_postfix(version=ack.version, durable=ack.durable_version, refresh=False)

    if feed.start and feed.rows_before(feed.start) >= total:
        print(f"model {options.model}: nothing left to send: {options.resume_file} says the server has every "
              f"batch of the dataset (through sequence {first_sequence + feed.start - 1})")
        return 0
    started = time.monotonic()
    stream = client.stream(
        options.model, n_clusters=options.clusters, init_size=options.init_size,
        reassignment_ratio=options.reassignment_ratio, half_life=options.half_life,
        half_life_unit=options.half_life_unit, seed=options.seed, metric=options.metric,
        producer_id=feed.producer_id, first_sequence=first_sequence + feed.start,
        window=options.window, on_ack=progress,
    )
    if bar is not None and feed.start:
        bar.update(feed.rows_before(feed.start))
    try:
        try:
            saved = time.monotonic()
            for points, weights in feed.batches:
                stream.send(points, weights)
                sent += 1
                if feed.resume is not None and time.monotonic() - saved > RESUME_EVERY_S:
                    feed.resume.save(stream.durable_sequence)
                    saved = time.monotonic()
        except BaseException:
            stream.abort()
            raise
        try:
            stream.close()
        except CentroidalError as refused:
            if not hasattr(refused, "sequence"):
                raise
            # A rejected batch: the stream still closed; every rejection is listed below.
        if feed.resume is not None:
            feed.resume.save(stream.durable_sequence)
    finally:
        if bar is not None:
            if stream.last_ack is not None:  # the close made the model durable: show it
                bar.set_postfix(version=stream.last_ack.version, durable=stream.last_ack.durable_version,
                                refresh=False)
            bar.close()
    elapsed = time.monotonic() - started
    rejected = len(stream.errors)
    for rejection in stream.errors:
        sequence = getattr(rejection, "sequence", "?")
        print(f"centroidal: batch {sequence} rejected: {rejection}", file=sys.stderr)
    last = stream.last_ack
    version = last.version if last is not None else 0
    print(
        f"model {options.model} version {version}: {sent} batches ({total - feed.rows_before(feed.start)} "
        f"points) sent in "
        f"{elapsed:.2f}s: {sent - rejected - duplicates} learnt, {duplicates} already in the "
        f"model, {rejected} rejected; producer {stream.producer_id}, durable through "
        f"sequence {stream.durable_sequence}"
    )
    return 1 if rejected else 0


_SUFFIX_FORMATS = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp", ".tif": "tiff",
    ".tiff": "tiff", ".gif": "gif",
}


def _scores_dict(scores: ClusterScores) -> dict[str, object]:
    return {
        "silhouette": scores.silhouette, "silhouette_rows": scores.silhouette_rows,
        "calinski_harabasz": scores.calinski_harabasz, "davies_bouldin": scores.davies_bouldin,
        "n_clusters_present": scores.n_clusters_present,
    }


def evaluate(client: Client, options: argparse.Namespace) -> int:
    data = _load(options, None)
    with data.explained():
        evaluation = client.evaluate(
            options.model, data.points, version=options.version,
            silhouette_sample_size=None if options.all_rows else options.sample_size, seed=options.sample_seed,
        )
    scores = evaluation.scores
    if options.json:
        print(json.dumps({"model": options.model, "version": evaluation.version,
                          "n_samples": evaluation.n_samples, "inertia": evaluation.inertia,
                          **_scores_dict(scores)}, indent=2))
        return 0
    undefined = "undefined (fewer than 2 clusters among the points)"
    print(f"{options.model} version {evaluation.version} on {evaluation.n_samples} points:")
    print(f"  inertia            {evaluation.inertia:.6g}")
    silhouette = undefined if scores.silhouette is None else (
        f"{scores.silhouette:.6f} (over {scores.silhouette_rows} rows)")
    print(f"  silhouette         {silhouette}")
    for label, value in (("calinski-harabasz", scores.calinski_harabasz), ("davies-bouldin", scores.davies_bouldin)):
        print(f"  {label:<18} {undefined if value is None else f'{value:.6f}'}")
    return 0


def suggest_k(client: Client, options: argparse.Namespace) -> int:
    data = _load(options, options.dtype)
    points = data.points
    if options.plot is not None:
        figures.pyplot()  # a missing extra is said before the work, not after
    ks: range = options.k_range
    # Values of k, counted without a rate: "3.60k/s" reads as thousands a second.
    bar = None if options.quiet or options.json else bars.progress_bar(
        desc="suggest-k", total=len(ks), bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} values of k "
        "[{elapsed}<{remaining}{postfix}]",
    )

    def progress(event: object) -> None:
        if bar is not None and isinstance(event, FitProgress) and event.stage == "compiling":
            bar.set_postfix_str("waiting for the server to compile its kernels (first start only)")
        if bar is not None and isinstance(event, KScore):
            silhouette = event.scores.silhouette
            bar.set_postfix_str(
                f"k={event.n_clusters} silhouette={silhouette if silhouette is None else round(silhouette, 4)}",
                refresh=False,
            )
            bar.update(1)

    try:
        with data.explained():
            suggestion = client.suggest_k(
                points, ks, metric=options.metric, init=options.init, n_init=options.n_init,
                max_iter=options.max_iter, seed=options.seed,
                silhouette_sample_size=None if options.all_rows else options.sample_size,
                save_best_as=options.save_best_as, on_progress=progress,
            )
    finally:
        if bar is not None:
            bar.close()
    if options.plot is not None:
        figures.suggest_k_figure(suggestion, options.plot)
    if options.json:
        print(json.dumps({
            "recommended_k": suggestion.recommended_k, "elbow_k": suggestion.elbow_k, "rule": suggestion.rule,
            "per_k": [{"k": entry.n_clusters, "inertia": entry.inertia, "n_iter": entry.n_iter,
                       **_scores_dict(entry.scores)} for entry in suggestion.per_k],
            "saved": None if suggestion.saved is None else {"name": suggestion.saved.name,
                                                            "version": suggestion.saved.version},
        }, indent=2))
        return 0
    print(suggestion.table())
    print(f"recommended k={suggestion.recommended_k}: {suggestion.rule}")
    if suggestion.saved is not None:
        print(f"saved as {suggestion.saved.name} version {suggestion.saved.version}")
    return 0


def walkthrough(client: Client, options: argparse.Namespace) -> int:
    steps = tuple(step.strip() for step in options.steps.split(",") if step.strip())
    unknown = [step for step in steps if step not in demo.STEPS]
    if unknown:
        raise ValueError(f"unknown demo steps {unknown}; choose from {', '.join(demo.STEPS)}")
    if not options.serve:
        demo.run(client, options.out, steps=steps)
        return 0
    with demo.private_server() as target, Client(target) as private:
        print(f"centroidal demo: a private server on {target}")
        demo.run(private, options.out, steps=steps)
    return 0


def export_model(client: Client, options: argparse.Namespace) -> int:
    export_format = options.format
    if export_format is None and options.out is None:
        export_format = "npz"
    elif export_format is None:
        suffix = options.out.suffix.lstrip(".").lower()
        if suffix not in export.FORMATS:
            raise ValueError(f"cannot tell the format from {str(options.out)!r}: pass --format npz, json or onnx")
        export_format = suffix
    model = client.get_model(options.name, version=options.version, include_centers=True)
    data = export.to_bytes(model, export_format)
    path = options.out or Path(f"{options.name}.{export_format}")
    path.write_bytes(data)
    print(f"{path}: {options.name} version {model.version}, {model.n_clusters} centers of "
          f"{model.n_features} features, {export_format}, {len(data)} bytes")
    return 0


def quantize(client: Client, options: argparse.Namespace) -> int:
    output_format = options.format or _SUFFIX_FORMATS.get(options.output.suffix.lower())
    if output_format is None:
        raise ValueError(
            f"cannot tell the output format from {options.output.name!r}: name it .png, .jpg, "
            ".webp, .bmp, .tif or .gif, or pass --format (same keeps the input's format)"
        )
    if options.plot is not None:
        figures.pyplot()  # a missing extra is said before the work, not after
    started = time.monotonic()
    result = client.quantize_image(
        options.input, options.colors, seed=options.seed, max_samples=options.max_samples,
        color_space=options.space, dither=options.dither, output_format=output_format,
        palette_model=options.palette_model, save_palette_as=options.save_palette_as,
    )
    options.output.write_bytes(result.image)
    if options.plot is not None:
        figures.quantize_figure(options.input.read_bytes(), result.image, result.palette, result.pixel_counts,
                                options.space, options.plot, options.seed or 0)
    for note in result.notes:
        print(f"centroidal: {note}", file=sys.stderr)
    saved = f", palette saved as version {result.saved_version}" if result.saved_version else ""
    print(
        f"{options.output}: {result.width}x{result.height} {result.format}, "
        f"{result.palette.shape[0]} colours, MSE {result.mse:.2f}, PSNR {result.psnr:.2f} dB, "
        f"{time.monotonic() - started:.3f}s{saved}"
    )
    return 0


def _describe(model: ModelInfo) -> dict[str, object]:
    described = export.description(model)
    described["durable_version"] = model.durable_version
    if model.kind == "minibatch-kmeans":
        described["n_batches"] = model.n_batches
        described["init_points_buffered"] = model.init_points_buffered
    if model.centers is not None:
        described["centers"] = model.centers.tolist()
    return described


def models_list(client: Client, options: argparse.Namespace) -> int:
    models = client.list_models()
    print(f"{'NAME':<32} {'VERSION':>7} {'K':>6} {'FEATURES':>8} {'DTYPE':>7} {'POINTS':>10}  UPDATED")
    for model in models:
        print(
            f"{model.name:<32} {model.version:>7} {model.n_clusters:>6} {model.n_features:>8} "
            f"{model.dtype.name:>7} {model.n_samples_seen:>10}  {model.updated_at:%Y-%m-%d %H:%M:%S}"
        )
    return 0


def models_get(client: Client, options: argparse.Namespace) -> int:
    model = client.get_model(options.name, include_centers=options.centers)
    print(json.dumps(_describe(model), indent=2))
    return 0


def models_delete(client: Client, options: argparse.Namespace) -> int:
    version = client.delete_model(options.name, expected_version=options.expected_version)
    print(f"deleted {options.name} (version {version})")
    return 0


def health(client: Client, options: argparse.Namespace) -> int:
    status = client.health(options.service)
    print(status)
    return 0 if status == "SERVING" else 1
