"""`bootstrap_demo`: the admin account and the demo catalogue's fallbacks, on the real database."""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from catalog import demo_data
from catalog.models import Feedback, Item

pytestmark = pytest.mark.django_db

SMALL = {"synthetic_users": 30, "synthetic_items": 80, "synthetic_interactions": 120}
MOVIES_CSV = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children\n"
    "2,Jumanji (1995),Adventure|Fantasy\n"
    "3,Heat (1995),Action|Crime|Thriller\n"
)
RATINGS_CSV = (
    "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,5.0,964981247\n2,2,3.5,964982224\n2,1,2.0,964983815\n"
)


@pytest.fixture
def no_movielens(settings):
    settings.MOVIELENS_DIR = None


@pytest.fixture
def admin_env(settings):
    settings.ADMIN_USERNAME = "demo-admin"
    settings.ADMIN_PASSWORD = None


def _bootstrap(**options) -> str:
    out = io.StringIO()
    call_command("bootstrap_demo", stdout=out, **options)
    return out.getvalue()


def _csv_movielens(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(MOVIES_CSV)
    (folder / "ratings.csv").write_text(RATINGS_CSV)
    return folder


def _offline(url, destination, *, timeout):
    raise OSError("[Errno 101] Network is unreachable")


# --- the admin account --------------------------------------------------------------------------


def test_generated_admin_password_is_printed_once_and_works(admin_env, tmp_path):
    Item.objects.create(external_id="keep", title="Already here")  # skip the catalogue part
    first = _bootstrap(download_dir=str(tmp_path))
    match = re.search(r"Created admin user 'demo-admin' with generated password: (\S+)", first)
    assert match, first
    password = match.group(1)
    admin = get_user_model().objects.get(username="demo-admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)
    assert len(password) >= 16

    second = _bootstrap(download_dir=str(tmp_path))
    assert "Admin user 'demo-admin' already exists: left unchanged." in second
    assert password not in second
    admin.refresh_from_db()
    assert admin.check_password(password)
    assert get_user_model().objects.filter(username="demo-admin").count() == 1


def test_admin_password_setting_is_used_and_not_printed(admin_env, settings, tmp_path):
    settings.ADMIN_PASSWORD = "correct-horse-battery-staple"
    Item.objects.create(external_id="keep", title="Already here")
    output = _bootstrap(download_dir=str(tmp_path))
    assert "correct-horse-battery-staple" not in output
    assert get_user_model().objects.get(username="demo-admin").check_password("correct-horse-battery-staple")


def test_existing_admin_keeps_its_password_even_when_admin_password_changes(admin_env, settings, tmp_path):
    get_user_model().objects.create_superuser(username="demo-admin", email="", password="original-secret-1")
    settings.ADMIN_PASSWORD = "another-secret-2"
    Item.objects.create(external_id="keep", title="Already here")
    _bootstrap(download_dir=str(tmp_path))
    assert get_user_model().objects.get(username="demo-admin").check_password("original-secret-1")


# --- the catalogue ------------------------------------------------------------------------------


def test_existing_catalogue_is_left_alone(admin_env, no_movielens, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "archive_download", _offline)
    Item.objects.create(external_id="keep", title="Already here")
    output = _bootstrap(download_dir=str(tmp_path), **SMALL)
    assert "Catalogue already has 1 items: demo data not loaded." in output
    assert Item.objects.count() == 1


def test_movielens_dir_is_imported_first(admin_env, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "archive_download", _offline)  # must not even be reached
    folder = _csv_movielens(tmp_path / "ml")
    output = _bootstrap(movielens_dir=str(folder), download_dir=str(tmp_path), **SMALL)
    assert f"Demo data: MovieLens from MOVIELENS_DIR ({folder})." in output
    assert "offline" not in output
    assert Item.objects.count() == 3
    assert Item.objects.filter(title__startswith="Toy Story").exists()
    assert Feedback.objects.count() == 4


@pytest.mark.movielens
def test_movielens_100k_layout_from_the_setting(admin_env, settings, tmp_path, movielens_100k_dir, monkeypatch):
    monkeypatch.setattr(demo_data, "archive_download", _offline)
    # The real files, cut down: every movie and user, but only the first 300 ratings.
    folder = tmp_path / "ml-100k-small"
    folder.mkdir()
    for name in ("u.item", "u.user", "u.genre", "u.occupation", "u.info"):
        if (movielens_100k_dir / name).exists():
            shutil.copy(movielens_100k_dir / name, folder / name)
    lines = (movielens_100k_dir / "u.data").read_text().splitlines()[:300]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    settings.MOVIELENS_DIR = str(folder)

    output = _bootstrap(download_dir=str(tmp_path))
    assert "Demo data: MovieLens from MOVIELENS_DIR" in output
    assert Item.objects.count() == 1682
    assert Feedback.objects.count() == 300


def test_offline_download_falls_back_to_the_synthetic_catalogue(admin_env, no_movielens, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "archive_download", _offline)
    output = _bootstrap(download_dir=str(tmp_path), **SMALL)
    assert (
        "offline: could not download ml-latest-small ([Errno 101] Network is unreachable); "
        "falling back to the synthetic catalogue." in output
    )
    assert "Demo data: synthetic catalogue (30 users, 80 items, 120 interactions, seed 0)." in output
    assert Item.objects.count() == 80
    assert Feedback.objects.count() == 120


def test_checksum_mismatch_is_refused_and_falls_back(admin_env, no_movielens, tmp_path, monkeypatch):
    def tampered(url, destination, *, timeout):
        destination.write_bytes(b"not the archive GroupLens published")

    monkeypatch.setattr(demo_data, "archive_download", tampered)
    output = _bootstrap(download_dir=str(tmp_path), **SMALL)
    assert f"expected {demo_data.ML_LATEST_SMALL_SHA256}" in output
    assert "Demo data: synthetic catalogue" in output
    assert not (tmp_path / "ml-latest-small").exists()
    assert Item.objects.count() == 80


def test_verified_archive_is_extracted_and_imported(admin_env, no_movielens, tmp_path, monkeypatch):
    # We cannot reach GroupLens here, so serve a small archive of the same layout and pin its hash
    # in place of the real one: everything after the network boundary runs for real.
    archive = tmp_path / "served.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-latest-small/movies.csv", MOVIES_CSV)
        bundle.writestr("ml-latest-small/ratings.csv", RATINGS_CSV)
    monkeypatch.setattr(demo_data, "ML_LATEST_SMALL_SHA256", demo_data.sha256_of(archive))
    requested = []

    def serve(url, destination, *, timeout):
        requested.append((url, timeout))
        shutil.copy(archive, destination)

    monkeypatch.setattr(demo_data, "archive_download", serve)
    download_dir = tmp_path / "var-demo"
    output = _bootstrap(download_dir=str(download_dir), **SMALL)
    assert requested == [(demo_data.ML_LATEST_SMALL_URL, 5.0)]
    assert "Demo data: MovieLens ml-latest-small" in output
    assert (download_dir / "ml-latest-small" / "ratings.csv").exists()
    assert Item.objects.count() == 3
    assert Feedback.objects.count() == 4


def test_archive_with_a_path_outside_the_target_is_refused(admin_env, no_movielens, tmp_path, monkeypatch):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escaped.txt", "x")
        bundle.writestr("ml-latest-small/ratings.csv", RATINGS_CSV)
    monkeypatch.setattr(demo_data, "ML_LATEST_SMALL_SHA256", demo_data.sha256_of(archive))
    monkeypatch.setattr(
        demo_data, "archive_download", lambda url, destination, *, timeout: shutil.copy(archive, destination)
    )
    download_dir = tmp_path / "var-demo"
    output = _bootstrap(download_dir=str(download_dir), **SMALL)
    assert "unsafe path: '../escaped.txt'" in output
    assert not (download_dir / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert "Demo data: synthetic catalogue" in output
