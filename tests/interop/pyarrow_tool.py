#!/usr/bin/env python3
"""pyarrow interop peer for the fhir-pme Deno tests.

This script is driven by the Deno test-suite (``tests/interop``).  It produces
plaintext Parquet test inputs, compares Parquet files value by value, and acts
as the "other implementation" for Parquet Modular Encryption (PME): it writes
files encrypted by pyarrow and decrypts files written by our TypeScript engine.

Requirements: Python 3.11, the standard library and pyarrow (tested with
pyarrow 26.0.1).  Run it with the project venv::

    .venv/bin/python tests/interop/pyarrow_tool.py <subcommand> ...

Subcommands (all print JSON on stdout; exit 0 on success, non-zero with a
single ``error: ...`` line on stderr on failure):

``gen-inputs OUTDIR``
    Write a grid of plaintext Parquet files (all physical types, nulls, nested
    types, dictionary/plain/delta encodings, data page V1/V2, page index,
    bloom filters, page checksums, several compressions, row groups and
    pages) and print ``[{"file", "features", "rows", ...}]``.

``compare A B [--columns a,b.c] [--show-values]``
    Check that two plaintext Parquet files hold the same schema (names and
    Arrow types of the selected columns) and the same values.  Exit 1 and
    describe the first difference otherwise.

``write-encrypted IN OUT [--footer-key ID=HEX] [--column-key COL:ID=HEX ...]
[--uniform] [--algorithm AES_GCM_V1|AES_GCM_CTR_V1] [--plaintext-footer]
[--aad-prefix TEXT] [--no-store-aad-prefix] [--data-page-version 1.0|2.0]
[--double-wrapping] [--external-key-material] [--key-tools]
[--data-key-bits 128|192|256] [--compression C] [--[no-]page-index]
[--page-checksum] [--no-dictionary] [--data-page-size N] [--bloom-filter COL]``
    Re-write plaintext IN (row group by row group, so the row-group layout is
    kept) as a pyarrow-encrypted OUT.

    * ``--uniform`` (and none of ``--double-wrapping``,
      ``--external-key-material``, ``--key-tools``): low-level
      ``pe.create_encryption_properties(footer_key_bytes, ...)``; the footer
      HEX is the real key, the file carries no key metadata, the AAD prefix
      options apply.
    * otherwise ``pe.CryptoFactory`` with the *identity* test KMS
      (``wrap_key`` = base64(key), ``unwrap_key`` = base64-decode); IDs are
      master-key IDs, HEX values are only syntax-checked (DEKs are random);
      single wrapping and internal key material unless asked otherwise.
      ``COL`` may list several columns (``a,b.c:ID=HEX``).  An AAD prefix is
      not possible on this path (error).
    Defaults: compression and page index as in IN, INT96 kept, data page 1.0.

``read-encrypted IN OUT [--footer-key ID=HEX] [--aad-prefix TEXT] [--columns a,b]``
    Decrypt IN with pyarrow and write its content as plaintext Parquet OUT.

``identity-key-metadata MASTER_ID HEX [--footer]``
    Print (without trailing newline) the exact PKMT1 key-metadata JSON that
    pyarrow's ``CryptoFactory`` writes for that data key when the identity KMS,
    single wrapping and internal key material are used.

``inspect-crypto FILE``
    Print non-secret facts about an encrypted file's crypto metadata (footer
    mode, algorithm, AAD prefix storage, key-metadata fields with the wrapped
    keys redacted).  Parsed with the small compact-Thrift reader below.

Key bytes are never printed, with one deliberate exception:
``identity-key-metadata`` must output ``base64(key)`` because that *is* the
identity KMS's wrapped key.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as _dt
import decimal
import json
import math
import os
import random
import struct
import sys
import time
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

# ---------------------------------------------------------------------------
# Errors / small helpers
# ---------------------------------------------------------------------------


class ToolError(Exception):
    """A user-facing error: reported as one ``error: ...`` line, exit code 2."""


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")


def parse_key_hex(key_id: str, hex_text: str) -> bytes:
    """Decode a 16/24/32-byte key given as hex; the error never echoes the key."""
    try:
        key = binascii.unhexlify(hex_text.strip())
    except (binascii.Error, ValueError):
        raise ToolError(f"key {key_id!r}: HEX is not valid hexadecimal") from None
    if len(key) not in (16, 24, 32):
        raise ToolError(f"key {key_id!r}: must be 16, 24 or 32 bytes, got {len(key)}")
    return key


def parse_id_hex(spec: str, what: str) -> tuple[str, bytes]:
    """Parse ``ID=HEX`` (used by ``--footer-key``)."""
    key_id, sep, hex_text = spec.rpartition("=")
    if not sep or not key_id:
        raise ToolError(f"{what}: expected ID=HEX")
    return key_id, parse_key_hex(key_id, hex_text)


def parse_column_key(spec: str) -> tuple[list[str], str, bytes]:
    """Parse ``COL:ID=HEX`` (``COL`` may be ``a,b.c`` to list several columns)."""
    left, sep, hex_text = spec.rpartition("=")
    if not sep:
        raise ToolError("--column-key: expected COL:ID=HEX")
    cols_text, sep, key_id = left.rpartition(":")
    if not sep or not cols_text or not key_id:
        raise ToolError("--column-key: expected COL:ID=HEX")
    cols = [c for c in cols_text.split(",") if c]
    if not cols:
        raise ToolError("--column-key: empty column list")
    return cols, key_id, parse_key_hex(key_id, hex_text)


def _split_columns(text: str | None) -> list[str] | None:
    if text is None:
        return None
    cols = [c.strip() for c in text.split(",") if c.strip()]
    if not cols:
        raise ToolError("--columns: empty column list")
    return cols


# ---------------------------------------------------------------------------
# Identity KMS (test only: the "wrapped" key is just base64 of the key)
# ---------------------------------------------------------------------------


class IdentityKmsClient(pe.KmsClient):
    """Test KMS: ``wrap_key`` returns base64(key) (standard alphabet, padded),
    ``unwrap_key`` base64-decodes.  The master key ID is ignored."""

    def __init__(self, kms_connection_config: pe.KmsConnectionConfig | None = None):
        pe.KmsClient.__init__(self)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return base64.b64encode(key_bytes).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return base64.b64decode(wrapped_key, validate=True)


def identity_crypto_factory() -> pe.CryptoFactory:
    """A ``CryptoFactory`` whose KMS clients are :class:`IdentityKmsClient`."""
    return pe.CryptoFactory(lambda config: IdentityKmsClient(config))


def identity_key_metadata(master_key_id: str, key: bytes, footer: bool) -> str:
    """The compact PKMT1 JSON pyarrow's CryptoFactory writes for ``key`` with
    the identity KMS (internal storage, single wrapping), in Arrow C++ field
    order: keyMaterialType, internalStorage, isFooterKey, [kmsInstanceID,
    kmsInstanceURL (footer key only, "DEFAULT")], masterKeyID, wrappedDEK,
    doubleWrapping."""
    obj: dict[str, Any] = {
        "keyMaterialType": "PKMT1",
        "internalStorage": True,
        "isFooterKey": footer,
    }
    if footer:
        obj["kmsInstanceID"] = "DEFAULT"
        obj["kmsInstanceURL"] = "DEFAULT"
    obj["masterKeyID"] = master_key_id
    obj["wrappedDEK"] = base64.b64encode(key).decode("ascii")
    obj["doubleWrapping"] = False
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------
# Minimal compact-Thrift reader (generic: struct -> {field_id: value})
# ---------------------------------------------------------------------------


class CompactReader:
    """Decode Thrift compact-protocol data into plain Python values.

    Structs become ``{field_id: value}``, binaries ``bytes``, lists ``list``,
    maps ``dict``, integers ``int``; unions are structs with one field."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf = buf
        self.pos = pos

    def _byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ToolError("truncated Thrift data")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self._byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ToolError("bad varint in Thrift data")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def read_struct(self) -> dict[int, Any]:
        fields: dict[int, Any] = {}
        last = 0
        while True:
            header = self._byte()
            if header == 0:
                return fields
            ftype = header & 0x0F
            delta = header >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            fields[fid] = self.read_value(ftype)

    def read_value(self, ftype: int, in_collection: bool = False) -> Any:
        if ftype in (1, 2):
            if in_collection:
                return self._byte() == 1
            return ftype == 1
        if ftype == 3:
            b = self._byte()
            return b - 256 if b > 127 else b
        if ftype in (4, 5, 6):
            return self.zigzag()
        if ftype == 7:
            end = self.pos + 8
            (v,) = struct.unpack("<d", self.buf[self.pos:end])
            self.pos = end
            return v
        if ftype == 8:
            n = self.varint()
            end = self.pos + n
            if end > len(self.buf):
                raise ToolError("truncated Thrift binary")
            v = self.buf[self.pos:end]
            self.pos = end
            return v
        if ftype in (9, 10):
            header = self._byte()
            size = header >> 4
            etype = header & 0x0F
            if size == 15:
                size = self.varint()
            return [self.read_value(etype, True) for _ in range(size)]
        if ftype == 11:
            size = self.varint()
            if size == 0:
                return {}
            kv = self._byte()
            out = {}
            for _ in range(size):
                k = self.read_value(kv >> 4, True)
                out[k] = self.read_value(kv & 0x0F, True)
            return out
        if ftype == 12:
            return self.read_struct()
        raise ToolError(f"unknown Thrift compact type {ftype}")


