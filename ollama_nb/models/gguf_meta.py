"""GGUF header metadata: what ``/api/show``, ``/api/tags`` and ``/api/create`` need to know.

The header (key/values and tensor descriptions) is walked through a read-only memory map, so
a multi-gigabyte model is never read into memory; token arrays are skipped, not decoded, unless
asked for. ``gguf.GGUFReader`` builds a numpy view per array element, which takes seconds for a
262k-token vocabulary, so this module parses the header itself and takes from the ``gguf``
package (imported lazily) only its table of tensor block sizes, to check that the tensor data is
really there. Names and numbers follow Ollama: ``general.architecture`` is the family, the
parameter count is the sum of tensor elements (``fs/ggml/gguf.go``), ``parameter_size`` is
``format.HumanNumber`` of it and ``file_type`` is ``ggml.FileType.String()``.

>>> human_number(134515008), human_number(2_850_000_000), human_number(7_000_000_000)
('134.52M', '2.9B', '7B')
>>> file_type_name(3), file_type_name(15), tensor_type_name(12), tensor_type_name(4)
('Q4_1', 'Q4_K_M', 'Q4_K', 'unknown')
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base.errors import CorruptModel

__all__ = [
    "GGUFInfo",
    "GGUFSummary",
    "TensorInfo",
    "file_type_name",
    "human_number",
    "is_gguf",
    "read_gguf_info",
    "read_gguf_summary",
    "tensor_type_name",
]

GGUF_MAGIC = b"GGUF"
# Ollama's limits (fs/gguf/gguf.go): anything bigger is a damaged or hostile file.
MAX_STRING_LENGTH = 16 << 20
MAX_ARRAY_SIZE = 64 << 20
MAX_TENSOR_DIMS = 4

# ggml.FileType.String(), indexed by llama_ftype; "-" marks ids Ollama prints as "unknown".
_FILE_TYPES = (
    "F32", "F16", "Q4_0", "Q4_1", "-", "-", "-", "Q8_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S",
    "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS",
    "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M", "IQ4_XS",
    "IQ1_M", "BF16", "-", "-", "-", "TQ1_0", "TQ2_0", "MXFP4_MOE", "NVFP4", "Q1_0",
)  # fmt: skip
# ggml.TensorType.String(), indexed by ggml_type.
_TENSOR_TYPES = (
    "F32", "F16", "Q4_0", "Q4_1", "-", "-", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
    "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
    "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "-", "-", "-", "TQ1_0",
    "TQ2_0", "-", "-", "-", "MXFP4", "NVFP4", "Q1_0",
)  # fmt: skip

# GGUF value types: id -> (struct code, size); 8 = string, 9 = array.
_SCALARS = {
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
    6: ("f", 4), 7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}  # fmt: skip
_STRING, _ARRAY = 8, 9


def human_number(n: int) -> str:
    """Ollama's ``format.HumanNumber``: 1K, 125M, 500.55M, 2.8B (rounding as Go's %f does)."""
    for unit, scale, decimals in (("B", 1e9, 1), ("M", 1e6, 2)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value.is_integer() else f"{value:.{decimals}f}{unit}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def file_type_name(file_type: int | None) -> str:
    """Ollama's name for ``general.file_type`` (``"Q4_K_M"``); ``"unknown"`` if not known."""
    if isinstance(file_type, int) and 0 <= file_type < len(_FILE_TYPES):
        name = _FILE_TYPES[file_type]
        return "unknown" if name == "-" else name
    return "unknown"


def tensor_type_name(ggml_type: int) -> str:
    """Ollama's name for a tensor's ggml type (``"Q4_K"``, ``"F32"``)."""
    if 0 <= ggml_type < len(_TENSOR_TYPES) and _TENSOR_TYPES[ggml_type] != "-":
        return _TENSOR_TYPES[ggml_type]
    return "unknown"


