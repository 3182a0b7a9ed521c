"""MovieLens importer: real files, real PostgreSQL, COPY staging and ON CONFLICT idempotency."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from catalog.importers.base import CatalogImportError
from catalog.importers.movielens import movielens_import
from catalog.models import Feature, Feedback, FeedbackKind, Item, ItemFeature, UserProfile

pytestmark = pytest.mark.django_db


def _run_command(directory: Path) -> tuple[dict, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_movielens", str(directory), "--no-progress", "--json", stdout=out, stderr=err)
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


def _stats() -> dict:
    out = io.StringIO()
    call_command("stats", "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.movielens
def test_ml100k_imports_everything_and_a_second_run_adds_nothing(movielens_100k_dir):
    summary, errors = _run_command(movielens_100k_dir)

    assert summary["layout"] == "ml-100k"
    assert summary["bad_row_count"] == 0, errors
    assert summary["added"]["items"] == 1682
    assert summary["added"]["users"] == 943
    assert summary["added"]["feedback"] == 100000
    stats = _stats()
    assert (stats["users"], stats["items"], stats["feedback"]["rating"]) == (943, 1682, 100000)

    toy_story = Item.objects.get(external_id="1")
    assert toy_story.title == "Toy Story (1995)"
    assert toy_story.published_at == datetime(1995, 1, 1, tzinfo=UTC)
    assert set(toy_story.features.filter(type="genre").values_list("value", flat=True)) == {
        "Animation",
        "Children's",
        "Comedy",
    }
    assert set(toy_story.features.filter(type__in=["year", "decade"]).values_list("value", flat=True)) == {
        "1995",
        "1990s",
    }
    first = UserProfile.objects.select_related("user").get(external_id="1")
    assert first.user.username == "ml-1" and not first.user.has_usable_password()
    assert {str(feature) for feature in first.features.all()} == {
        "age=18-24",
        "gender=M",
        "occupation=technician",
        "country=US",
        "zip_region=8",
    }
    # u.data line 1: user 196 rated item 242 with 3 at unix time 881250949.
    rating = Feedback.objects.get(user__external_id="196", item__external_id="242", kind="rating")
    assert (rating.value, rating.is_current) == (3.0, True)
    assert rating.created_at == datetime.fromtimestamp(881250949, tz=UTC)

    again, _ = _run_command(movielens_100k_dir)
    assert set(again["added"].values()) == {0}
    assert Feedback.objects.count() == 100000


@pytest.mark.movielens
def test_corrupt_lines_are_named_and_the_rest_is_imported(movielens_100k_dir, tmp_path):
    copy = tmp_path / "ml-100k"
    shutil.copytree(movielens_100k_dir, copy)
    lines = (copy / "u.data").read_text().splitlines()
    lines[9] = "196\t242"  # line 10: too few columns
    lines[4999] = "22\t377\tfive\t878887116"  # line 5000: non-numeric rating
    lines[99998] = "22\t99999\t3\t878887116"  # line 99999: unknown item id
    (copy / "u.data").write_text("\n".join(lines) + "\n")

    summary, errors = _run_command(copy)

    assert [(row["file"], row["line"]) for row in summary["bad_rows"]] == [
        ("u.data", 10),
        ("u.data", 5000),
        ("u.data", 99999),
    ]
    assert summary["bad_row_count"] == 3
    assert "u.data:10: expected 4 columns, found 2" in errors
    assert "u.data:5000: rating 'five' is not a number" in errors
    assert "u.data:99999: unknown item id 99999" in errors
    assert summary["added"]["feedback"] == 99997
    assert Feedback.objects.count() == 99997


def _write_csv_dataset(directory: Path) -> Path:
    directory.mkdir()
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Untitled Short,(no genres listed)\n"
    )
    (directory / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "7,1,Pixar,1139045764\n"
        "8,1,pixar,1139045765\n"
        '7,2,"politics, romance",1139045766\n'
        "7,404,orphan,1139045767\n"
    )
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"  # 2
        "1,2,3.5,964981247\n"  # 3
        "2,1,0.5,964982224\n"  # 4: half star, below the 1.0 minimum the test sets
        "2,3,5.0,964983815\n"  # 5
        "3,404,4.0,964982931\n"  # 6: unknown movie
        ",1,4.0,964982931\n"  # 7: empty user id
        "3,1,4.0\n"  # 8: three columns
        "3,2,4.5,964982400\n"  # 9
    )
    return directory


def test_csv_layout_imports_movies_tags_and_ratings(tmp_path):
    directory = _write_csv_dataset(tmp_path / "ml-latest-small")
    # Half stars are valid by default (0.5..5); an admin who narrowed the range to 1..5 gets them reported.
    FeedbackKind.objects.filter(code="rating").update(min_value=1.0)

    summary, errors = _run_command(directory)

    assert summary["layout"] == "csv"
    assert [(row["file"], row["line"]) for row in summary["bad_rows"]] == [
        ("tags.csv", 5),
        ("ratings.csv", 4),
        ("ratings.csv", 6),
        ("ratings.csv", 7),
        ("ratings.csv", 8),
    ]
    assert "ratings.csv:4: rating 0.5 is outside the rating kind's range 1..5" in errors
    assert summary["added"]["items"] == 3 and summary["added"]["feedback"] == 4
    assert summary["added"]["users"] == 3  # users 1, 2, 3 rated; taggers 7 and 8 did not
    president = Item.objects.get(external_id="2")
    assert president.title == "American President, The (1995)"
    assert president.published_at == datetime(1995, 1, 1, tzinfo=UTC)
    assert set(president.features.filter(type="genre").values_list("value", flat=True)) == {
        "Comedy",
        "Drama",
        "Romance",
    }
    assert list(Item.objects.get(external_id="3").features.values_list("type", flat=True)) == []
    # Tags are normalised, so "Pixar" and "pixar" are one feature linked once.
    assert list(Feature.objects.filter(type="tag").order_by("value").values_list("value", flat=True)) == [
        "pixar",
        "politics, romance",
    ]
    assert ItemFeature.objects.filter(feature__type="tag", item__external_id="1").count() == 1
    assert dict(Feedback.objects.filter(user__external_id="3").values_list("item__external_id", "value")) == {"2": 4.5}
    assert get_user_model().objects.filter(username__startswith="ml-").count() == 3

    # Widening the rating kind's range (as an admin would) lets the half-star row in; nothing else changes.
    FeedbackKind.objects.filter(code="rating").update(min_value=0.5)
    again, _ = _run_command(directory)
    assert again["added"]["feedback"] == 1 and again["added"]["items"] == 0 and again["added"]["users"] == 0
    assert Feedback.objects.get(user__external_id="2", item__external_id="1").value == 0.5


def test_an_abort_half_way_leaves_no_rows(tmp_path):
    directory = _write_csv_dataset(tmp_path / "broken")
    # movies.csv and tags.csv load first; then reading ratings.csv fails (it is a folder).
    (directory / "ratings.csv").unlink()
    (directory / "ratings.csv").mkdir()

    with pytest.raises(IsADirectoryError):
        movielens_import(directory=directory, progress=False)

    assert (Item.objects.count(), Feature.objects.count(), UserProfile.objects.count()) == (0, 0, 0)


def test_a_folder_without_movielens_files_is_refused(tmp_path):
    with pytest.raises(CatalogImportError, match="not a MovieLens folder"):
        movielens_import(directory=tmp_path, progress=False)
