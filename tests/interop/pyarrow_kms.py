#!/usr/bin/env python3
"""pyarrow key-tools peer with real KMS clients, for the fhir-pme Deno tests.

pyarrow's ``CryptoFactory`` (Arrow C++ key tools) drives a Python ``KmsClient``
that talks to the same KMS as the TypeScript side, so files written by one
side open on the other only if both agree on the wire formats (PKMT1 key
material, single/double wrapping, internal/external key material) and on how
the KMS wraps keys.

KMS clients (``--kms``):

``vault``
    HashiCorp Vault / OpenBao Transit over HTTP (urllib, JSON bodies), as
    parquet-java's sample ``VaultClient`` and pyarrow's
    ``sample_vault_kms_client.py``: the KMS instance URL is the Vault address,
    the KMS instance id names the transit mount unless it is ``DEFAULT`` (then
    ``transit``), the key access token is sent as ``X-Vault-Token``.
    ``wrap_key`` = ``POST /v1/<mount>/encrypt/<id> {"plaintext": b64(key)}``
    and returns ``data.ciphertext`` (``vault:vN:...``) whole; ``unwrap_key``
    = ``POST /v1/<mount>/decrypt/<id> {"ciphertext": ...}`` and base64-decodes
    ``data.plaintext``.

``local``
    parquet-java ``InMemoryKMS`` style ("in-server" wrapping) with master keys
    given as ``--key ID=HEX`` (repeat an id for several versions, oldest
    first): ``wrap_key`` = base64(nonce(12) || AES-GCM(newest version of the
    master key, nonce, AAD = UTF-8 master key id, key) || tag(16));
    ``unwrap_key`` tries the versions newest first.  AES-GCM comes from the
    ``cryptography`` package (Python's standard library has none).

Subcommands (JSON on stdout; on failure one ``error: ...`` line on stderr and
exit status 2):

``write IN OUT KMS-OPTIONS --footer-key ID [--column-key ID:col,col ...]
[--uniform] [--plaintext-footer] [--[no-]double-wrapping]
[--external-key-material] [--algorithm A] [--data-key-bits N]``
    pyarrow reads plaintext IN row group by row group and writes OUT,
    encrypted with ``CryptoFactory.file_encryption_properties`` (with external
    key material: ``parquet_file_path`` = OUT and a ``LocalFileSystem``).

``read IN OUT KMS-OPTIONS``
    pyarrow decrypts IN (``file_decryption_properties`` with
    ``parquet_file_path`` and a ``LocalFileSystem``) and writes the rows to
    plaintext OUT.

``rotate FILE KMS-OPTIONS [--[no-]double-wrapping]``
    ``CryptoFactory.rotate_master_keys`` on FILE, which must keep its key
    material externally.

KMS-OPTIONS: ``--kms vault --vault-url URL --token TOKEN [--instance-id ID]``
or ``--kms local --key ID=HEX [--key ID=HEX ...]``.

The JSON describes what pyarrow did without secrets: footer magic, key
material file name, references and field order of the key material, the Vault
key versions used (``vN`` of the ciphertexts) and the KMS calls made.  Key
bytes, tokens and wrapped keys are never printed.

Requirements: Python 3.11, pyarrow (tested with 26.0.1) and, for ``--kms
local`` only, ``cryptography`` (tested with 50.0.2).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import urllib.error
import urllib.request
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")
DEFAULT = "DEFAULT"
KEY_MATERIAL_PREFIX = "_KEY_MATERIAL_FOR_"
VAULT_CIPHERTEXT = re.compile(r"^vault:v(\d+):")


class ToolError(Exception):
    """A user-facing error: reported as one ``error: ...`` line, exit status 2."""


def _one_line(msg: str) -> str:
    """Collapse whitespace (newlines included) so a message fits on one line."""
    return " ".join(str(msg).split())


def _emit(obj: Any) -> None:
    """Print ``obj`` as one JSON line on stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------