def _f32(x: float) -> float:
    """The shortest decimal that is the same float32 (1e-05, not 9.999999747378752e-06)."""
    pack = struct.Struct("<f")
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        if pack.unpack(pack.pack(candidate))[0] == x:
            return candidate
    return x


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as ``/api/show`` lists it; ``shape`` in GGUF order (fastest dimension first)."""

    name: str
    type: str
    shape: tuple[int, ...]
    ggml_type: int = 0
    offset: int = 0

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "shape": list(self.shape)}


@dataclass(frozen=True, eq=False)
class GGUFInfo:
    """Header facts of one GGUF file (see :func:`read_gguf_info`)."""

    path: str
    version: int
    architecture: str
    parameter_count: int
    file_type: str
    general_type: str
    context_length: int | None
    embedding_length: int | None
    chat_template: str | None
    kv: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...] = field(default_factory=tuple)

    @property
    def family(self) -> str:
        """Ollama's ``model_family``: the architecture."""
        return self.architecture

    @property
    def families(self) -> list[str]:
        return [self.architecture]

    @property
    def parameter_size(self) -> str:
        """``model_type`` as Ollama writes it: ``format.HumanNumber(parameter_count)``."""
        return human_number(self.parameter_count)

    @property
    def is_adapter(self) -> bool:
        return self.general_type == "adapter"

    @property
    def model_info(self) -> dict[str, Any]:
        """``/api/show``'s ``model_info``: the key/values, sorted as Go sorts map keys, without
        ``general.name`` and ``tokenizer.chat_template``; long arrays are ``None`` (JSON null)
        unless read with ``max_array=None`` (``verbose``)."""
        skip = {"general.name", "tokenizer.chat_template"}
        return {k: self.kv[k] for k in sorted(self.kv) if k not in skip}

    def tensor_dicts(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.tensors]


@dataclass(frozen=True)
class GGUFSummary:
    """The few header facts ``/api/tags`` needs (see :func:`read_gguf_summary`)."""

    architecture: str
    file_type: str
    general_type: str
    context_length: int | None
    embedding_length: int | None
    has_pooling_type: bool  # an embedding model (Ollama's test for the "embedding" capability)
    chat_template: str | None = None
    has_fim_tokens: bool = False  # fill-in-the-middle tokens: the "insert" capability
    has_vision_tower: bool = False  # ``<arch>.vision.block_count``: the projector is built in


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the GGUF magic (nothing else is checked)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


class _Truncated(Exception):
    pass


class _Header:
    """A cursor over the memory-mapped header; every read is bounds-checked."""

    def __init__(self, buf: mmap.mmap, endian: str, version: int) -> None:
        self.buf, self.size, self.pos, self.endian = buf, len(buf), 0, endian
        self.len_code = "I" if version == 1 else "Q"  # GGUF v1 used 32-bit lengths
        self.structs: dict[str, struct.Struct] = {}

    def unpack(self, code: str) -> Any:
        s = self.structs.get(code)
        if s is None:
            s = self.structs[code] = struct.Struct(self.endian + code)
        if self.pos + s.size > self.size:
            raise _Truncated
        value = s.unpack_from(self.buf, self.pos)[0]
        self.pos += s.size
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def string(self) -> str:
        n = self.unpack(self.len_code)
        if n > MAX_STRING_LENGTH:
            raise ValueError(f"string length {n} exceeds maximum {MAX_STRING_LENGTH}")
        start = self.pos
        self.skip(n)
        return self.buf[start : self.pos].decode("utf-8", "replace")

    def value(self, vtype: int, max_array: int | None) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype in _SCALARS:
            v = self.unpack(_SCALARS[vtype][0])
            return _f32(v) if vtype == 6 else v
        if vtype != _ARRAY:
            raise ValueError(f"invalid type: {vtype}")
        etype, n = self.unpack("I"), self.unpack(self.len_code)
        if n > MAX_ARRAY_SIZE:
            raise ValueError(f"GGUF array size {n} exceeds maximum {MAX_ARRAY_SIZE}")
        keep = max_array is None or n <= max_array
        if etype in _SCALARS:
            code, width = _SCALARS[etype]
            if self.pos + n * width > self.size:
                raise _Truncated
            if not keep:
                self.pos += n * width
                return None
            values = list(struct.unpack_from(f"{self.endian}{n}{code}", self.buf, self.pos))
            self.pos += n * width
            return [_f32(v) for v in values] if etype == 6 else values
        if etype == _STRING:
            if keep:
                return [self.string() for _ in range(n)]
            for _ in range(n):
                self.skip(self.unpack(self.len_code))
            return None
        if etype == _ARRAY:  # nested arrays: legal, rare; read them to move past them
            items = [self.value(_ARRAY, max_array) for _ in range(n)]
            return items if keep else None
        raise ValueError(f"invalid array type: {etype}")


