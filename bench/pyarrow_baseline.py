"""pyarrow baseline for bench/pme_bench.ts: times writing and reading the same table encrypted with
the same settings (uniform AES_GCM_V1 footer key, encrypted footer, same codec). Prints JSON.

Usage: pyarrow_baseline.py PLAINTEXT_PARQUET OUT_DIR KEY_HEX CODEC
"""
import json
import os
import sys
import time

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe


def main() -> None:
    src, out_dir, key_hex, codec = sys.argv[1:5]
    key = bytes.fromhex(key_hex)
    table = pq.read_table(src)
    out = os.path.join(out_dir, "pyarrow_encrypted.parquet")
    t0 = time.perf_counter()
    pq.write_table(
        table,
        out,
        compression=codec,
        encryption_properties=pe.create_encryption_properties(key, encryption_algorithm="AES_GCM_V1"),
    )
    write_s = time.perf_counter() - t0
    del table
    t0 = time.perf_counter()
    back = pq.read_table(out, decryption_properties=pe.create_decryption_properties(key))
    read_s = time.perf_counter() - t0
    rows = back.num_rows
    del back
    size = os.path.getsize(out)
    os.remove(out)
    print(json.dumps({"write_s": write_s, "read_s": read_s, "rows": rows, "bytes": size}))


if __name__ == "__main__":
    main()
