"""Build one ONNX / OpenVINO graph from a detector, the text prototypes of its classes baked in (needs torch).

The traced module is a thin wrapper around the detector's own per-batch scoring,
:meth:`zsad.Detector.score_with_prototypes`: normalisation, then the backbone, the probabilities against the
prototypes of each image's class (gathered by ``class_index``), the image heads and the pixel head (upsampling and
Gaussian smoothing included). Nothing is re-implemented here, so the graph computes what the detector computes.

Tracing uses ``torch.onnx.export(dynamo=True)`` (``torch.export`` underneath) with a dynamic batch axis. A
component that cannot be traced (Python branches on tensor values, ``.item()``, data-dependent sizes, ...) makes
the export fail with an :class:`~zsad.errors.ExportError` that names the component. After writing, the graph is run
once by the target runtime on a batch of another size than the traced one and compared with PyTorch; the files
appear at their final path only if it agrees.

Example (the traced module of a tiny random model; :mod:`zsad.export.runtime` shows a complete export):
    >>> import torch
    >>> from zsad import Detector
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
    ...                            prompt_checkpoint=None, image_size=56, backbone_options={"random_config": {}},
    ...                            device="cpu")
    >>> graph = ScoringGraph(det, ["metal_nut", "screw"])
    >>> pred_score, scores, anomaly_map = graph(torch.rand(3, 3, 56, 56), torch.tensor([0, 1, 1]))
    >>> tuple(pred_score.shape), tuple(scores.shape), tuple(anomaly_map.shape)
    ((3,), (3, 5), (3, 56, 56))
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from zsad import __version__
from zsad.errors import ConfigError, ExportError, require
from zsad.export.metadata import INPUTS, METADATA_KEY, OUTPUTS, ExportMetadata
from zsad.prompts.templates import normalize_class_name

__all__ = ["FORMATS", "TOLERANCE", "ExportReport", "ScoringGraph", "export_detector"]

#: export format -> file suffix
FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
#: largest |exported - PyTorch| accepted by the check after writing, per export dtype
TOLERANCE = {"float32": 1e-3, "float16": 5e-2}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16"}
_OPSET = 23  # 23 maps scaled_dot_product_attention to the fused ONNX Attention operator
_TRACE_BATCH, _CHECK_BATCH = 2, 3
_ONNX_SIZE_LIMIT = 1_800_000_000  # protobuf files stop at 2 GiB: weights go to a side file above this


@dataclass
class ExportReport:
    """What :func:`export_detector` wrote and how well the written graph agrees with PyTorch."""

    path: Path
    files: list[Path]
    metadata: ExportMetadata
    #: runtime that ran the check, or None when it was skipped
    checked_with: str | None = None
    #: output name -> max |exported - PyTorch| on the check batch
    deviation: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def max_deviation(self) -> float:
        return max(self.deviation.values(), default=float("nan"))

    def summary(self) -> str:
        """One paragraph for people: files, classes, check result."""
        m = self.metadata
        files = ", ".join(str(f) for f in self.files)
        check = (
            f"checked with {self.checked_with}: max |exported - PyTorch| "
            + ", ".join(f"{k} {v:.2g}" for k, v in self.deviation.items())
            if self.checked_with
            else "not checked (--no-verify, or neither onnxruntime nor openvino is installed)"
        )
        return (
            f"wrote {files} ({m.dtype}, {m.preprocessing.image_size} px, {len(m.class_names)} classes: "
            f"{', '.join(m.class_names)}; image score {m.image_score}) in {self.seconds:.0f} s; {check}"
        )


class ScoringGraph(torch.nn.Module):
    """``(pixels in [0, 1], class_index) -> (pred_score, scores, anomaly_map)``: the module that is traced.

    It normalises the pixels as the backbone declares, gathers each image's prototypes from buffers and calls
    :meth:`zsad.Detector.score_with_prototypes`.
    """

    def __init__(self, detector: Any, class_names: Sequence[str]) -> None:
        super().__init__()
        self.detector = detector
        self.backbone = detector.backbone  # registered so that its weights become the graph's initializers
        self.image_heads = torch.nn.ModuleDict(detector.image_heads)
        self.pixel_head = detector.pixel_head
        with torch.no_grad():
            self.register_buffer("global_prototypes", detector.prototypes(class_names, "global").float())
            self.register_buffer("local_prototypes", detector.prototypes(class_names, "local").float())
        spec = detector.backbone.preprocessing
        self.normalise = tuple(spec.mean) != (0.0, 0.0, 0.0) or tuple(spec.std) != (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32, device=detector.device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32, device=detector.device).view(1, 3, 1, 1))
        self.score_names = tuple(detector.config.heads.image_heads)
        self.image_score = detector.config.heads.image_score

    def forward(self, pixels: torch.Tensor, class_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.normalise:
            pixels = (pixels - self.mean) / self.std
        g_f = self.global_prototypes[class_index]
        # class-agnostic local prompts have one prototype pair for every class
        g_l = self.local_prototypes if self.local_prototypes.shape[0] == 1 else self.local_prototypes[class_index]
        out = self.detector.score_with_prototypes(pixels, g_f, g_l)
        scores = torch.stack([out.scores[name] for name in self.score_names], dim=1)
        return out.scores[self.image_score], scores, out.maps.float()


def export_detector(
    detector: Any,
    class_names: Sequence[str],
    path: str | Path,
    *,
    format: Literal["onnx", "openvino"] | None = None,
    verify: bool = True,
    opset: int | None = None,
    progress: bool = False,
) -> ExportReport:
    """Export ``detector`` for ``class_names`` to ``path`` (see the module docstring); :meth:`zsad.Detector.export`.

    Args:
        detector: a :class:`zsad.Detector` in float32 or float16 (its ``dtype`` is the graph's).
        class_names: the classes the graph scores; ``class_index`` counts in this order.
        path: ``*.onnx`` for ONNX (weights over 1.8 GB go to ``*.onnx.data`` next to it) or ``*.xml`` for OpenVINO
            IR (with ``*.bin``).
        format: ``"onnx"`` or ``"openvino"``; default: from the suffix of ``path``.
        verify: run the written graph once (ONNX Runtime for ONNX when installed, else OpenVINO) on a batch of
            three random images and refuse it when it deviates from PyTorch by more than :data:`TOLERANCE`.
        opset: ONNX opset (default 23, whose Attention operator runs attention fused; 20 for ONNX Runtime < 1.23
            or OpenVINO < 2026).
        progress: print the steps to stderr.

    Returns:
        An :class:`ExportReport` (files written, metadata, measured deviation).
    """
    started = time.perf_counter()
    path, format = _target(Path(path), format)
    names = _class_names(class_names)
    dtype = _DTYPE_NAMES.get(detector.dtype)
    if dtype is None:
        raise ConfigError(
            f"Cannot export a detector in {detector.dtype}: ONNX Runtime and OpenVINO run float32 or float16 graphs. "
            "Build it with dtype='float32' or 'float16' (zsad export --dtype float16)."
        )
    require("onnx", "export", "Exporting a detector")
    require("onnxscript", "export", "Exporting a detector")
    if format == "openvino":
        require("openvino", "openvino", "Exporting a detector to OpenVINO IR")
    if detector.references:
        raise ExportError(
            f"This detector holds normal references for {sorted(detector.references)}; exported graphs hold the "
            "zero-shot scoring only (prototypes baked in, no reference memory). Export before add_references(), or "
            "call detector.clear_references() first."
        )
    say = _reporter(progress)
    detector._warn_if_untrained()
    graph = ScoringGraph(detector, names).eval()
    spec = detector.backbone.preprocessing
    metadata = ExportMetadata.describe(
        detector.config, names, dtype=dtype, resample=detector.config.preprocess.resample or spec.resample,
        mean=spec.mean, std=spec.std, exported_with=_versions(),
    )
    size = metadata.preprocessing.image_size
    say(f"tracing {detector.config.name} ({type(detector.backbone).__name__}, {dtype}, {size} px) for {len(names)} classes")
    program = _trace(graph, detector, size, len(names), opset or _OPSET)
    program.model.metadata_props[METADATA_KEY] = metadata.to_json()
    report = ExportReport(path, [], metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        work = Path(tmp) / path.name
        weights = (v.const_value for v in program.model.graph.initializers.values() if v.const_value is not None)
        big = sum(w.nbytes for w in weights) > _ONNX_SIZE_LIMIT
        onnx_path = work if format == "onnx" else Path(tmp) / "graph.onnx"
        program.save(onnx_path, external_data=big)
        if format == "openvino":
            say("converting to OpenVINO IR")
            _to_openvino(onnx_path, work, metadata)
            for leftover in Path(tmp).glob("graph.onnx*"):
                leftover.unlink()
        if verify:
            report.checked_with, report.deviation = _check(graph, work, format, dtype, size, len(names), say)
        written = sorted(Path(tmp).iterdir(), key=lambda p: p.suffix in (".onnx", ".xml"))  # the model file last
        for part in written:
            final = path.parent / part.name
            shutil.move(str(part), final)
            report.files.append(final)
    report.seconds = time.perf_counter() - started
    return report


# -- steps -------------------------------------------------------------------------------------------------------
def _target(path: Path, format: str | None) -> tuple[Path, str]:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass the model file to write, e.g. {path / 'model.onnx'}.")
    by_suffix = {suffix: name for name, suffix in FORMATS.items()}
    if format is None:
        format = by_suffix.get(path.suffix.lower())
        if format is None:
            raise ConfigError(
                f"Cannot tell the export format from {path}: name the file *.onnx (ONNX) or *.xml (OpenVINO IR), "
                "or pass format='onnx' / 'openvino' (zsad export --format)."
            )
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {sorted(FORMATS)}, got {format!r}.")
    if path.suffix.lower() != FORMATS[format]:
        raise ConfigError(
            f"The {format} format is written to a *{FORMATS[format]} file; got {path}. Use "
            f"{path.with_suffix(FORMATS[format])}."
        )
    return path, format


def _class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str):
        class_names = [class_names]
    names = [str(c) for c in class_names]
    if not names:
        raise ConfigError("Export needs at least one class name (zsad export --class-name NAME [--class-name NAME ...]).")
    seen: dict[str, str] = {}
    for name in names:
        key = normalize_class_name(name).strip().lower()
        if not key:
            raise ConfigError(f"Class name {name!r} is empty.")
        if key in seen:
            raise ConfigError(f"Class names {seen[key]!r} and {name!r} are the same class in the prompts; give it once.")
        seen[key] = name
    return names


def _reporter(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"zsad export: {message}", file=sys.stderr, flush=True)

    return say


def _versions() -> dict[str, str]:
    import onnx
    import onnxscript
    import transformers

    return {"zsad": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "transformers": transformers.__version__}


def _is_all_true(x):
    """``aten._is_all_true`` (``torch._check`` on a tensor, e.g. in transformers' SigLIP2): all elements true."""
    from onnxscript import BOOL, INT32
    from onnxscript import opset18 as op

    return op.Cast(op.ReduceMin(op.Cast(x, to=INT32.dtype), keepdims=0), to=BOOL.dtype)


def _trace(graph: ScoringGraph, detector: Any, size: int, classes: int, opset: int):
    device = detector.device
    example = (
        torch.rand(_TRACE_BATCH, 3, size, size, device=device),
        torch.arange(_TRACE_BATCH, device=device) % classes,
    )
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                graph, example, dynamo=True, input_names=list(INPUTS), output_names=list(OUTPUTS),
                dynamic_shapes={"pixels": {0: batch}, "class_index": {0: batch}}, opset_version=opset,
                optimize=True, verbose=False, custom_translation_table={torch.ops.aten._is_all_true.default: _is_all_true},
            )
    except Exception as exc:  # every tracing failure becomes one ExportError that names the component
        raise ExportError(_explain(exc, detector)) from exc
    if any(isinstance(value.shape[0], int) for value in program.model.graph.inputs):
        raise ExportError(
            f"Cannot export recipe {detector.config.name!r}: the traced graph has a fixed batch size "
            f"({_TRACE_BATCH}) instead of a dynamic one. A component turns the batch size into a Python number "
            "while tracing (e.g. torch.tensor([...] * batch) or a loop over the batch); build such tensors with "
            "tensor operations (expand, repeat) instead."
        )
    return program


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep torch.onnx's progress lines, graph dumps and the optimizer's notices off the console (errors still raise)."""
    names = ("onnxscript", "torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx",
             "torch.fx.experimental.symbolic_shapes")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _components(detector: Any) -> list[tuple[str, type]]:
    c = detector.config
    parts = [(f"backbone {c.backbone.name!r}", type(detector.backbone))]
    parts += [(f"image head {name!r}", type(head)) for name, head in detector.image_heads.items()]
    parts.append((f"pixel head {c.heads.pixel!r}", type(detector.pixel_head)))
    return parts


def _explain(exc: BaseException, detector: Any) -> str:
    """Name the component whose code the tracer failed in (the deepest frame in one of their source files)."""
    files: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        files += [frame.filename for frame in traceback.extract_tb(current.__traceback__)]
        files += re.findall(r'File "([^"]+)"', str(current))
        current = current.__cause__ or current.__context__
    owners: dict[str, str] = {}
    for label, cls in _components(detector):
        for klass in cls.__mro__:
            if klass.__module__.startswith(("torch", "builtins", "abc")):
                continue
            try:
                owners.setdefault(str(Path(inspect.getfile(klass)).resolve()), f"{label} ({cls.__module__}.{cls.__qualname__})")
            except (TypeError, OSError):
                continue
    culprit = None
    for filename in files:
        owner = owners.get(str(Path(filename).resolve()))
        culprit = owner or culprit
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    reason = f"{type(root).__name__}: {_first_lines(str(root))}"
    where = f"its {culprit}" if culprit else "one of its components"
    return (
        f"Cannot export recipe {detector.config.name!r}: {where} cannot be traced into a graph ({reason}). "
        "Exported components must be traceable by torch.export: tensor operations only, no Python branches on "
        "tensor values, no .item() / .tolist() / .numpy(), no sizes that depend on the data. Run it with PyTorch "
        "(Detector.predict) or make that component traceable."
    )


def _first_lines(text: str, limit: int = 400) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()][:3]
    short = " ".join(lines)
    return short if len(short) <= limit else short[: limit - 3] + "..."


def _to_openvino(onnx_path: Path, xml_path: Path, metadata: ExportMetadata) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(metadata.to_json(), ["framework", METADATA_KEY])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)  # the default would halve float32 weights


def _check(graph: ScoringGraph, model: Path, format: str, dtype: str, size: int, classes: int, say) -> tuple[str | None, dict[str, float]]:
    from zsad.export.runners import available_runtimes

    installed = available_runtimes()
    runtime = "openvino" if format == "openvino" else (installed[0] if installed else None)
    if runtime is None or runtime not in installed:
        say("skipping the check: neither onnxruntime nor openvino is installed")
        return None, {}
    from zsad.export.runtime import ExportedDetector

    say(f"checking the graph with {runtime}")
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(_CHECK_BATCH, 3, size, size, generator=gen)
    class_index = torch.arange(_CHECK_BATCH) % classes
    with torch.no_grad():
        expected = graph(pixels.to(graph.mean.device), class_index.to(graph.mean.device))
    got = ExportedDetector.load(model, runtime).run(pixels.numpy(), class_index.numpy())
    deviation = {
        name: float(np.abs(got[name].astype(np.float64) - ref.float().cpu().numpy()).max())
        for name, ref in zip(OUTPUTS, expected)
    }
    worst = max(deviation.values())
    if not worst <= TOLERANCE[dtype]:
        raise ExportError(
            f"The exported graph disagrees with PyTorch when run by {runtime}: max |difference| "
            + ", ".join(f"{k} {v:.3g}" for k, v in deviation.items())
            + f" (accepted: {TOLERANCE[dtype]:g} for {dtype}). Nothing was written. This is a bug in an exporter or "
            "in the runtime; please report it with the recipe and the library versions (zsad info)."
        )
    return runtime, deviation