PAGE_TYPES = {0: "DATA_PAGE", 1: "INDEX_PAGE", 2: "DICTIONARY_PAGE", 3: "DATA_PAGE_V2"}
ENCODINGS = {
    0: "PLAIN", 2: "PLAIN_DICTIONARY", 3: "RLE", 4: "BIT_PACKED",
    5: "DELTA_BINARY_PACKED", 6: "DELTA_LENGTH_BYTE_ARRAY", 7: "DELTA_BYTE_ARRAY",
    8: "RLE_DICTIONARY", 9: "BYTE_STREAM_SPLIT",
}


def scan_pages(path: str) -> list[dict[str, Any]]:
    """Walk the page headers of every column chunk of a *plaintext* file.

    Returns one dict per column chunk: ``path``, ``row_group``, ``pages``
    (list of ``(page_type, encoding_or_None, has_crc)``)."""
    md = pq.ParquetFile(path).metadata
    out = []
    with open(path, "rb") as f:
        data = f.read()
    for rg in range(md.num_row_groups):
        rgm = md.row_group(rg)
        for ci in range(rgm.num_columns):
            col = rgm.column(ci)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset:
                start = min(start, col.dictionary_page_offset)
            end = start + col.total_compressed_size
            pos = start
            pages = []
            while pos < end:
                r = CompactReader(data, pos)
                hdr = r.read_struct()
                ptype = PAGE_TYPES.get(hdr.get(1), str(hdr.get(1)))
                enc = None
                if 5 in hdr:
                    enc = ENCODINGS.get(hdr[5].get(2))
                elif 8 in hdr:
                    enc = ENCODINGS.get(hdr[8].get(4))
                elif 7 in hdr:
                    enc = ENCODINGS.get(hdr[7].get(2))
                pages.append((ptype, enc, 4 in hdr))
                pos = r.pos + hdr[3]
            out.append({"path": col.path_in_schema, "row_group": rg, "pages": pages})
    return out


