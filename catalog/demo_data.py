"""Demo data for `make run`: an admin account and a catalogue to click through.

`bootstrap_demo` calls these. The catalogue comes from the first source that works:

1. MovieLens from ``MOVIELENS_DIR`` (ml-100k, or the CSV family) (imported by ``import_movielens``);
2. MovieLens ``ml-latest-small``, downloaded from GroupLens and checked against a pinned SHA-256;
3. the synthetic catalogue of ``generate_catalog``, which needs no file and no network.

A catalogue that already holds items is left alone, so running `make run` twice is safe.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction

from catalog.models import Item

logger = logging.getLogger(__name__)

ML_LATEST_SMALL_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
# SHA-256 and size of the archive as pinned by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/movielens.txt). GroupLens itself only publishes an MD5
# beside the zip, and an MD5 fetched from the same host proves nothing about tampering.
ML_LATEST_SMALL_SHA256 = "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
ML_LATEST_SMALL_BYTES = 978_202
DOWNLOAD_TIMEOUT_SECONDS = 5.0

# Big enough to make the pages and a trained model interesting, small enough to load in seconds.
SYNTHETIC_USERS = 500
SYNTHETIC_ITEMS = 800
SYNTHETIC_INTERACTIONS = 20_000


class DemoDataError(RuntimeError):
    """A demo data source could not be used; the caller falls back to the next one."""


@dataclass(frozen=True)
class AdminResult:
    username: str
    created: bool
    # Only set when this call generated the password: it must be shown once and never stored.
    generated_password: str | None


@dataclass(frozen=True)
class SyntheticSize:
    users: int = SYNTHETIC_USERS
    items: int = SYNTHETIC_ITEMS
    interactions: int = SYNTHETIC_INTERACTIONS


def default_download_dir() -> Path:
    return Path(settings.BASE_DIR) / "var" / "demo"


def admin_ensure(*, username: str, password: str | None = None) -> AdminResult:
    """Create the superuser ``username`` unless a user with that name exists.

    An existing account is never modified: its password may have been changed on purpose.
    Without ``password`` a random one is generated and returned so the caller can show it once.
    """
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        return AdminResult(username=username, created=False, generated_password=None)
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    logger.info("demo.admin_created username=%s generated_password=%s", username, generated is not None)
    return AdminResult(username=username, created=True, generated_password=generated)


def archive_download(url: str, destination: Path, *, timeout: float) -> None:
    """Fetch ``url`` into ``destination``. The one function here that touches the network."""
    request = urllib.request.Request(url, headers={"User-Agent": "recsys-platform-demo"})
    with urllib.request.urlopen(request, timeout=timeout) as response, destination.open("wb") as handle:
        shutil.copyfileobj(response, handle)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ml_latest_small_fetch(*, download_dir: Path, timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    """Download, verify and extract ``ml-latest-small``; returns the extracted folder.

    Raises :class:`DemoDataError` when the checksum does not match or the archive is unsafe, and
    lets ``OSError`` (which covers ``URLError`` and timeouts) through for network failures.
    """
    extracted = download_dir / "ml-latest-small"
    if (extracted / "ratings.csv").exists():
        return extracted
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir) as scratch:
        archive = Path(scratch) / "ml-latest-small.zip"
        archive_download(ML_LATEST_SMALL_URL, archive, timeout=timeout)
        actual = sha256_of(archive)
        if actual != ML_LATEST_SMALL_SHA256:
            raise DemoDataError(
                f"ml-latest-small.zip has SHA-256 {actual}, expected {ML_LATEST_SMALL_SHA256}: "
                "the download is corrupt or GroupLens changed the file; not importing it."
            )
        _zip_extract_safely(archive, Path(scratch) / "out")
        source = Path(scratch) / "out" / "ml-latest-small"
        if not (source / "ratings.csv").exists():
            raise DemoDataError("ml-latest-small.zip has no ml-latest-small/ratings.csv inside.")
        shutil.move(str(source), str(extracted))
    return extracted


def _zip_extract_safely(archive: Path, target: Path) -> None:
    # A member named "../x" must never land outside the target, even from a verified archive.
    target.mkdir(parents=True)
    root = target.resolve()
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            destination = (root / member.filename).resolve()
            if destination != root and root not in destination.parents:
                raise DemoDataError(f"ml-latest-small.zip holds an unsafe path: {member.filename!r}")
        bundle.extractall(root)


def demo_catalog_load(
    *,
    movielens_dir: str | None,
    download_dir: Path,
    synthetic_size: SyntheticSize = SyntheticSize(),
    allow_download: bool = True,
    out: TextIO,
) -> str:
    """Fill an empty catalogue from the first demo source that works; returns the source's name.

    Returns ``"existing"`` without touching anything when the catalogue already has items.
    Every fallback is said on ``out`` with its reason, so a person sees why they got which data.
    """
    if Item.objects.exists():
        out.write(f"Catalogue already has {Item.objects.count()} items: demo data not loaded.\n")
        return "existing"

    if movielens_dir:
        path = Path(movielens_dir)
        if (path / "u.data").exists() or (path / "ratings.csv").exists():
            out.write(f"Loading MovieLens from {path} ...\n")
            call_command("import_movielens", str(path), no_progress=True, stdout=out)
            out.write(f"Demo data: MovieLens from MOVIELENS_DIR ({path}).\n")
            return "movielens"
        out.write(f"MOVIELENS_DIR={path} holds no u.data or ratings.csv; trying the next demo source.\n")

    if allow_download:
        try:
            extracted = ml_latest_small_fetch(download_dir=download_dir)
        except OSError as error:
            out.write(
                f"offline: could not download ml-latest-small ({error}); falling back to the synthetic catalogue.\n"
            )
        except DemoDataError as error:
            out.write(f"{error} Falling back to the synthetic catalogue.\n")
        else:
            out.write(f"Loading ml-latest-small from {extracted} ...\n")
            try:
                # The import is atomic per source so a failure leaves the catalogue empty for
                # the synthetic fallback instead of half-filled.
                with transaction.atomic():
                    call_command("import_movielens", str(extracted), no_progress=True, stdout=out)
            except Exception as error:  # the importer may not read this layout yet; say so, go on
                logger.warning("demo.ml_latest_small_import_failed error=%s", error)
                out.write(
                    f"import_movielens could not read ml-latest-small ({error}); "
                    "falling back to the synthetic catalogue.\n"
                )
            else:
                out.write(f"Demo data: MovieLens ml-latest-small from {extracted}.\n")
                return "ml-latest-small"
    else:
        out.write("Download of ml-latest-small skipped (--offline).\n")

    call_command(
        "generate_catalog",
        users=synthetic_size.users,
        items=synthetic_size.items,
        interactions=synthetic_size.interactions,
        seed=0,
        no_progress=True,
        stdout=out,
    )
    out.write(
        f"Demo data: synthetic catalogue ({synthetic_size.users} users, {synthetic_size.items} items, "
        f"{synthetic_size.interactions} interactions, seed 0).\n"
    )
    return "synthetic"
