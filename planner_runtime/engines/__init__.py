"""The embedded default engine(s) shipped inside the package.

``go2.onnx`` is the Go2 engine trained by the project's own pipeline
(collect -> train -> export); ``PROVENANCE.json`` beside it records how it was made. The
manifest inside the ONNX file is the authority; this module only locates the file.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ENGINE_NAME = "go2.onnx"


def default_engine_path() -> Path:
    """Path of the embedded Go2 engine; FileNotFoundError with a way out when it is missing."""
    p = HERE / DEFAULT_ENGINE_NAME
    if not p.is_file():
        raise FileNotFoundError(
            f"the embedded default engine {p} is missing; rebuild it with "
            "`python -m export.default_engine --install` (docs/training.md) or pass --engine PATH")
    return p