def inspect_crypto_raw(path: str) -> dict[str, Any]:
    """Read crypto metadata that is visible without keys.

    * ``PARE`` files: the FileCryptoMetaData (algorithm + footer key metadata).
    * ``PAR1`` files with a plaintext footer: FileMetaData fields 8
      (encryption_algorithm), 9 (footer_signing_key_metadata) and every
      ColumnChunk's crypto_metadata (column key metadata).

    Returned key metadata values are raw ``bytes`` (they may contain wrapped
    keys, so the CLI redacts them)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12:
        raise ToolError("file too short to be Parquet")
    magic = data[-4:]
    (flen,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - flen
    if start < 4:
        raise ToolError("bad footer length")
    res: dict[str, Any] = {"magic": magic.decode("latin-1")}
    if magic == b"PARE":
        fcmd = CompactReader(data, start).read_struct()
        alg = fcmd.get(1, {})
        res["footer"] = "encrypted"
        res["footer_key_metadata"] = fcmd.get(2)
        res["column_key_metadata"] = None  # inside the encrypted footer
    elif magic == b"PAR1":
        fmd = CompactReader(data, start).read_struct()
        alg = fmd.get(8)
        if alg is None:
            res["footer"] = "plaintext-unencrypted-file"
            return res
        res["footer"] = "plaintext"
        res["footer_key_metadata"] = fmd.get(9)
        cols: dict[str, Any] = {}
        for rg in fmd.get(4, []):
            for cc in rg.get(1, []):
                cm = cc.get(8)
                if cm is None:
                    continue
                if 2 in cm:
                    p = ".".join(x.decode("utf-8") for x in cm[2].get(1, []))
                    cols.setdefault(p, cm[2].get(2))
                else:
                    p = ".".join(x.decode("utf-8") for x in cc.get(3, {}).get(3, []))
                    cols.setdefault(p, "footer-key")
        res["column_key_metadata"] = cols
    else:
        raise ToolError("not a Parquet file (bad magic)")
    if 1 in alg:
        res["algorithm"], params = "AES_GCM_V1", alg[1]
    elif 2 in alg:
        res["algorithm"], params = "AES_GCM_CTR_V1", alg[2]
    else:
        res["algorithm"], params = "unknown", {}
    res["aad_prefix_stored"] = 1 in params
    res["supply_aad_prefix"] = bool(params.get(3, False))
    res["aad_file_unique_len"] = len(params.get(2, b""))
    return res


def _redacted_key_metadata(raw: Any) -> Any:
    if not isinstance(raw, (bytes, bytearray)):
        return raw
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"raw_len": len(raw)}
    if not isinstance(obj, dict):
        return {"raw_len": len(raw)}
    return {
        "fields": list(obj.keys()),
        **{k: v for k, v in obj.items() if k not in ("wrappedDEK", "wrappedKEK")},
    }


# ---------------------------------------------------------------------------
# gen-inputs
# ---------------------------------------------------------------------------

SEED = 20260601
N_ROWS = 6000

LIST_STRUCT = pa.struct([("a", pa.int32()), ("b", pa.string())])
NESTED_STRUCT = pa.struct([("x", pa.float64()), ("y", pa.struct([("z", pa.string())]))])
MAP_SI = pa.map_(pa.string(), pa.int32())

FULL_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("bool_opt", pa.bool_()),
    pa.field("i32_req", pa.int32(), nullable=False),
    pa.field("i64_opt", pa.int64()),
    pa.field("ts_int96", pa.timestamp("ns")),
    pa.field("f32_opt", pa.float32()),
    pa.field("f64_req", pa.float64(), nullable=False),
    pa.field("str_opt", pa.string()),
    pa.field("bin_opt", pa.binary()),
    pa.field("fixed16_opt", pa.binary(16)),
    pa.field("dec_opt", pa.decimal128(20, 4)),
    pa.field("all_null_str", pa.string()),
    pa.field("list_i64", pa.list_(pa.int64())),
    pa.field("list_struct", pa.list_(LIST_STRUCT)),
    pa.field("struct_nested", NESTED_STRUCT),
    pa.field("map_si", MAP_SI),
])
FLAT_COLUMNS = ["id", "bool_opt", "i32_req", "i64_opt", "ts_int96", "f32_opt",
                "f64_req", "str_opt", "bin_opt", "fixed16_opt", "dec_opt"]

_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
          "Ärger", "naïve", "日本語", "Ελληνικά", "emoji😀", "line\nbreak", "tab\there"]


def build_table(n: int = N_ROWS, seed: int = SEED) -> pa.Table:
    """Deterministic test table; edge values sit in the first 20 rows."""
    rnd = random.Random(seed)
    cols: dict[str, list[Any]] = {name: [] for name in FULL_SCHEMA.names}
    i32_edges = [0, -1, 1, 2**31 - 1, -(2**31)]
    i64_edges = [0, -1, 2**63 - 1, -(2**63), 1]
    f32_edges = [0.0, -0.0, 1.5, -3.25, float("inf"), float("-inf"), 1e-45, 3.4028234663852886e38]
    f64_edges = [0.0, -1.5, 1e308, -1e-308, float("inf"), 5e-324, -0.0]
    str_edges = ["", "ä", "日本語テキスト", "emoji 😀👍", "quote\"back\\slash", "x" * 3000, " "]
    bin_edges = [b"", b"\x00", b"\xff\xfe\x00\x01", bytes(range(256))]
    dec_edges = [decimal.Decimal("0.0000"), decimal.Decimal("-9999999999999999.9999"),
                 decimal.Decimal("9999999999999999.9999"), decimal.Decimal("-0.0001")]
    ts_base = _dt.datetime(2020, 1, 1)
    ts_edges = [_dt.datetime(1900, 1, 1), _dt.datetime(1970, 1, 1),
                _dt.datetime(2099, 12, 31, 23, 59, 59, 999999), _dt.datetime(1969, 12, 31, 23, 59, 59)]
    q = decimal.Decimal("0.0001")
    for i in range(n):
        cols["id"].append(i)
        cols["bool_opt"].append(None if i % 7 == 3 else rnd.random() < 0.5)
        cols["i32_req"].append(i32_edges[i] if i < len(i32_edges) else rnd.randint(-1000, 1000))
        if i % 11 == 5:
            cols["i64_opt"].append(None)
        else:
            cols["i64_opt"].append(i64_edges[i] if i < len(i64_edges) else rnd.randint(-(2**62), 2**62))
        if i % 13 == 6:
            cols["ts_int96"].append(None)
        elif i < len(ts_edges):
            cols["ts_int96"].append(ts_edges[i])
        else:
            cols["ts_int96"].append(ts_base + _dt.timedelta(seconds=rnd.randint(-10**8, 10**8),
                                                            microseconds=rnd.randint(0, 999999)))
        if i % 17 == 8:
            cols["f32_opt"].append(None)
        elif i < len(f32_edges):
            cols["f32_opt"].append(f32_edges[i])
        else:  # exactly representable in float32
            cols["f32_opt"].append(struct.unpack("<f", struct.pack("<f", rnd.uniform(-1e6, 1e6)))[0])
        cols["f64_req"].append(f64_edges[i] if i < len(f64_edges) else rnd.uniform(-1e9, 1e9))
        if i % 5 == 4:
            cols["str_opt"].append(None)
        elif i < len(str_edges):
            cols["str_opt"].append(str_edges[i])
        else:
            cols["str_opt"].append(f"{rnd.choice(_WORDS)}-{rnd.randint(0, 300)}")
        if i % 6 == 5:
            cols["bin_opt"].append(None)
        elif i < len(bin_edges):
            cols["bin_opt"].append(bin_edges[i])
        else:
            cols["bin_opt"].append(rnd.randbytes(rnd.randint(0, 24)))
        cols["fixed16_opt"].append(None if i % 9 == 2 else rnd.randbytes(16))
        if i % 8 == 7:
            cols["dec_opt"].append(None)
        elif i < len(dec_edges):
            cols["dec_opt"].append(dec_edges[i])
        else:
            cols["dec_opt"].append((decimal.Decimal(rnd.randint(-10**12, 10**12)) / 997).quantize(q))
        cols["all_null_str"].append(None)
        # list<int64>: null lists, empty lists, null elements
        if i % 9 == 4:
            cols["list_i64"].append(None)
        elif i % 10 == 0:
            cols["list_i64"].append([])
        else:
            cols["list_i64"].append([None if rnd.random() < 0.1 else rnd.randint(-(2**40), 2**40)
                                     for _ in range(rnd.randint(1, 5))])
        # list<struct<a:int32,b:string>>
        if i % 12 == 3:
            cols["list_struct"].append(None)
        elif i % 12 == 7:
            cols["list_struct"].append([])
        else:
            items = []
            for _ in range(rnd.randint(1, 3)):
                r = rnd.random()
                if r < 0.08:
                    items.append(None)
                else:
                    items.append({"a": None if r < 0.15 else rnd.randint(-500, 500),
                                  "b": None if 0.15 <= r < 0.22 else rnd.choice(_WORDS + [""])})
            cols["list_struct"].append(items)
        # struct<x:double, y:struct<z:string>>
        r = rnd.random()
        if i % 14 == 9:
            cols["struct_nested"].append(None)
        else:
            y = None if r < 0.1 else {"z": None if r < 0.2 else rnd.choice(_WORDS + [""])}
            x = None if 0.2 <= r < 0.3 else round(rnd.uniform(-100, 100), 6)
            cols["struct_nested"].append({"x": x, "y": y})
        # map<string,int32>
        if i % 15 == 2:
            cols["map_si"].append(None)
        elif i % 15 == 11:
            cols["map_si"].append([])
        else:
            keys = rnd.sample(["k0", "k1", "k2", "ключ", "", "k😀"], rnd.randint(1, 3))
            cols["map_si"].append([(k, None if rnd.random() < 0.1 else rnd.randint(-10**6, 10**6))
                                   for k in keys])
    arrays = [pa.array(cols[f.name], type=f.type) for f in FULL_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FULL_SCHEMA)


def _leaf_paths(path: str) -> list[str]:
    md = pq.ParquetFile(path).metadata
    return [md.schema.column(i).path for i in range(md.num_columns)]


ALL_PHYSICAL = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"}
_DICT_ENCS = {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}


def _describe_file(path: str, declared: list[str], table: pa.Table) -> dict[str, Any]:
    """Derive the features of a written file from its metadata and page headers.

    The vocabulary follows ``tests/fixtures/inputs.ts`` (producer, ``v1``/``v2``,
    codec, ``dict``/``plain``/``dict-fallback``/``delta``, ``bloom``,
    ``page-index``/``offset-index``, ``all-types``, ``nested``, ``map``,
    ``nulls``, ``multi-rowgroup``, ``multi-page``; ``plain`` = some column
    chunk has no dictionary page, ``v1``/``v2`` = DATA_PAGE / DATA_PAGE_V2
    headers seen) plus pyarrow-only tags:
    ``page-crc``, ``byte-stream-split``, ``physical:<TYPE>``, ``int96``,
    ``decimal``, ``flba``, ``required``, ``repeated``, ``empty`` and the
    ``nested:<arrow type>`` details."""
    pf = pq.ParquetFile(path)
    md = pf.metadata
    feats: list[str] = ["pyarrow"]
    physical = {md.schema.column(i).physical_type for i in range(md.num_columns)}
    if physical >= ALL_PHYSICAL:
        feats.append("all-types")
    feats += [f"physical:{p}" for p in sorted(physical)]
    if "INT96" in physical:
        feats.append("int96")
    if "FIXED_LEN_BYTE_ARRAY" in physical:
        feats.append("flba")
    if any(pa.types.is_decimal(f.type) for f in table.schema):
        feats.append("decimal")
    if any(md.schema.column(i).max_repetition_level > 0 for i in range(md.num_columns)):
        feats.append("repeated")
    names = set(table.column_names)
    if any(pa.types.is_nested(f.type) and not pa.types.is_map(f.type) for f in table.schema):
        feats.append("nested")
    if any(pa.types.is_map(f.type) for f in table.schema):
        feats.append("map")
    for col, feat in (("list_i64", "nested:list<int64>"),
                      ("list_struct", "nested:list<struct<a:int32,b:string>>"),
                      ("struct_nested", "nested:struct<x:double,y:struct<z:string>>"),
                      ("map_si", "nested:map<string,int32>")):
        if col in names:
            feats.append(feat)
    if any(not f.nullable for f in table.schema):
        feats.append("required")
    if any(table.column(c).null_count > 0 for c in table.column_names):
        feats.append("nulls")
    codecs: set[str] = set()
    col_index = off_index = bloom = False
    for rg in range(md.num_row_groups):
        for ci in range(md.num_columns):
            c = md.row_group(rg).column(ci)
            codecs.add(c.compression.lower())
            col_index |= bool(c.has_column_index)
            off_index |= bool(c.has_offset_index)
            bloom |= c.bloom_filter_offset is not None
    feats += sorted(codecs)
    if len(codecs) > 1:
        feats.append("mixed-codec")
    if col_index and off_index:
        feats.append("page-index")
    elif off_index:
        feats.append("offset-index")
    if bloom:
        feats.append("bloom")
    if md.num_row_groups > 1:
        feats.append("multi-rowgroup")
    if md.num_rows == 0:
        feats.append("empty")
    chunks = scan_pages(path) if md.num_rows else []
    page_types = {p[0] for ch in chunks for p in ch["pages"]}
    encs = {p[1] for ch in chunks for p in ch["pages"] if p[0] != "DICTIONARY_PAGE"}
    if "DATA_PAGE" in page_types:
        feats.append("v1")
    if "DATA_PAGE_V2" in page_types:
        feats.append("v2")
    if "DICTIONARY_PAGE" in page_types:
        feats.append("dict")
    if any(ch["pages"] and all(p[0] != "DICTIONARY_PAGE" for p in ch["pages"]) for ch in chunks):
        feats.append("plain")  # at least one column chunk without dictionary
    if encs & {"DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY"}:
        feats.append("delta")
    if "BYTE_STREAM_SPLIT" in encs:
        feats.append("byte-stream-split")
    if any(ch["pages"] and _DICT_ENCS & {p[1] for p in ch["pages"]}
           and {p[1] for p in ch["pages"] if p[0] != "DICTIONARY_PAGE"} - _DICT_ENCS for ch in chunks):
        feats.append("dict-fallback")
    if chunks and all(p[2] for ch in chunks for p in ch["pages"]):
        feats.append("page-crc")
    max_pages = max((sum(1 for p in ch["pages"] if p[0] != "DICTIONARY_PAGE") for ch in chunks), default=0)
    if max_pages > 1:
        feats.append("multi-page")
    feats += declared
    seen: set[str] = set()
    feats = [f for f in feats if not (f in seen or seen.add(f))]
    return {
        "file": os.path.abspath(path),
        "features": feats,
        "rows": md.num_rows,
        "row_groups": md.num_row_groups,
        "max_data_pages_per_chunk": max_pages,
        "leaf_columns": _leaf_paths(path),
        "size": os.path.getsize(path),
    }


def _variants() -> list[tuple[str, dict[str, Any], dict[str, Any], list[str]]]:
    """(file name, table selection, pq.write_table kwargs, declared features)."""
    all_leaves_dict = ["i32_req", "str_opt", "list_i64.list.element", "map_si.key_value.key",
                       "map_si.key_value.value", "struct_nested.y.z", "list_struct.list.element.b"]
    bloom_small = {"id": {"ndv": 1000, "fpp": 0.05}, "i32_req": {"ndv": 1000, "fpp": 0.05},
                   "str_opt": {"ndv": 1000, "fpp": 0.05}, "fixed16_opt": {"ndv": 1000, "fpp": 0.05},
                   "dec_opt": {"ndv": 1000, "fpp": 0.05}, "ts_int96": {"ndv": 1000, "fpp": 0.05},
                   "list_i64.list.element": {"ndv": 2000, "fpp": 0.05},
                   "struct_nested.y.z": {"ndv": 100, "fpp": 0.05},
                   "bin_opt": True}
    edges = ["edge-values", "unicode", "empty-strings", "long-value"]
    return [
        ("pyarrow_v1_snappy_dict.parquet", {"rows": 1000},
         dict(compression="snappy", use_dictionary=True, data_page_version="1.0"), edges),
        ("pyarrow_v1_none_plain.parquet", {"rows": 1000},
         dict(compression="none", use_dictionary=False, data_page_version="1.0"), edges),
        ("pyarrow_v2_zstd_dict_pageindex.parquet", {"rows": 1000},
         dict(compression="zstd", use_dictionary=True, data_page_version="2.0", write_page_index=True), edges),
        ("pyarrow_v2_gzip_plain_checksum.parquet", {"rows": 1000},
         dict(compression="gzip", use_dictionary=False, data_page_version="2.0", write_page_checksum=True), edges),
        ("pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet", {"rows": N_ROWS},
         dict(compression="snappy", use_dictionary=all_leaves_dict, data_page_version="1.0",
              row_group_size=2000, data_page_size=1024, write_batch_size=128,
              write_page_index=True, write_page_checksum=True), edges + ["mixed-dict"]),
        ("pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet", {"rows": N_ROWS},
         dict(compression="zstd", use_dictionary=True, data_page_version="2.0",
              row_group_size=2500, data_page_size=1024, write_batch_size=128, dictionary_pagesize_limit=2048,
              write_page_index=True, write_page_checksum=True), edges + ["uneven-rowgroups"]),
        ("pyarrow_v1_gzip_plain_multipage.parquet", {"rows": N_ROWS},
         dict(compression="gzip", use_dictionary=False, data_page_version="1.0",
              data_page_size=1024, write_batch_size=128), edges),
        ("pyarrow_v1_snappy_dict_bloom_pageindex.parquet", {"rows": 1000},
         dict(compression="snappy", use_dictionary=True, data_page_version="1.0",
              write_page_index=True, bloom_filter_options=bloom_small), edges),
        ("pyarrow_v2_none_plain_bloom_multirg.parquet", {"rows": 3000},
         dict(compression="none", use_dictionary=False, data_page_version="2.0",
              row_group_size=1000, bloom_filter_options=bloom_small), edges),
        ("pyarrow_v2_snappy_delta_bss.parquet", {"rows": 1000},
         dict(compression="snappy", use_dictionary=False, data_page_version="2.0",
              column_encoding={"id": "DELTA_BINARY_PACKED", "i32_req": "DELTA_BINARY_PACKED",
                               "i64_opt": "DELTA_BINARY_PACKED", "str_opt": "DELTA_BYTE_ARRAY",
                               "bin_opt": "DELTA_LENGTH_BYTE_ARRAY", "f32_opt": "BYTE_STREAM_SPLIT",
                               "f64_req": "BYTE_STREAM_SPLIT",
                               "list_i64.list.element": "DELTA_BINARY_PACKED"}), edges),
        ("pyarrow_v1_none_plain_flat.parquet", {"rows": 200, "columns": FLAT_COLUMNS},
         dict(compression="none", use_dictionary=False, data_page_version="1.0"), edges + ["flat"]),
        ("pyarrow_v1_snappy_dict_flat.parquet", {"rows": 200, "columns": FLAT_COLUMNS},
         dict(compression="snappy", use_dictionary=True, data_page_version="1.0"), edges + ["flat"]),
        ("pyarrow_v1_snappy_empty.parquet", {"rows": 0},
         dict(compression="snappy", use_dictionary=True, data_page_version="1.0"), []),
    ]


def gen_inputs(outdir: str) -> list[dict[str, Any]]:
    """Write all input variants into ``outdir``; return their descriptions."""
    os.makedirs(outdir, exist_ok=True)
    full = build_table()
    results = []
    for name, sel, kwargs, declared in _variants():
        table = full.slice(0, sel["rows"])
        if "columns" in sel:
            table = table.select(sel["columns"])
        path = os.path.join(outdir, name)
        pq.write_table(table, path, use_deprecated_int96_timestamps=True, **kwargs)
        results.append(_describe_file(path, declared if sel["rows"] else [], table))
    return results


# ---------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------


def _values_equal(a: Any, b: Any) -> bool:
    """Deep equality for ``to_pylist`` values; NaN equals NaN, -0.0 != 0.0,
    bool is not int."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(_values_equal(a[k], b[k]) for k in a)
    return a == b


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 120 else s[:117] + "..."