# KMS clients
# ---------------------------------------------------------------------------


class CallCounter:
    """Counts KMS calls per operation and master key (shared by the clients of one run)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def add(self, op: str, master_key_id: str) -> None:
        """Record one ``op`` (wrap/unwrap) with ``master_key_id``."""
        k = f"{op} {master_key_id}"
        self.calls[k] = self.calls.get(k, 0) + 1


class VaultKmsClient(pe.KmsClient):
    """Vault Transit over HTTP (see the module docstring); one client per connection."""

    def __init__(self, config: pe.KmsConnectionConfig, counter: CallCounter, timeout: float = 10.0):
        pe.KmsClient.__init__(self)
        url = config.kms_instance_url
        token = config.key_access_token
        if not url or url == DEFAULT:
            raise ToolError("vault: the KMS instance URL (Vault address) is not configured")
        if not token or token == DEFAULT:
            raise ToolError("vault: no key access token (Vault token)")
        mount = config.kms_instance_id if config.kms_instance_id and config.kms_instance_id != DEFAULT \
            else "transit"
        self._prefix = f"{url.rstrip('/')}/v1/{mount.strip('/')}/"
        self._token = token
        self._counter = counter
        self._timeout = timeout

    def _post(self, op: str, master_key_identifier: str, body: dict[str, str]) -> dict[str, Any]:
        req = urllib.request.Request(
            self._prefix + op + "/" + master_key_identifier,
            data=json.dumps(body).encode("utf-8"),
            headers={"X-Vault-Token": self._token, "Content-Type": "application/json; charset=utf-8"},
            method="POST",
        )
        self._counter.add("wrap" if op == "encrypt" else "unwrap", master_key_identifier)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as res:
                reply = json.loads(res.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            try:
                errors = json.loads(e.read().decode("utf-8")).get("errors", [])
            except (ValueError, AttributeError):
                errors = []
            # Vault's error texts name the operation, never the token or the request body.
            detail = "; ".join(_one_line(x) for x in errors if isinstance(x, str)) or e.reason
            denied = " (access denied)" if e.code in (401, 403) else ""
            raise ToolError(f"vault {op} with master key {master_key_identifier!r}: "
                            f"HTTP {e.code}{denied}: {detail}") from None
        except urllib.error.URLError as e:
            raise ToolError(f"vault {op}: cannot reach Vault: {e.reason}") from None
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise ToolError(f"vault {op} with master key {master_key_identifier!r}: reply has no data")
        return data

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        """Encrypt ``key_bytes`` with the newest version of the transit key; the whole ``vault:vN:`` text."""
        data = self._post("encrypt", master_key_identifier,
                          {"plaintext": base64.b64encode(key_bytes).decode("ascii")})
        ct = data.get("ciphertext")
        if not isinstance(ct, str) or not VAULT_CIPHERTEXT.match(ct):
            raise ToolError(f"vault encrypt with master key {master_key_identifier!r}: no ciphertext")
        return ct

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        """Decrypt a ``vault:vN:`` text with the transit key; the key bytes."""
        data = self._post("decrypt", master_key_identifier, {"ciphertext": wrapped_key})
        pt = data.get("plaintext")
        if not isinstance(pt, str):
            raise ToolError(f"vault decrypt with master key {master_key_identifier!r}: no plaintext")
        return base64.b64decode(pt, validate=True)


def _aesgcm() -> Any:
    """The ``AESGCM`` class of ``cryptography``, or a ToolError naming the package to install."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ToolError("--kms local needs the 'cryptography' package in the venv "
                        "(pip install cryptography==50.0.2)") from None
    return AESGCM


