"""Runtimes that execute exported graphs: ONNX Runtime and OpenVINO, behind one small interface (no torch).

A :class:`Runner` opens a model file, exposes the ``zsad`` metadata stored in it and maps
``(pixels, class_index)`` to the graph's outputs by name. :class:`~zsad.export.ExportedDetector` does the checking
and everything else; runners only talk to their runtime.

Precision: the graph runs in the precision of the file. OpenVINO would otherwise lower float32 graphs to bfloat16
on CPUs that support it (its default ``INFERENCE_PRECISION_HINT``), which changes scores by about 1e-2; ask for it
explicitly with ``options={"INFERENCE_PRECISION_HINT": "bf16"}`` when that trade is wanted.

Example:
    >>> sorted(RUNTIMES)
    ['onnxruntime', 'openvino']
"""

from __future__ import annotations

import abc
import importlib.util
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zsad.errors import CheckpointError, ConfigError, MissingDependencyError, require
from zsad.export.metadata import METADATA_KEY, OUTPUTS

__all__ = ["RUNTIMES", "OnnxRuntimeRunner", "OpenVinoRunner", "Runner", "available_runtimes", "open_runner"]


class Runner(abc.ABC):
    """One loaded graph in one runtime."""

    #: the runtime's name (``runtime=`` in :meth:`zsad.Detector.from_export`)
    name: ClassVar[str]
    #: the pip extra that installs it
    extra: ClassVar[str]

    #: the ``zsad`` metadata JSON found in the file (None when absent)
    metadata_json: str | None

    def start(self) -> None:
        """Get ready to run (e.g. compile for the device); called once the metadata has been checked."""

    @abc.abstractmethod
    def __call__(self, pixels: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph; returns ``{"pred_score", "scores", "anomaly_map"}`` arrays."""


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime session (``device``: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` with onnxruntime-gpu).

    ``options`` are session configuration entries (``SessionOptions.add_session_config_entry``), e.g.
    ``{"session.intra_op.allow_spinning": "0"}``.
    """

    name = "onnxruntime"
    extra = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        ort = require("onnxruntime", self.extra, "Running exported models with ONNX Runtime")
        if path.suffix.lower() == ".xml":
            raise ConfigError(f"{path} is an OpenVINO IR file; ONNX Runtime runs *.onnx files. Use runtime='openvino'.")
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            session_options.intra_op_num_threads = int(threads)
            session_options.inter_op_num_threads = 1
        for key, value in (options or {}).items():
            session_options.add_session_config_entry(str(key), str(value))
        try:
            self.session = ort.InferenceSession(str(path), session_options, providers=self._providers(ort, device))
        except Exception as exc:  # onnxruntime raises classes of its own for unreadable files
            raise CheckpointError(
                f"ONNX Runtime cannot load {path}: {type(exc).__name__}: {_first_line(exc)}. The file is not an "
                "ONNX model, is damaged, or needs a newer onnxruntime (pip install -U onnxruntime)."
            ) from exc
        self.metadata_json = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _providers(ort: Any, device: str) -> list:
        kind, _, index = str(device).lower().partition(":")
        if kind == "cpu":
            return ["CPUExecutionProvider"]
        if kind == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"device={device!r} needs ONNX Runtime's CUDA provider, which this onnxruntime lacks (it has "
                    f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use device='cpu'."
                )
            return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
        raise ConfigError(f"ONNX Runtime devices are 'cpu' and 'cuda[:N]', got device={device!r}.")

    def __call__(self, pixels: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {"pixels": pixels, "class_index": class_index})
        return dict(zip(self.output_names, values))


class OpenVinoRunner(Runner):
    """OpenVINO compiled model (``device``: ``"cpu"``, ``"gpu"``, ``"npu"``, ``"auto"``, ...; reads *.xml and *.onnx).

    ``options`` are OpenVINO properties added to the defaults (``INFERENCE_PRECISION_HINT=f32``,
    ``PERFORMANCE_HINT=LATENCY``), e.g. ``{"PERFORMANCE_HINT": "THROUGHPUT"}``.
    """

    name = "openvino"
    extra = "openvino"

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        ov = require("openvino", self.extra, "Running exported models with OpenVINO")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise CheckpointError(
                f"OpenVINO cannot read {path}: {_first_line(exc)}. "
                "The file is not an OpenVINO IR (*.xml with its *.bin) or ONNX model, or it is damaged."
            ) from exc
        key = ["framework", METADATA_KEY]
        self.metadata_json = str(model.get_rt_info(key).astype(str)) if model.has_rt_info(key) else None
        properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        properties.update(options or {})
        self._core, self._model, self._device, self._properties = core, model, str(device).upper(), properties
        self._lock = threading.Lock()
        self._request: Any = None

    def start(self) -> None:
        try:
            compiled = self._core.compile_model(self._model, self._device, self._properties)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ConfigError(
                f"OpenVINO cannot compile the model for device {self._device!r} with {self._properties}: "
                f"{_first_line(exc)}. Devices on this machine: "
                f"{', '.join(self._core.available_devices)}."
            ) from exc
        self._request = compiled.create_infer_request()

    def __call__(self, pixels: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:  # one request, reused: its output buffers are copied before the next call
            self._request.infer({"pixels": pixels, "class_index": class_index})
            return {name: self._request.get_tensor(name).data.copy() for name in OUTPUTS}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else repr(exc)


RUNTIMES: dict[str, type[Runner]] = {r.name: r for r in (OnnxRuntimeRunner, OpenVinoRunner)}


def available_runtimes() -> list[str]:
    """Installed runtimes, preferred first (checked without importing them)."""

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # e.g. a module entry set to None to hide a package
            return False

    return [name for name in RUNTIMES if installed(name)]


def open_runner(path: str | os.PathLike, runtime: str | None = None, **options: Any) -> Runner:
    """Open ``path`` with ``runtime`` (default: OpenVINO for ``*.xml``, else ONNX Runtime if installed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Exported model {path} does not exist (or is not a file); check the path.")
    if runtime is None:
        installed = available_runtimes()
        if path.suffix.lower() == ".xml":
            runtime = "openvino"
        elif installed:
            runtime = installed[0]
        else:
            raise MissingDependencyError(
                f"Running {path} needs ONNX Runtime or OpenVINO, and neither is installed. "
                "Install one with: pip install 'zsad[onnxruntime]' (or 'zsad[openvino]')"
            )
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}.")
    return RUNTIMES[runtime](path, **options)