def _leaf_values(table: pa.Table, dotted: str) -> tuple[pa.DataType, pa.Array]:
    """Flattened values of a dotted Parquet leaf path (``s.y.z``,
    ``l.list.element``, ``m.key_value.key``; shorthands ``l.element``,
    ``m.key``/``m.value`` and skipping list levels also work)."""
    segs = dotted.split(".")
    if segs[0] not in table.column_names:
        raise ToolError(f"column {dotted!r}: no top-level column {segs[0]!r}")
    arr: pa.Array = table.column(segs[0]).combine_chunks()
    i = 1
    while i < len(segs):
        seg = segs[i]
        t = arr.type
        if pa.types.is_map(t):
            arr = arr.cast(pa.list_(pa.struct([t.key_field, t.item_field]))).flatten()
            if seg == "key_value":
                i += 1
            continue
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            arr = arr.flatten()
            if seg == "list":
                i += 1
                if i < len(segs) and segs[i] in ("element", "item"):
                    i += 1
            elif seg in ("element", "item", "array", "bag"):
                i += 1
            continue
        if pa.types.is_struct(t):
            idx = t.get_field_index(seg)
            if idx < 0:
                raise ToolError(f"column {dotted!r}: no field {seg!r}")
            arr = arr.flatten()[idx]
            i += 1
            continue
        raise ToolError(f"column {dotted!r}: {seg!r} below non-nested type {t}")
    return arr.type, arr