class LocalWrapKmsClient(pe.KmsClient):
    """InMemoryKMS-style wrapping with master keys held here (see the module docstring)."""

    def __init__(self, keys: dict[str, list[bytes]], counter: CallCounter):
        pe.KmsClient.__init__(self)
        self._aesgcm = _aesgcm()
        self._keys = keys
        self._counter = counter

    def _versions(self, master_key_identifier: str) -> list[bytes]:
        versions = self._keys.get(master_key_identifier)
        if not versions:
            raise ToolError(f"local: master key {master_key_identifier!r} was not given (--key ID=HEX)")
        return versions

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        """base64(nonce || AES-GCM(newest master key version, AAD = master key id) || tag)."""
        self._counter.add("wrap", master_key_identifier)
        key = self._versions(master_key_identifier)[-1]
        nonce = os.urandom(12)
        ct = self._aesgcm(key).encrypt(nonce, bytes(key_bytes), master_key_identifier.encode("utf-8"))
        return base64.b64encode(nonce + ct).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        """Try the master key versions newest first; the first whose GCM tag verifies wins."""
        self._counter.add("unwrap", master_key_identifier)
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.b64decode(wrapped_key, validate=True)
        except (binascii.Error, ValueError):
            raise ToolError(f"local: wrapped key for master key {master_key_identifier!r} "
                            "is not base64") from None
        if len(raw) < 12 + 16 + 1:
            raise ToolError(f"local: wrapped key for master key {master_key_identifier!r} is too short")
        aad = master_key_identifier.encode("utf-8")
        versions = self._versions(master_key_identifier)
        for key in reversed(versions):
            try:
                return self._aesgcm(key).decrypt(raw[:12], raw[12:], aad)
            except InvalidTag:
                continue
        raise ToolError(f"local: wrapped key does not unwrap with master key {master_key_identifier!r} "
                        f"({len(versions)} version(s) tried)")


def _parse_keys(specs: list[str]) -> dict[str, list[bytes]]:
    """Parse ``ID=HEX`` arguments into master key id → versions (oldest first); never echoes key bytes."""
    keys: dict[str, list[bytes]] = {}
    for spec in specs:
        key_id, sep, hex_text = spec.rpartition("=")
        if not sep or not key_id:
            raise ToolError("--key: expected ID=HEX")
        try:
            key = binascii.unhexlify(hex_text.strip())
        except (binascii.Error, ValueError):
            raise ToolError(f"--key {key_id!r}: HEX is not valid hexadecimal") from None
        if len(key) not in (16, 24, 32):
            raise ToolError(f"--key {key_id!r}: must be 16, 24 or 32 bytes, got {len(key)}")
        keys.setdefault(key_id, []).append(key)
    return keys


def kms_setup(args: argparse.Namespace) -> tuple[pe.CryptoFactory, pe.KmsConnectionConfig, CallCounter]:
    """The crypto factory, connection config and call counter for the KMS options."""
    counter = CallCounter()
    if args.kms == "vault":
        if not args.vault_url or not args.token:
            raise ToolError("--kms vault needs --vault-url and --token")
        if args.key:
            raise ToolError("--key is for --kms local")
        config = pe.KmsConnectionConfig(kms_instance_id=args.instance_id or DEFAULT,
                                        kms_instance_url=args.vault_url, key_access_token=args.token)
        factory = pe.CryptoFactory(lambda c: VaultKmsClient(c, counter))
    else:
        if args.vault_url or args.token:
            raise ToolError("--vault-url and --token are for --kms vault")
        if not args.key:
            raise ToolError("--kms local needs at least one --key ID=HEX")
        keys = _parse_keys(args.key)
        _aesgcm()  # fail early, with the package to install
        config = pe.KmsConnectionConfig()
        factory = pe.CryptoFactory(lambda c: LocalWrapKmsClient(keys, counter))
    return factory, config, counter


# ---------------------------------------------------------------------------
# Key material description (non-secret)
# ---------------------------------------------------------------------------


def key_material_path(parquet_path: str) -> str:
    """``_KEY_MATERIAL_FOR_<name>.json`` beside the Parquet file."""
    return os.path.join(os.path.dirname(parquet_path), KEY_MATERIAL_PREFIX + os.path.basename(parquet_path)
                        + ".json")


