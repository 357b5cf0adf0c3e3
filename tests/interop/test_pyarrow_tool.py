#!/usr/bin/env python3
"""Self-checks for tests/interop/pyarrow_tool.py.

Runs every subcommand end to end through the CLI (subprocess), exactly as the
Deno tests call it.  pytest is not installed in the project venv, so this file
is a plain script with asserts::

    .venv/bin/python tests/interop/test_pyarrow_tool.py

(the ``test_*`` functions also work under pytest if it is ever installed).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "pyarrow_tool.py")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__
import pyarrow_tool  # noqa: E402

TESTING = os.path.join(HERE, "..", "data", "parquet-testing")  # tests/data/parquet-testing
KF_HEX = "30313233343536373839303132333435"  # ASCII "0123456789012345"
KC1_HEX = "31323334353637383930313233343530"  # ASCII "1234567890123450"
KC2_HEX = "31323334353637383930313233343531"

_TMP = tempfile.mkdtemp(prefix="pyarrow_tool_test_")
_GEN: list[dict] | None = None
_GEN_SECONDS = 0.0


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """Run the tool; assert on the exit status and the one-line error rule."""
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, f"{args}: rc={p.returncode} stderr={p.stderr!r}"
        assert p.stderr == "", p.stderr
    else:
        assert p.returncode != 0, f"{args}: unexpectedly succeeded: {p.stdout!r}"
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return p


def gen() -> list[dict]:
    global _GEN, _GEN_SECONDS
    if _GEN is None:
        t0 = time.monotonic()
        p = run("gen-inputs", os.path.join(_TMP, "inputs"))
        _GEN_SECONDS = time.monotonic() - t0
        _GEN = json.loads(p.stdout)
    return _GEN


def input_file(name: str) -> str:
    for e in gen():
        if os.path.basename(e["file"]) == name:
            return e["file"]
    raise AssertionError(f"no generated input {name}")


MULTI_V1 = "pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet"
MULTI_V2 = "pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet"
FLAT = "pyarrow_v1_none_plain_flat.parquet"


# ---------------------------------------------------------------------------


def test_gen_inputs_grid():
    entries = gen()
    assert _GEN_SECONDS < 15, _GEN_SECONDS
    total = 0
    feats: set[str] = set()
    for e in entries:
        assert os.path.isabs(e["file"]) and os.path.exists(e["file"])
        assert isinstance(e["rows"], int) and isinstance(e["features"], list)
        assert pq.ParquetFile(e["file"]).metadata.num_rows == e["rows"]
        total += os.path.getsize(e["file"])
        feats |= set(e["features"])
    assert total < 20 * 1024 * 1024, total
    required = {f"physical:{t}" for t in
                ("BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")}
    required |= {"pyarrow", "all-types", "nulls", "nested", "map", "nested:list<int64>",
                 "nested:list<struct<a:int32,b:string>>", "nested:struct<x:double,y:struct<z:string>>",
                 "nested:map<string,int32>", "dict", "plain", "dict-fallback", "delta", "v1", "v2",
                 "page-index", "bloom", "snappy", "zstd", "gzip", "uncompressed", "page-crc",
                 "multi-rowgroup", "multi-page", "decimal", "int96", "flba", "empty"}
    assert required <= feats, required - feats
    multi = [e for e in entries if "multi-page" in e["features"]]
    assert multi and all(e["rows"] >= 5000 for e in multi)
    assert any("multi-rowgroup" in e["features"] and "multi-page" in e["features"]
               and "v2" in e["features"] for e in entries)
    # deterministic: a second run gives identical files
    again = json.loads(run("gen-inputs", os.path.join(_TMP, "inputs2")).stdout)
    for a, b in zip(entries, again):
        with open(a["file"], "rb") as fa, open(b["file"], "rb") as fb:
            assert fa.read() == fb.read(), a["file"]


def test_compare_equal_and_leaf_paths():
    a = input_file("pyarrow_v1_snappy_dict.parquet")
    b = input_file("pyarrow_v1_none_plain.parquet")  # same data, other encoding
    out = json.loads(run("compare", a, b).stdout)
    assert out["equal"] is True and out["rows"] == 1000 and len(out["columns"]) == 16
    leaves = ("struct_nested.y.z,list_struct.list.element.b,map_si.key_value.key,"
              "map_si.key_value.value,list_i64.list.element,id,struct_nested")
    out = json.loads(run("compare", a, b, "--columns", leaves).stdout)
    assert out["equal"] is True and out["columns"] == leaves.split(",")


def _modified_copy(src: str, dst: str, column: str, row: int, fn) -> None:
    t = pq.read_table(src)
    vals = t.column(column).to_pylist()
    vals[row] = fn(vals[row])
    idx = t.column_names.index(column)
    t = t.set_column(idx, t.schema.field(idx), pa.array(vals, type=t.schema.field(idx).type))
    pq.write_table(t, dst, use_deprecated_int96_timestamps=True)


def test_compare_reports_differences():
    src = input_file(MULTI_V1)
    d1 = os.path.join(_TMP, "mod_str.parquet")
    _modified_copy(src, d1, "str_opt", 4321, lambda v: (v or "") + "!")
    p = run("compare", src, d1, ok=False)
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["equal"] is False and "'str_opt'" in out["difference"] and "row 4321" in out["difference"]
    assert "!" not in p.stdout + p.stderr  # values are not printed by default
    p = run("compare", src, d1, "--show-values", ok=False)
    assert "!" in json.loads(p.stdout)["difference"]
    # other columns still equal
    assert json.loads(run("compare", src, d1, "--columns", "id,struct_nested.y.z").stdout)["equal"]

    d2 = os.path.join(_TMP, "mod_nested.parquet")

    def bump(v):
        v = dict(v) if v else {"x": None, "y": None}
        v["y"] = {"z": "changed"}
        return v
    _modified_copy(src, d2, "struct_nested", 5555, bump)
    p = run("compare", src, d2, "--columns", "struct_nested.y.z", ok=False)
    assert p.returncode == 1 and "struct_nested.y.z" in json.loads(p.stdout)["difference"]
    p = run("compare", src, d2, ok=False)
    assert "'struct_nested' row 5555" in json.loads(p.stdout)["difference"]
    assert json.loads(run("compare", src, d2, "--columns", "struct_nested.x").stdout)["equal"]

    d3 = os.path.join(_TMP, "mod_type.parquet")
    t = pq.read_table(src)
    t = t.set_column(0, "id", t.column("id").cast(pa.int32()))
    pq.write_table(t, d3, use_deprecated_int96_timestamps=True)
    p = run("compare", src, d3, ok=False)
    assert "type differs" in json.loads(p.stdout)["difference"]
    p = run("compare", src, input_file(FLAT), ok=False)
    assert "row count" in json.loads(p.stdout)["difference"]


# (label, input, write-encrypted options, read-encrypted options)
ROUNDTRIPS = [
    ("uniform-gcm", MULTI_V1, ["--uniform", "--footer-key", f"kf={KF_HEX}"], ["--footer-key", f"kf={KF_HEX}"]),
    ("uniform-ctr-v2", MULTI_V2, ["--uniform", "--footer-key", f"kf={KF_HEX}", "--algorithm", "AES_GCM_CTR_V1",
                                  "--data-page-version", "2.0"], ["--footer-key", f"kf={KF_HEX}"]),
    ("uniform-plainfooter-gcm", MULTI_V1, ["--uniform", "--footer-key", f"kf={KF_HEX}", "--plaintext-footer"],
     ["--footer-key", f"kf={KF_HEX}"]),
    ("uniform-plainfooter-ctr", MULTI_V2, ["--uniform", "--footer-key", f"kf={KF_HEX}", "--plaintext-footer",
                                           "--algorithm", "AES_GCM_CTR_V1"], ["--footer-key", f"kf={KF_HEX}"]),
    ("uniform-aad-stored", MULTI_V1, ["--uniform", "--footer-key", f"kf={KF_HEX}", "--aad-prefix", "tester"],
     ["--footer-key", f"kf={KF_HEX}"]),
    ("uniform-aad-not-stored", MULTI_V2, ["--uniform", "--footer-key", f"kf={KF_HEX}", "--aad-prefix", "tester",
                                          "--no-store-aad-prefix", "--data-page-version", "2.0"],
     ["--footer-key", f"kf={KF_HEX}", "--aad-prefix", "tester"]),
    ("uniform-aes256", FLAT, ["--uniform", "--footer-key", "kf=" + "ab" * 32], ["--footer-key", "kf=" + "ab" * 32]),
    ("uniform-keytools", FLAT, ["--uniform", "--key-tools", "--footer-key", f"kf={KF_HEX}"], []),
    ("colkeys-gcm", MULTI_V1, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"str_opt,i64_opt:kc1={KC1_HEX}",
                               "--column-key", f"list_i64.list.element:kc2={KC2_HEX}",
                               "--column-key", f"struct_nested.y.z:kc2={KC2_HEX}"], []),
    ("colkeys-ctr-v2", MULTI_V2, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"f64_req:kc1={KC1_HEX}",
                                  "--column-key", f"map_si.key_value.value:kc2={KC2_HEX}",
                                  "--algorithm", "AES_GCM_CTR_V1", "--data-page-version", "2.0"], []),
    ("colkeys-plainfooter-gcm", MULTI_V1, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"dec_opt:kc1={KC1_HEX}",
                                           "--column-key", f"list_struct.list.element.a:kc2={KC2_HEX}",
                                           "--plaintext-footer"], []),
    ("colkeys-plainfooter-ctr", MULTI_V2, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"ts_int96:kc1={KC1_HEX}",
                                           "--plaintext-footer", "--algorithm", "AES_GCM_CTR_V1"], []),
    ("colkeys-doublewrap", MULTI_V1, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"str_opt:kc1={KC1_HEX}",
                                      "--double-wrapping"], []),
    ("colkeys-external", FLAT, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"bin_opt:kc1={KC1_HEX}",
                                "--external-key-material", "--double-wrapping"], []),
    ("colkeys-parent-name", MULTI_V1, ["--footer-key", f"kf={KF_HEX}", "--column-key", f"struct_nested:kc1={KC1_HEX}",
                                       "--data-key-bits", "256"], []),
]


def test_roundtrips():
    for label, name, wopts, ropts in ROUNDTRIPS:
        src = input_file(name)
        enc = os.path.join(_TMP, f"enc_{label}.parquet")
        dec = os.path.join(_TMP, f"dec_{label}.parquet")
        p = run("write-encrypted", src, enc, *wopts)
        summary = json.loads(p.stdout)
        assert summary["path"] == enc and summary["mode"], label
        for secret in (KF_HEX, KC1_HEX, "0123456789012345", "1234567890123450",
                       base64.b64encode(b"0123456789012345").decode()):
            assert secret not in p.stdout, label
        # the encrypted file is not readable as plaintext parquet
        try:
            pq.read_table(enc)
            raise AssertionError(f"{label}: encrypted file read without keys")
        except (OSError, pa.ArrowException):
            pass
        out = json.loads(run("read-encrypted", enc, dec, *ropts).stdout)
        assert out["rows"] == pq.ParquetFile(src).metadata.num_rows, label
        res = json.loads(run("compare", src, dec).stdout)
        assert res["equal"] is True, label
        info = json.loads(run("inspect-crypto", enc).stdout)
        assert '"wrappedDEK":' not in json.dumps(info, separators=(",", ":"))
        assert info["algorithm"] == summary["algorithm"], (label, info)
        if "--plaintext-footer" in wopts and summary["mode"] != "crypto-factory-uniform":
            assert info["magic"] == "PAR1" and info["footer"] == "plaintext", label
        else:
            assert info["magic"] == "PARE", label
        if "--aad-prefix" in wopts:
            stored = "--no-store-aad-prefix" not in wopts
            assert info["aad_prefix_stored"] is stored and info["supply_aad_prefix"] is (not stored), label
            if not stored:  # reading without the prefix must fail
                run("read-encrypted", enc, dec, "--footer-key", f"kf={KF_HEX}", ok=False)
        if "--external-key-material" in wopts:
            km = summary["key_material_file"]
            assert os.path.exists(km), km
            assert info["footer_key_metadata"]["internalStorage"] is False
        # the stored page layout survives: same row-group count as the input
        assert pq.ParquetFile(enc, decryption_properties=_props(ropts, enc)).metadata.num_row_groups == \
            pq.ParquetFile(src).metadata.num_row_groups, label


def _props(ropts, path):
    import pyarrow.parquet.encryption as pe
    if ropts:
        return pe.create_decryption_properties(bytes.fromhex(ropts[1].split("=")[1]),
                                               aad_prefix=b"tester" if "--aad-prefix" in ropts else None)
    return pyarrow_tool.identity_crypto_factory().file_decryption_properties(
        pe.KmsConnectionConfig(), parquet_file_path=path)


def test_read_encrypted_columns_subset():
    src = input_file(MULTI_V1)
    enc = os.path.join(_TMP, "sub_enc.parquet")
    run("write-encrypted", src, enc, "--footer-key", f"kf={KF_HEX}", "--column-key", f"str_opt:kc1={KC1_HEX}")
    dec = os.path.join(_TMP, "sub_dec.parquet")
    out = json.loads(run("read-encrypted", enc, dec, "--columns", "id,struct_nested").stdout)
    assert out["columns"] == ["id", "struct_nested"]
    assert json.loads(run("compare", src, dec, "--columns", "id,struct_nested").stdout)["equal"]


def test_parquet_testing_uniform_file():
    src = os.path.join(TESTING, "uniform_encryption.parquet.encrypted")
    dec = os.path.join(_TMP, "testing_uniform.parquet")
    out = json.loads(run("read-encrypted", src, dec, "--footer-key", f"kf={KF_HEX}").stdout)
    assert out["rows"] == 50
    t = pq.read_table(dec)
    assert t.column("boolean_field").to_pylist() == [i % 2 == 0 for i in range(50)]
    assert t.column("ba_field").to_pylist()[2] in (b"parquet002", "parquet002")
    # its key metadata is the raw string "kf": CryptoFactory cannot read it
    run("read-encrypted", src, dec, ok=False)


def test_identity_key_metadata_matches_pyarrow():
    src = input_file(FLAT)
    checked = 0
    for label, extra in (("pf", ["--plaintext-footer"]), ("pare", [])):
        enc = os.path.join(_TMP, f"km_{label}.parquet")
        run("write-encrypted", src, enc, "--footer-key", f"kf={KF_HEX}",
            "--column-key", f"str_opt,bin_opt:kc1={KC1_HEX}", "--column-key", f"dec_opt:kc2={KC2_HEX}", *extra)
        raw = pyarrow_tool.inspect_crypto_raw(enc)
        items = [("kf", True, raw["footer_key_metadata"])]
        if raw["column_key_metadata"] is not None:
            for path, km in raw["column_key_metadata"].items():
                if km != "footer-key":
                    items.append((json.loads(km)["masterKeyID"], False, km))
            assert {p for p, v in raw["column_key_metadata"].items() if v != "footer-key"} == \
                {"str_opt", "bin_opt", "dec_opt"}
        for master, footer, km in items:
            dek = base64.b64decode(json.loads(km)["wrappedDEK"])
            args = ["identity-key-metadata", master, dek.hex()] + (["--footer"] if footer else [])
            mine = run(*args).stdout.encode("utf-8")
            assert mine == km, (mine, km)
            checked += 1
    # uniform CryptoFactory file: footer key metadata in FileCryptoMetaData
    enc = os.path.join(_TMP, "km_uniform.parquet")
    run("write-encrypted", src, enc, "--uniform", "--key-tools", "--footer-key", f"kf={KF_HEX}")
    km = pyarrow_tool.inspect_crypto_raw(enc)["footer_key_metadata"]
    dek = base64.b64decode(json.loads(km)["wrappedDEK"])
    assert run("identity-key-metadata", "kf", dek.hex(), "--footer").stdout.encode() == km
    assert checked == 5, checked
    # exact expected shape
    s = run("identity-key-metadata", "kc1", KC1_HEX).stdout
    assert s == ('{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":false,'
                 '"masterKeyID":"kc1","wrappedDEK":"MTIzNDU2Nzg5MDEyMzQ1MA==","doubleWrapping":false}'), s


def test_pyarrow_quirks():
    src = input_file(FLAT)
    # uniform CryptoFactory ignores plaintext_footer (file still ends in PARE)
    enc = os.path.join(_TMP, "quirk_uniform_pf.parquet")
    s = json.loads(run("write-encrypted", src, enc, "--uniform", "--key-tools", "--plaintext-footer",
                       "--footer-key", f"kf={KF_HEX}").stdout)
    assert s["footer_magic"] == "PARE" and "note" in s
    # bloom filters + encryption: NYI in pyarrow 26
    p = run("write-encrypted", src, os.path.join(_TMP, "quirk_bloom.parquet"), "--uniform",
            "--footer-key", f"kf={KF_HEX}", "--bloom-filter", "id", ok=False)
    assert "bloom" in p.stderr.lower()


def test_cli_errors():
    src = input_file(FLAT)
    out = os.path.join(_TMP, "err.parquet")
    cases = [
        ["write-encrypted", src, out, "--uniform", "--footer-key", "kf=zz"],
        ["write-encrypted", src, out, "--uniform", "--footer-key", "kf=0011"],
        ["write-encrypted", src, out, "--footer-key", f"kf={KF_HEX}", "--column-key", f"id:kc1={KC1_HEX}",
         "--aad-prefix", "x"],
        ["write-encrypted", src, out, "--footer-key", f"kf={KF_HEX}"],
        ["write-encrypted", src, out, "--uniform"],
        ["write-encrypted", src, out, "--uniform", "--footer-key", f"kf={KF_HEX}", "--no-store-aad-prefix"],
        ["write-encrypted", src, out, "--footer-key", f"kf={KF_HEX}", "--column-key", "nocolon"],
        ["write-encrypted", src, out, "--footer-key", f"kf={KF_HEX}", "--column-key", f"no_such:kc1={KC1_HEX}"],
        ["write-encrypted", src, out, "--uniform", "--footer-key", f"kf={KF_HEX}", "--algorithm", "AES_CBC"],
        ["read-encrypted", src, out, "--aad-prefix", "x"],
        ["read-encrypted", src, out, "--footer-key", f"kf={KF_HEX}"],  # plaintext input
        ["compare", src, "/nonexistent.parquet"],
        ["compare", src, src, "--columns", "nope.x"],
        ["identity-key-metadata", "kf", "123"],
        ["write-encrypted"],
        [],
    ]
    for c in cases:
        p = run(*c, ok=False)
        assert p.returncode == 2, (c, p.returncode)
        assert KF_HEX not in p.stderr and KC1_HEX not in p.stderr, c


def main() -> int:
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    tests.sort(key=lambda nf: nf[0] != "test_gen_inputs_grid")
    failed = 0
    t_all = time.monotonic()
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
            print(f"ok    {name} ({time.monotonic() - t0:.1f}s)")
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL  {name}")
            traceback.print_exc()
    print(f"gen-inputs took {_GEN_SECONDS:.2f}s; {len(tests) - failed}/{len(tests)} passed "
          f"in {time.monotonic() - t_all:.1f}s" + (f"; kept {_TMP}" if failed else ""))
    if not failed:
        shutil.rmtree(_TMP, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