def compare_files(a_path: str, b_path: str, columns: list[str] | None,
                  show_values: bool = False) -> tuple[dict[str, Any], str | None]:
    """Compare two plaintext files; return (summary, first difference or None)."""
    ta = pq.read_table(a_path)
    tb = pq.read_table(b_path)
    summary: dict[str, Any] = {"rows": ta.num_rows}
    if ta.num_rows != tb.num_rows:
        return summary, f"row count differs: {ta.num_rows} vs {tb.num_rows}"
    if columns is None:
        if ta.column_names != tb.column_names:
            return summary, f"column names differ: {ta.column_names} vs {tb.column_names}"
        columns = list(ta.column_names)
    summary["columns"] = columns
    for col in columns:
        top_level = col in ta.column_names and col in tb.column_names
        if top_level:
            fa, fb = ta.schema.field(col), tb.schema.field(col)
            ta_type, tb_type = fa.type, fb.type
            va, vb = ta.column(col), tb.column(col)
            unit = "row"
        else:
            if "." not in col:
                return summary, f"column {col!r}: missing in {'A' if col not in ta.column_names else 'B'}"
            ta_type, va = _leaf_values(ta, col)
            tb_type, vb = _leaf_values(tb, col)
            unit = "value index (flattened leaf)"
        if ta_type != tb_type:
            return summary, f"column {col!r}: type differs: {ta_type} vs {tb_type}"
        if len(va) != len(vb):
            return summary, f"column {col!r}: value count differs: {len(va)} vs {len(vb)}"
        if va.equals(vb):
            continue
        la, lb = va.to_pylist(), vb.to_pylist()
        for r, (x, y) in enumerate(zip(la, lb)):
            if not _values_equal(x, y):
                if x is None or y is None:
                    what = f"{'A' if x is None else 'B'} is null, the other is not"
                else:
                    what = "values differ"
                if show_values:
                    what += f" ({_short(x)} vs {_short(y)})"
                return summary, f"column {col!r} {unit} {r}: {what}"
    summary["equal"] = True
    return summary, None