def _describe_material(m: dict[str, Any]) -> dict[str, Any]:
    """Field order and non-secret fields of one PKMT1 key material (wrapped keys left out)."""
    out: dict[str, Any] = {
        "fields": list(m.keys()),
        "masterKeyID": m.get("masterKeyID"),
        "isFooterKey": m.get("isFooterKey"),
        "doubleWrapping": m.get("doubleWrapping"),
    }
    if m.get("isFooterKey"):
        out["kmsInstanceID"] = m.get("kmsInstanceID")
        out["kmsInstanceURL"] = m.get("kmsInstanceURL")
    kms_wrapped = m.get("wrappedKEK") if m.get("doubleWrapping") else m.get("wrappedDEK")
    if isinstance(kms_wrapped, str):
        v = VAULT_CIPHERTEXT.match(kms_wrapped)
        out["vaultVersion"] = int(v.group(1)) if v else None
    if m.get("doubleWrapping"):
        out["kekId"] = m.get("keyEncryptionKeyID")  # a random id, not a secret
    return out


def describe_external(parquet_path: str) -> dict[str, Any] | None:
    """Name, references (in file order) and material summaries of the external key material."""
    path = key_material_path(parquet_path)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        store = json.load(f)
    return {
        "file": os.path.basename(path),
        "references": list(store.keys()),
        "materials": {ref: _describe_material(json.loads(text)) for ref, text in store.items()},
    }


def describe_footer(parquet_path: str) -> dict[str, Any]:
    """The footer magic: ``PARE`` (encrypted footer) or ``PAR1`` (plaintext, signed footer)."""
    with open(parquet_path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        magic = f.read(4).decode("latin-1")
    return {"footer_magic": magic}


# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------


def _column_keys(specs: list[str] | None) -> dict[str, list[str]]:
    """Parse ``ID:col,col`` arguments into master key id → columns (in the order given)."""
    out: dict[str, list[str]] = {}
    for spec in specs or []:
        key_id, sep, cols_text = spec.partition(":")
        cols = [c for c in cols_text.split(",") if c]
        if not sep or not key_id or not cols:
            raise ToolError("--column-key: expected ID:col,col")
        out.setdefault(key_id, [])
        out[key_id] += [c for c in cols if c not in out[key_id]]
    return out


def write(args: argparse.Namespace) -> dict[str, Any]:
    """``write``: pyarrow encrypts plaintext IN into OUT with the key tools."""
    column_keys = _column_keys(args.column_key)
    if args.uniform and column_keys:
        raise ToolError("--uniform cannot be combined with --column-key")
    if not args.uniform and not column_keys:
        raise ToolError("give --uniform or at least one --column-key")
    factory, connection, counter = kms_setup(args)
    out_path = os.path.abspath(args.output)
    external = bool(args.external_key_material)
    config = pe.EncryptionConfiguration(
        footer_key=args.footer_key,
        column_keys=column_keys or None,
        uniform_encryption=bool(args.uniform),
        encryption_algorithm=args.algorithm,
        plaintext_footer=bool(args.plaintext_footer),
        double_wrapping=bool(args.double_wrapping),
        internal_key_material=not external,
        data_key_length_bits=args.data_key_bits,
    )
    props = factory.file_encryption_properties(
        connection, config,
        parquet_file_path=out_path if external else None,
        filesystem=pafs.LocalFileSystem() if external else None)
    pf = pq.ParquetFile(args.input)
    rows = 0
    with pq.ParquetWriter(out_path, pf.schema_arrow, encryption_properties=props) as writer:
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg)
            rows += t.num_rows
            writer.write_table(t, row_group_size=max(1, t.num_rows))
    out = {
        "path": out_path,
        "rows": rows,
        "row_groups": pf.num_row_groups,
        "kms_calls": counter.calls,
        "external": describe_external(out_path) if external else None,
        **describe_footer(out_path),
    }
    if args.plaintext_footer and out["footer_magic"] == "PARE":
        out["note"] = "plaintext footer was ignored by pyarrow"
    return out