def _quant_sizes() -> Mapping[int, tuple[int, int]]:
    """ggml_type -> (block size, bytes per block), from the ``gguf`` package when installed."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:  # without it the tensor-data check below is skipped
        return {}
    return {int(k): v for k, v in GGML_QUANT_SIZES.items()}


def read_gguf_info(path: str | os.PathLike[str], *, max_array: int | None = 0) -> GGUFInfo:
    """Read the header of a GGUF file; raise :class:`CorruptModel` if it is not a sound GGUF.

    ``max_array`` bounds the arrays kept in :attr:`GGUFInfo.kv`: longer ones become ``None``.
    The default 0 is what ``/api/show`` sends (Ollama decodes with a max array size of 0, so
    every non-empty array is ``null``); ``None`` keeps everything (``"verbose": true``).
    Besides a bad magic or a cut-off header, a file whose tensor data does not fit in it
    (an interrupted copy) is reported as truncated.
    """
    info = _read(path, max_array, summary=False)
    assert isinstance(info, GGUFInfo)
    return info


def read_gguf_summary(path: str | os.PathLike[str]) -> GGUFSummary:
    """Architecture, file type, context and embedding length for ``/api/tags``: only the
    key/values are read (arrays skipped, not decoded), not the tensor table. Unlike Ollama's
    list reader it does not stop at the tokenizer keys, since some files put
    ``general.file_type`` after them."""
    summary = _read(path, 0, summary=True)
    assert isinstance(summary, GGUFSummary)
    return summary


def _read(path: str | os.PathLike[str], max_array: int | None, *, summary: bool) -> Any:
    p = str(Path(path))
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 4 or f.read(4) != GGUF_MAGIC:
                raise CorruptModel(p, "invalid file magic")
            if size < 24:
                raise CorruptModel(p, f"file is truncated ({size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(p, buf, max_array, summary)
    except _Truncated:
        raise CorruptModel(
            p, "file is truncated: the header runs past the end of the file"
        ) from None
    except (ValueError, struct.error, OverflowError) as exc:
        raise CorruptModel(p, str(exc)) from None
    except OSError as exc:  # unreadable, a directory, a file that cannot be mapped
        raise CorruptModel(p, exc.strerror or str(exc)) from None


#: Token pairs that mark a fill-in-the-middle vocabulary when the GGUF names no FIM token ids.
FIM_TOKEN_PAIRS = (("<fim_prefix>", "<fim_suffix>"), ("<|fim_prefix|>", "<|fim_suffix|>"))


def _has_fim_pair(h: _Header, buf: mmap.mmap, span: tuple[int, int]) -> bool:
    """Whether the vocabulary holds a FIM pair, found in the raw bytes without decoding 50k
    strings: each token is stored as its length then its bytes, so a length-prefixed search
    matches whole tokens only."""
    start, end = span
    if start == end:
        return False

    def stored(token: str) -> bytes:
        data = token.encode()
        return struct.pack(h.endian + h.len_code, len(data)) + data

    return any(buf.find(stored(a), start, end) >= 0 and buf.find(stored(b), start, end) >= 0
               for a, b in FIM_TOKEN_PAIRS)


def _parse(path: str, buf: mmap.mmap, max_array: int | None, summary: bool) -> Any:
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version & 0xFFFF == 0:  # written on a big-endian machine
        endian, (version,) = ">", struct.unpack_from(">I", buf, 4)
    if version not in (1, 2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    h = _Header(buf, endian, version)
    h.pos = 8
    n_tensors, n_kv = h.unpack(h.len_code), h.unpack(h.len_code)

    kv: dict[str, Any] = {}
    tokens = (0, 0)  # where the vocabulary's strings lie, for the FIM test of a summary
    for _ in range(n_kv):
        key = h.string()
        start = h.pos
        kv[key] = h.value(h.unpack("I"), max_array)
        if key == "tokenizer.ggml.tokens":
            tokens = (start, h.pos)
    if summary:
        arch = kv.get("general.architecture")
        arch = arch if isinstance(arch, str) else "unknown"
        template = kv.get("tokenizer.chat_template")
        return GGUFSummary(
            chat_template=template if isinstance(template, str) else None,
            has_fim_tokens="tokenizer.ggml.fim_pre_token_id" in kv or _has_fim_pair(h, buf, tokens),
            has_vision_tower=f"{arch}.vision.block_count" in kv,
            architecture=arch,
            file_type=_file_type(kv),
            general_type=_general_type(kv),
            context_length=_int_or_none(kv.get(f"{arch}.context_length")),
            embedding_length=_int_or_none(kv.get(f"{arch}.embedding_length")),
            has_pooling_type=f"{arch}.pooling_type" in kv,
        )

    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = h.string()
        n_dims = h.unpack("I")
        if n_dims > MAX_TENSOR_DIMS:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_TENSOR_DIMS})")
        shape = tuple(h.unpack("Q") for _ in range(n_dims))
        ggml_type, offset = h.unpack("I"), h.unpack("Q")
        tensors.append(TensorInfo(name, tensor_type_name(ggml_type), shape, ggml_type, offset))

    alignment = kv.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ValueError(f"invalid GGUF alignment: {alignment}")
    data_start = -(-h.pos // alignment) * alignment
    _check_tensor_data(path, tensors, data_start, h.size)

    parameter_count = sum(t.n_elements for t in tensors)
    kv["general.parameter_count"] = parameter_count  # Ollama patches in the tensor sum
    arch = kv.get("general.architecture")
    arch = arch if isinstance(arch, str) else "unknown"
    template = kv.get("tokenizer.chat_template")
    return GGUFInfo(
        path=path,
        version=version,
        architecture=arch,
        parameter_count=parameter_count,
        file_type=_file_type(kv),
        general_type=_general_type(kv),
        context_length=_int_or_none(kv.get(f"{arch}.context_length")),
        embedding_length=_int_or_none(kv.get(f"{arch}.embedding_length")),
        chat_template=template if isinstance(template, str) and template else None,
        kv=kv,
        tensors=tuple(tensors),
    )


def _file_type(kv: Mapping[str, Any]) -> str:
    ftype = kv.get("general.file_type")
    return file_type_name(ftype if isinstance(ftype, int) else None)


def _general_type(kv: Mapping[str, Any]) -> str:
    """``general.type`` ("model", "adapter", "mmproj"...); files from before the key are models."""
    gtype = kv.get("general.type")
    return gtype if isinstance(gtype, str) and gtype else "model"


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _check_tensor_data(path: str, tensors: list[TensorInfo], start: int, size: int) -> None:
    sizes = _quant_sizes()
    end = 0  # a file without tensors (an adapter stub, a test file) needs no data section
    for t in tensors:
        block = sizes.get(t.ggml_type)
        n_bytes = t.n_elements // block[0] * block[1] if block else 0
        end = max(end, start + t.offset + n_bytes)
    if end > size:
        raise CorruptModel(path, f"file is truncated: tensor data needs {end} bytes, has {size}")