# ---------------------------------------------------------------------------
# write-encrypted / read-encrypted
# ---------------------------------------------------------------------------


def _has_int96(pf: pq.ParquetFile) -> bool:
    md = pf.metadata
    return any(md.schema.column(i).physical_type == "INT96" for i in range(md.num_columns))


def _first_codec(pf: pq.ParquetFile) -> str:
    md = pf.metadata
    if md.num_row_groups and md.num_columns:
        codec = md.row_group(0).column(0).compression.lower()
        return "none" if codec == "uncompressed" else codec
    return "snappy"


def _has_page_index(pf: pq.ParquetFile) -> bool:
    md = pf.metadata
    if md.num_row_groups and md.num_columns:
        c = md.row_group(0).column(0)
        return bool(c.has_offset_index)
    return False


def write_encrypted(args: argparse.Namespace) -> dict[str, Any]:
    """Implementation of ``write-encrypted`` (see module docstring)."""
    if args.algorithm not in ALGORITHMS:
        raise ToolError(f"--algorithm must be one of {', '.join(ALGORITHMS)}")
    footer = parse_id_hex(args.footer_key, "--footer-key") if args.footer_key else None
    column_keys: dict[str, list[str]] = {}
    for spec in args.column_key or []:
        cols, key_id, _key = parse_column_key(spec)  # key bytes unused: DEKs are random
        column_keys.setdefault(key_id, [])
        column_keys[key_id] += [c for c in cols if c not in column_keys[key_id]]
    aad_prefix = args.aad_prefix.encode("utf-8") if args.aad_prefix is not None else None
    if args.no_store_aad_prefix and aad_prefix is None:
        raise ToolError("--no-store-aad-prefix requires --aad-prefix")
    if footer is None:
        raise ToolError("--footer-key ID=HEX is required")
    if args.uniform and column_keys:
        raise ToolError("--uniform cannot be combined with --column-key")
    if not args.uniform and not column_keys:
        raise ToolError("give --uniform or at least one --column-key")

    key_tools = args.key_tools or args.double_wrapping or args.external_key_material
    summary: dict[str, Any] = {"path": os.path.abspath(args.output)}
    out_path = os.path.abspath(args.output)
    if args.uniform and not key_tools:
        props = pe.create_encryption_properties(
            footer[1], aad_prefix=aad_prefix, store_aad_prefix=not args.no_store_aad_prefix,
            encryption_algorithm=args.algorithm, plaintext_footer=args.plaintext_footer)
        summary["mode"] = "low-level-uniform"
    else:
        if aad_prefix is not None:
            raise ToolError("--aad-prefix is not configurable through pyarrow CryptoFactory "
                            "(only with --uniform and the low-level API)")
        config = pe.EncryptionConfiguration(
            footer_key=footer[0],
            column_keys=column_keys if column_keys else None,
            uniform_encryption=bool(args.uniform),
            encryption_algorithm=args.algorithm,
            plaintext_footer=args.plaintext_footer,
            double_wrapping=args.double_wrapping,
            internal_key_material=not args.external_key_material,
            data_key_length_bits=args.data_key_bits,
        )
        factory = identity_crypto_factory()
        props = factory.file_encryption_properties(
            pe.KmsConnectionConfig(), config,
            parquet_file_path=out_path if args.external_key_material else None)
        summary["mode"] = "crypto-factory-uniform" if args.uniform else "crypto-factory-column-keys"
        summary["double_wrapping"] = bool(args.double_wrapping)
        summary["internal_key_material"] = not args.external_key_material
        summary["data_key_bits"] = args.data_key_bits
        if column_keys:
            summary["column_keys"] = column_keys
        if args.external_key_material:
            summary["key_material_file"] = os.path.join(
                os.path.dirname(out_path), "_KEY_MATERIAL_FOR_" + os.path.basename(out_path) + ".json")

    pf = pq.ParquetFile(args.input)
    page_index = _has_page_index(pf) if args.page_index is None else args.page_index
    writer_kwargs: dict[str, Any] = dict(
        compression=args.compression or _first_codec(pf),
        data_page_version=args.data_page_version,
        use_deprecated_int96_timestamps=_has_int96(pf),
        write_page_index=page_index,
        write_page_checksum=args.page_checksum,
        use_dictionary=not args.no_dictionary,
        encryption_properties=props,
    )
    if args.data_page_size:
        writer_kwargs["data_page_size"] = args.data_page_size
        writer_kwargs["write_batch_size"] = min(1024, max(16, args.data_page_size // 8))
    if args.bloom_filter:
        writer_kwargs["bloom_filter_options"] = {c: True for c in args.bloom_filter}
    rows = 0
    with pq.ParquetWriter(out_path, pf.schema_arrow, **writer_kwargs) as writer:
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg)
            rows += t.num_rows
            writer.write_table(t, row_group_size=max(1, t.num_rows))
    with open(out_path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        magic = f.read(4).decode("latin-1")
    summary.update({
        "algorithm": args.algorithm,
        "plaintext_footer_requested": bool(args.plaintext_footer),
        "footer_magic": magic,
        "aad_prefix": aad_prefix is not None,
        "aad_prefix_stored": aad_prefix is not None and not args.no_store_aad_prefix,
        "data_page_version": args.data_page_version,
        "page_index": page_index,
        "rows": rows,
        "row_groups": pf.num_row_groups,
    })
    if args.plaintext_footer and magic == "PARE":
        summary["note"] = "plaintext footer was ignored by pyarrow (uniform CryptoFactory)"
    return summary


def read_encrypted(args: argparse.Namespace) -> dict[str, Any]:
    """Implementation of ``read-encrypted`` (see module docstring)."""
    aad_prefix = args.aad_prefix.encode("utf-8") if args.aad_prefix is not None else None
    in_path = os.path.abspath(args.input)
    if args.footer_key:
        _key_id, key = parse_id_hex(args.footer_key, "--footer-key")
        props = pe.create_decryption_properties(key, aad_prefix=aad_prefix)
        mode = "low-level"
    else:
        if aad_prefix is not None:
            raise ToolError("--aad-prefix needs --footer-key (pyarrow CryptoFactory cannot supply an AAD prefix)")
        props = identity_crypto_factory().file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), parquet_file_path=in_path)
        mode = "crypto-factory"
    pf = pq.ParquetFile(in_path, decryption_properties=props)
    table = pf.read(columns=_split_columns(args.columns))
    pq.write_table(table, args.output, use_deprecated_int96_timestamps=_has_int96(pf))
    return {"rows": table.num_rows, "mode": mode, "columns": table.column_names}


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {_one_line(message)}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyarrow_tool.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    g = sub.add_parser("gen-inputs", help="write plaintext test inputs, print JSON list")
    g.add_argument("outdir")

    c = sub.add_parser("compare", help="compare two plaintext parquet files")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--columns", help="comma list of top-level columns or dotted leaf paths")
    c.add_argument("--show-values", action="store_true",
                   help="include the differing values in the message (test data only)")

    w = sub.add_parser("write-encrypted", help="encrypt a plaintext file with pyarrow")
    w.add_argument("input")
    w.add_argument("output")
    w.add_argument("--footer-key", metavar="ID=HEX")
    w.add_argument("--column-key", action="append", metavar="COL:ID=HEX")
    w.add_argument("--uniform", action="store_true")
    w.add_argument("--algorithm", default="AES_GCM_V1", choices=ALGORITHMS)
    w.add_argument("--plaintext-footer", action="store_true")
    w.add_argument("--aad-prefix", metavar="TEXT")
    w.add_argument("--no-store-aad-prefix", action="store_true")
    w.add_argument("--data-page-version", default="1.0", choices=("1.0", "2.0"))
    w.add_argument("--double-wrapping", action="store_true")
    w.add_argument("--external-key-material", action="store_true")
    w.add_argument("--key-tools", action="store_true",
                   help="with --uniform: use CryptoFactory(uniform_encryption=True) instead of the low-level API")
    w.add_argument("--data-key-bits", type=int, default=128, choices=(128, 192, 256),
                   help="CryptoFactory DEK length (default 128)")
    w.add_argument("--compression", help="codec (default: the input's first column chunk codec)")
    w.add_argument("--page-index", action=argparse.BooleanOptionalAction, default=None,
                   help="write page index (default: as the input)")
    w.add_argument("--page-checksum", action="store_true")
    w.add_argument("--no-dictionary", action="store_true")
    w.add_argument("--data-page-size", type=int, help="small values give several pages per chunk")
    w.add_argument("--bloom-filter", action="append", metavar="COL",
                   help="request a bloom filter (pyarrow 26 refuses this with encryption)")

    r = sub.add_parser("read-encrypted", help="decrypt with pyarrow into a plaintext file")
    r.add_argument("input")
    r.add_argument("output")
    r.add_argument("--footer-key", metavar="ID=HEX")
    r.add_argument("--aad-prefix", metavar="TEXT")
    r.add_argument("--columns")

    k = sub.add_parser("identity-key-metadata", help="print identity-KMS PKMT1 key metadata")
    k.add_argument("master_id")
    k.add_argument("hex")
    k.add_argument("--footer", action="store_true")

    i = sub.add_parser("inspect-crypto", help="print non-secret crypto metadata of a file")
    i.add_argument("file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "gen-inputs":
            _emit(gen_inputs(args.outdir))
        elif args.cmd == "compare":
            summary, diff = compare_files(args.a, args.b, _split_columns(args.columns), args.show_values)
            if diff is not None:
                summary["equal"] = False
                summary["difference"] = diff
                _emit(summary)
                sys.stderr.write(f"error: not equal: {_one_line(diff)}\n")
                return 1
            _emit(summary)
        elif args.cmd == "write-encrypted":
            _emit(write_encrypted(args))
        elif args.cmd == "read-encrypted":
            _emit(read_encrypted(args))
        elif args.cmd == "identity-key-metadata":
            key = parse_key_hex(args.master_id, args.hex)
            sys.stdout.write(identity_key_metadata(args.master_id, key, args.footer))
        elif args.cmd == "inspect-crypto":
            info = inspect_crypto_raw(args.file)
            if "footer_key_metadata" in info:
                info["footer_key_metadata"] = _redacted_key_metadata(info["footer_key_metadata"])
            if isinstance(info.get("column_key_metadata"), dict):
                info["column_key_metadata"] = {
                    k: _redacted_key_metadata(v) for k, v in info["column_key_metadata"].items()}
            _emit(info)
        return 0
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        msg = str(e) if isinstance(e, ToolError) else f"{type(e).__name__}: {e}"
        sys.stderr.write(f"error: {_one_line(msg)}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
