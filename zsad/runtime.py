"""How a :class:`~zsad.Detector` runs its model: TF32 matmuls, ``torch.compile``, the input pipeline, attention.

These are runtime settings, like the device and the dtype, not part of a recipe (:class:`RuntimeOptions` carries
them to the detectors that engines build, Ray workers included):

* **TF32** (``tf32``): on a CUDA device with a float32 backbone, the backbone's matrix products and convolutions
  may use TF32 tensor cores (default on; ``tf32=False`` turns it off). The text prototypes, similarities, softmax,
  image scores and pixel maps always run in full float32 (IEEE), whatever the global torch settings are, since
  temperatures near 0.004 amplify matmul rounding 200-fold.
* **compile** (``compile=True`` or a mode such as ``"max-autotune"`` or ``"reduce-overhead"``, which records CUDA
  graphs): ``torch.compile`` the backbone's image encoder and the scoring step (prototype similarities, image heads,
  pixel map and reference fusion). The first batches of each shape pay the compilation. Exporting a compiled
  detector (:meth:`zsad.Detector.export`) traces the plain scoring.
* **pipeline** (:class:`~zsad.pipeline.PipelineOptions`): how inputs are decoded and resized ahead of the model.
* **attention**: the TIPS towers (transformers' SDPA attention) run their attention through
  ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel (on CPUs its flash kernel; on
  GPUs flash attention for bf16, memory-efficient attention for float32); :func:`attention_kernels` says which ran.

Example:
    >>> import torch
    >>> use_tf32(None, torch.device("cpu"), torch.float32)  # only ever on CUDA
    False
    >>> with matmul_precision(tf32=False):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    >>> RuntimeOptions.coerce({"compile": True, "pipeline": {"preprocess": "device"}}).describe()
    {'compile': True, 'tf32': None, 'preprocess': 'device', 'decode_workers': None, 'prefetch': None}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from zsad.errors import ConfigError
from zsad.pipeline import PipelineOptions

if TYPE_CHECKING:  # torch is imported where it is used: zsad.detector imports this module
    import torch

    from zsad.heads.scoring import BatchScorer, BatchScores

__all__ = ["RuntimeOptions", "ScoringRuntime", "attention_kernels", "compiled", "matmul_precision", "resolve_runtime",
           "use_tf32"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_compile(mode: Any) -> bool | str:
    if mode is None or isinstance(mode, bool) or mode in COMPILE_MODES:
        return bool(mode) if mode is None or isinstance(mode, bool) else mode
    raise ConfigError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}; got {mode!r}.")


@dataclass(frozen=True)
class RuntimeOptions:
    """The runtime arguments of a :class:`~zsad.Detector` besides device and dtype (picklable: engines send them
    to their workers).

    Args:
        compile: ``torch.compile`` the model: ``False`` (default), ``True`` or a mode (see :data:`COMPILE_MODES`).
        tf32: TF32 matmuls for a float32 backbone on CUDA (``None``: on; see the module docstring).
        pipeline: the input pipeline's options (a :class:`~zsad.pipeline.PipelineOptions` or its fields as a dict).

    Example:
        >>> RuntimeOptions(tf32=False).detector_kwargs()["tf32"]
        False
    """

    compile: bool | str = False
    tf32: bool | None = None
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compile", _check_compile(self.compile))
        if self.tf32 is not None and not isinstance(self.tf32, bool):
            raise ConfigError(f"tf32 must be True, False or None (default: on for float32 on CUDA), got {self.tf32!r}.")
        if isinstance(self.pipeline, dict):
            object.__setattr__(self, "pipeline", PipelineOptions(**self.pipeline))
        elif self.pipeline is None:
            object.__setattr__(self, "pipeline", PipelineOptions())
        elif not isinstance(self.pipeline, PipelineOptions):
            raise ConfigError(f"pipeline must be a PipelineOptions or a dict of its fields, got {self.pipeline!r}.")

    @classmethod
    def coerce(cls, value: RuntimeOptions | dict | None) -> RuntimeOptions:
        """``value`` as :class:`RuntimeOptions` (``None``: the defaults; a dict: its fields)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"compile", "tf32", "pipeline"})
            if unknown:
                raise ConfigError(f"Unknown runtime option(s) {unknown}; the options are compile, tf32 and pipeline.")
            return cls(**value)
        raise ConfigError(f"runtime must be a RuntimeOptions or a dict of its fields, got {type(value).__name__}.")

    def detector_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~zsad.Detector` these options stand for."""
        return {"compile": self.compile, "tf32": self.tf32, "pipeline": self.pipeline}

    def fingerprint(self) -> dict[str, Any]:
        """What of these options changes the numbers, for run fingerprints: ``{"preprocess": "device"}`` for the
        device preprocessing (other pixels), else nothing (so the fingerprints of earlier runs stay valid)."""
        return {} if self.pipeline.preprocess == "exact" else {"preprocess": self.pipeline.preprocess}

    def describe(self) -> dict[str, Any]:
        """A flat JSON-able description (what run manifests record)."""
        pipe = asdict(self.pipeline)
        return {"compile": self.compile, "tf32": self.tf32, "preprocess": pipe["preprocess"],
                "decode_workers": pipe["workers"], "prefetch": pipe["prefetch"]}


def resolve_runtime(runtime: RuntimeOptions | dict | None, detector: Any = None
                    ) -> tuple[RuntimeOptions | None, RuntimeOptions]:
    """The ``runtime=`` argument of a workflow (prediction, evaluation) checked, and the options in effect.

    Returns ``(given, effective)``: ``given`` is ``runtime`` as :class:`RuntimeOptions` (``None`` when not given:
    engines then keep the given detector's); ``effective`` what the detectors run with (``runtime``, else the given
    detector's options, else the defaults).

    Raises:
        ConfigError: runtime options with an exported model (``detector`` is not a :class:`~zsad.Detector`).
    """
    from zsad.detector import Detector

    given = None if runtime is None else RuntimeOptions.coerce(runtime)
    if given is not None and detector is not None and not isinstance(detector, Detector):
        raise ConfigError("Runtime options (compile, TF32, input pipeline) apply to PyTorch detectors, not to an "
                          f"exported model ({type(detector).__name__}); drop them.")
    if given is not None:
        return given, given
    return None, detector.runtime_options if isinstance(detector, Detector) else RuntimeOptions()


def use_tf32(tf32: bool | None, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the backbone runs with TF32: ``tf32`` if given, else on for float32 on CUDA; never off CUDA."""
    import torch

    if tf32 is not None and not isinstance(tf32, bool):
        raise ConfigError(f"tf32 must be True, False or None (default: on for float32 on CUDA), got {tf32!r}.")
    if device.type != "cuda":
        return False
    return dtype == torch.float32 if tf32 is None else tf32


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """Within the block, CUDA float32 matmuls and convolutions use TF32 (``tf32=True``) or IEEE float32; the
    previous settings are restored afterwards."""
    import torch

    new = "tf32" if tf32 else "ieee"
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        saved = matmul.fp32_precision, conv.fp32_precision
        matmul.fp32_precision, conv.fp32_precision = new, new
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
    else:  # pragma: no cover - older torch
        saved = matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            yield
        finally:
            matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def compiled(fn: Callable, mode: bool | str) -> Callable:
    """``fn`` itself when ``mode`` is False, else ``torch.compile(fn)`` (``True`` = the default mode)."""
    mode = _check_compile(mode)
    if mode is False:
        return fn
    import torch

    return torch.compile(fn, mode=None if mode in (True, "default") else mode)


def _tracing() -> bool:
    import torch

    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


class ScoringRuntime:
    """A detector's :class:`~zsad.heads.scoring.BatchScorer` run with the runtime options.

    With the defaults on a CPU it is the scorer itself. With TF32 (CUDA, float32) the backbone runs under TF32 and
    the scoring under IEEE float32; with ``compile`` the image encoder and the scoring step are compiled. Under
    ``torch.export`` (an export of the detector) or inside another compiled function the plain scorer runs, so
    the traced graph does not depend on these options.

    Args:
        scorer: the scorer.
        device: the detector's device.
        tf32: see :func:`use_tf32` (already resolved).
        compile: see :func:`compiled`.
    """

    def __init__(self, scorer: BatchScorer, device: torch.device, *, tf32: bool, compile: bool | str = False) -> None:
        self.scorer = scorer
        self.tf32 = tf32
        self.cuda = device.type == "cuda"
        self.compile = _check_compile(compile)
        self._encode = compiled(scorer.backbone.encode_image, self.compile)
        self._score = compiled(scorer.score_features, self.compile)
        self._warm: set[tuple] = set()

    def __call__(self, pixels: torch.Tensor, global_prototypes: torch.Tensor, local_prototypes: torch.Tensor,
                 references: Any = None) -> BatchScores:
        if _tracing() or not (self.compile or self.tf32):
            with matmul_precision(False) if self.cuda and not _tracing() else contextlib.nullcontext():
                return self.scorer(pixels, global_prototypes, local_prototypes, references)
        banks = self.scorer.banks_for(references, pixels.shape[0])
        # the first batch of each image size runs eagerly: the heads build their constants (e.g. the pixel map's
        # smoothing operators) outside the compiled graphs, which then read them without a graph break
        warm = tuple(pixels.shape[-2:]) in self._warm or not self.compile
        encode, score = (self._encode, self._score) if warm else (self.scorer.backbone.encode_image,
                                                                   self.scorer.score_features)
        with matmul_precision(self.tf32):
            features = encode(pixels, self.scorer.request_for(banks))
        with matmul_precision(False):
            out = score(features, global_prototypes, local_prototypes, banks, tuple(pixels.shape[-2:]))
        self._warm.add(tuple(pixels.shape[-2:]))
        return out


def attention_kernels(fn: Callable[[], Any]) -> list[str]:
    """Names of the attention operators and kernels that ran during ``fn()`` (``aten::_scaled_dot_product_*``,
    and on CUDA the flash / memory-efficient / math kernels), in first-seen order.

    Example:
        >>> import torch
        >>> q = torch.rand(1, 2, 16, 8)
        >>> "aten::scaled_dot_product_attention" in attention_kernels(
        ...     lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
        True
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    names: dict[str, None] = {}
    for event in prof.events():
        low = event.name.lower()
        if "scaled_dot_product" in low or "flash" in low or "fmha" in low or "efficient_attention" in low:
            names.setdefault(event.name)
    return list(names)
