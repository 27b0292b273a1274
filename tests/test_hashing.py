"""dpsynth.hashing.sha256_file: the one file digest (ledger input hash, bundle manifest)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dpsynth.hashing import sha256_file


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    for size in (0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) * 2 + 17):
        data = bytes(i % 251 for i in range(size))
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        assert sha256_file(path) == sha256_file(str(path)) == hashlib.sha256(data).hexdigest()