def read(args: argparse.Namespace) -> dict[str, Any]:
    """``read``: pyarrow decrypts IN into plaintext OUT."""
    factory, connection, counter = kms_setup(args)
    in_path = os.path.abspath(args.input)
    props = factory.file_decryption_properties(
        connection, pe.DecryptionConfiguration(), parquet_file_path=in_path,
        filesystem=pafs.LocalFileSystem())
    pf = pq.ParquetFile(in_path, decryption_properties=props)
    table = pf.read()
    pq.write_table(table, args.output)
    return {"rows": table.num_rows, "row_groups": pf.num_row_groups, "columns": table.column_names,
            "kms_calls": counter.calls, **describe_footer(in_path)}


def rotate(args: argparse.Namespace) -> dict[str, Any]:
    """``rotate``: pyarrow re-wraps FILE's external key material with the newest master keys."""
    factory, connection, counter = kms_setup(args)
    path = os.path.abspath(args.file)
    before = describe_external(path)
    if before is None:
        raise ToolError(f"{os.path.basename(key_material_path(path))} is missing: "
                        "rotation needs external key material")
    factory.rotate_master_keys(connection, path, filesystem=pafs.LocalFileSystem(),
                               double_wrapping=bool(args.double_wrapping))
    return {"path": path, "kms_calls": counter.calls, "before": before, "after": describe_external(path),
            "leftovers": sorted(n for n in os.listdir(os.path.dirname(path)) if n.startswith("_TMP_"))}


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {_one_line(message)}\n")
        raise SystemExit(2)


def _kms_options(p: argparse.ArgumentParser) -> None:
    """Add the KMS options shared by every subcommand."""
    p.add_argument("--kms", required=True, choices=("vault", "local"))
    p.add_argument("--vault-url", help="Vault address (KMS instance URL)")
    p.add_argument("--token", help="Vault token (key access token)")
    p.add_argument("--instance-id", help="KMS instance id (Vault: transit mount; default DEFAULT → transit)")
    p.add_argument("--key", action="append", metavar="ID=HEX",
                   help="local master key version (repeat an id for newer versions, oldest first)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the CLI."""
    p = _Parser(prog="pyarrow_kms.py", description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    w = sub.add_parser("write", help="encrypt a plaintext file with pyarrow's CryptoFactory")
    w.add_argument("input")
    w.add_argument("output")
    _kms_options(w)
    w.add_argument("--footer-key", required=True, metavar="ID")
    w.add_argument("--column-key", action="append", metavar="ID:col,col")
    w.add_argument("--uniform", action="store_true")
    w.add_argument("--plaintext-footer", action="store_true")
    w.add_argument("--double-wrapping", action=argparse.BooleanOptionalAction, default=True)
    w.add_argument("--external-key-material", action="store_true")
    w.add_argument("--algorithm", default="AES_GCM_V1", choices=ALGORITHMS)
    w.add_argument("--data-key-bits", type=int, default=128, choices=(128, 192, 256))

    r = sub.add_parser("read", help="decrypt with pyarrow's CryptoFactory into a plaintext file")
    r.add_argument("input")
    r.add_argument("output")
    _kms_options(r)

    t = sub.add_parser("rotate", help="pyarrow's rotate_master_keys on a file with external key material")
    t.add_argument("file")
    _kms_options(t)
    t.add_argument("--double-wrapping", action=argparse.BooleanOptionalAction, default=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _emit({"write": write, "read": read, "rotate": rotate}[args.cmd](args))
        return 0
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        msg = str(e) if isinstance(e, ToolError) else f"{type(e).__name__}: {e}"
        sys.stderr.write(f"error: {_one_line(msg)}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
