"""Value -> Modbus register words, per the point types and word orders the device profiles use."""

from __future__ import annotations

import math
import struct
from typing import Literal

from mullet.drivers.device_profiles import PointType

WordOrder = Literal["big", "little"]

_FORMATS: dict[str, tuple[str, int, int]] = {
    # type: (struct code, min, max); float32 bounds unused
    "float32": ("f", 0, 0),
    "uint16": ("H", 0, 0xFFFF),
    "int16": ("h", -0x8000, 0x7FFF),
    "uint32": ("I", 0, 0xFFFF_FFFF),
    "int32": ("i", -0x8000_0000, 0x7FFF_FFFF),
}


def encode_point(value: float, point_type: PointType, word_order: WordOrder = "big") -> list[int]:
    """Register words for `value`. Integers are rounded and clamped (a real device saturates rather
    than wrapping); NaN is only representable as float32 and becomes 0 for integer types."""
    code, low, high = _FORMATS[point_type]
    if point_type == "float32":
        raw = struct.pack(">f", value)
    else:
        number = 0 if math.isnan(value) else min(max(round(value), low), high)
        raw = struct.pack(f">{code}", number)
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    return words
