"""Integer-only inference of 8-bit quantized CNNs with intq's engine (.intq and .tflite models).

Every ISA tier and thread count gives the same bytes as `intq run`; `Model.run` releases the
interpreter lock, so threads sharing one model run at once.
"""

import os
from typing import Literal, Mapping, Optional, Sequence, Union, final

import numpy as np
import numpy.typing as npt

__all__ = ["__version__", "Model", "ModelError", "TensorInfo", "available_isas", "dequantize", "quantize"]

__version__: str

class ModelError(ValueError):
    """A model file or buffer that is malformed, invalid, or uses what intq does not support."""

@final
class TensorInfo:
    """A graph input or output."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> Literal["uint8", "int8", "int32", "float32"]: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def quantization(self) -> Optional[Literal["per_tensor", "per_channel"]]:
        """None for a float tensor."""
    @property
    def scale(self) -> Optional[float]:
        """real = scale * (code - zero_point); channel 0's if per-channel; None if float."""
    @property
    def zero_point(self) -> Optional[int]: ...
    @property
    def scales(self) -> list[float]:
        """Every channel's scale (one entry if per-tensor, none if float)."""
    @property
    def zero_points(self) -> list[int]: ...
    @property
    def axis(self) -> Optional[int]:
        """The channel axis of per-channel parameters."""

_Inputs = Union[npt.NDArray[np.generic], Sequence[npt.NDArray[np.generic]], Mapping[str, npt.NDArray[np.generic]]]

@final
class Model:
    """A loaded, planned model."""

    def __new__(cls, path: Union[str, os.PathLike[str]], *, threads: int = 0, isa: Optional[str] = None) -> "Model":
        """Loads `path` (.tflite by extension, else .intq).

        threads: threads of the fast kernels, 0 for all cores.
        isa: 'reference', 'portable', 'avx2', 'avx512vnni', 'amx' or 'neondot'; None means
        INTQ_ISA if set, else the best tier of this CPU. A tier the CPU lacks raises ValueError.
        Raises FileNotFoundError / OSError if the file cannot be read, ModelError if it is not a
        valid model.
        """
    @staticmethod
    def from_bytes(
        data: bytes,
        *,
        format: Literal["auto", "intq", "tflite"] = "auto",
        threads: int = 0,
        isa: Optional[str] = None,
    ) -> "Model": ...
    @property
    def inputs(self) -> list[TensorInfo]: ...
    @property
    def outputs(self) -> list[TensorInfo]: ...
    @property
    def isa(self) -> str: ...
    @property
    def threads(self) -> int: ...
    def run(self, inputs: _Inputs) -> list[npt.NDArray[np.generic]]:
        """Runs the model on one array, a sequence in input order, or a dict by input name.

        Each array has the input's shape, with any number of images (1 or more) as its leading
        dimension, and its dtype (uint8/int8 codes for quantized inputs, e.g. NHWC uint8 pixels;
        float32 or float64 for float inputs). Raises ValueError for a
        wrong shape or input count, TypeError for a wrong dtype. Returns one array per output.
        """

def quantize(
    x: npt.ArrayLike, scale: float, zero_point: int, dtype: Literal["uint8", "int8"] = "uint8"
) -> npt.NDArray[Union[np.uint8, np.int8]]:
    """clamp(round(x / scale) + zero_point): the engine's Quantize op (float32 division,
    rounding half away from zero)."""

def dequantize(q: npt.NDArray[Union[np.uint8, np.int8]], scale: float, zero_point: int) -> npt.NDArray[np.float32]:
    """scale * (q - zero_point): the engine's Dequantize op."""

def available_isas() -> list[str]:
    """The ISA tiers this CPU runs, best first, then 'reference'."""
