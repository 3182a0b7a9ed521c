"""The generic interactions importer: real files, real PostgreSQL, counts checked against the files."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.array_selectors import catalog_arrays_fetch
from catalog.models import Feedback, FeedbackKind, Item, UserProfile
from recommender.ml.dataset import IdMap, build_interactions
from tests.conftest import SHARED_DIR

pytestmark = pytest.mark.django_db

LASTFM = SHARED_DIR / "datasets" / "hetrec2011-lastfm-2k"


def _run(*arguments: str) -> tuple[dict, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_interactions", *arguments, "--no-progress", "--json", stdout=out, stderr=err)
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


@pytest.fixture
def lastfm_dir() -> Path:
    if not (LASTFM / "user_artists.dat").exists() or not (LASTFM / "artists.dat").exists():
        pytest.skip(f"hetrec2011-lastfm-2k not found at {LASTFM}")
    return LASTFM


def _lastfm_arguments(interactions: Path, artists: Path) -> list[str]:
    return [
        str(interactions),
        *("--user-col", "1", "--item-col", "2", "--count-col", "3", "--kind", "play"),
        *("--items-file", str(artists), "--item-id-col", "id", "--item-title-col", "name"),
    ]


def _count_lastfm(interactions: Path, artists: Path) -> tuple[set[str], set[str], dict[tuple[str, str], float]]:
    """Users, artists and (user, artist) → count, read with plain Python, independently of the importer."""
    with artists.open(encoding="utf-8", newline="") as handle:
        artist_ids = {line.split("\t")[0].strip() for line in handle.read().splitlines()[1:] if line.strip()}
    counts: dict[tuple[str, str], float] = {}
    with interactions.open(encoding="utf-8", newline="") as handle:
        for line in handle.read().splitlines():
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) == 3 and fields[2].isdigit():  # skips a header line, if the file has one
                counts[(fields[0], fields[1])] = float(fields[2])
    users = {user for user, _ in counts}
    assert {artist for _, artist in counts} <= artist_ids
    return users, artist_ids, counts


@pytest.mark.lastfm
def test_lastfm_imports_every_user_artist_and_count_and_a_second_run_adds_nothing(lastfm_dir):
    interactions, artists = lastfm_dir / "user_artists.dat", lastfm_dir / "artists.dat"
    users, artist_ids, counts = _count_lastfm(interactions, artists)
    assert (len(users), len(artist_ids)) == (1892, 17632)

    summary, errors = _run(*_lastfm_arguments(interactions, artists))

    assert summary["bad_row_count"] == 0, errors
    assert summary["added"]["feedback"] == len(counts)
    assert (summary["added"]["users"], summary["added"]["items"]) == (1892, 17632)
    assert UserProfile.objects.count() == 1892
    assert set(Item.objects.values_list("external_id", flat=True)) == artist_ids
    stored = {(u, i): v for u, i, v in Feedback.objects.values_list("user__external_id", "item__external_id", "value")}
    assert stored == counts
    assert set(Feedback.objects.values_list("kind", "is_current").distinct()) == {("play", True)}
    assert Item.objects.get(external_id="1686").title == '"Weird Al" Yankovic'  # quotes kept: TSV has none

    again, _ = _run(*_lastfm_arguments(interactions, artists))
    assert set(again["added"].values()) == {0}
    assert Feedback.objects.count() == len(counts)


@pytest.mark.lastfm
def test_a_malformed_lastfm_line_is_named_and_every_good_row_is_kept(lastfm_dir, tmp_path):
    lines = (lastfm_dir / "user_artists.dat").read_bytes().split(b"\r\n")
    broken = tmp_path / "user_artists.dat"
    broken.write_bytes(b"\r\n".join([*lines[:100], b"2\tnot-a-count-line", *lines[100:]]))
    _, _, counts = _count_lastfm(lastfm_dir / "user_artists.dat", lastfm_dir / "artists.dat")

    summary, errors = _run(*_lastfm_arguments(broken, lastfm_dir / "artists.dat"))

    assert summary["bad_row_count"] == 1
    assert "user_artists.dat:101: expected at least 3 columns, found 2" in errors
    assert summary["bad_rows"] == [
        {"file": "user_artists.dat", "line": 101, "reason": "expected at least 3 columns, found 2"}
    ]
    assert summary["added"]["feedback"] == len(counts) == Feedback.objects.count()


# --- a small synthetic file: column mapping, timestamps, kinds, bad rows, the transform --------

INTERACTIONS_CSV = (
    "when,who,what,action,amount\r\n"
    "2024-05-01T12:00:00Z,u1,i1,play,99\r\n"  # 2: play count
    "1714564800,u1,i2,view,1\r\n"  # 3: a view, unix seconds
    "2024-05-01T12:00:00,u2,i1,rating,4.5\r\n"  # 4: an ISO time without zone (UTC)
    "2024-05-01,u2,i3,play,9\r\n"  # 5
    "yesterday,u3,i1,play,3\r\n"  # 6: bad timestamp
    "1714564800,u3,i404,play,3\r\n"  # 7: item not in the item file
    "1714564800,u3,i1,shout,3\r\n"  # 8: unknown kind
    "1714564800,u3,i1,play,-2\r\n"  # 9: below the play kind's minimum
    "1714564800,u3,i1,rating,9\r\n"  # 10: above the rating kind's maximum
    "1714564800,,i1,play,1\r\n"  # 11: empty user
    "1714564800,u3,i2\r\n"  # 12: too few columns
    "1714564800,u3,i2,play,lots\r\n"  # 13: not a number
    "\r\n"  # 14: blank, skipped
    "1714564800,u3,i2,play,0\r\n"  # 15: a count of 0 is a good row
)
ITEMS_CSV = 'id,name,genres\ni1,"Song, the first",rock|pop\ni2,Second,\ni3,,jazz\ni3,Duplicate,\n'


def test_a_mapped_csv_with_an_item_file_imports_good_rows_and_names_every_bad_one(tmp_path):
    (tmp_path / "log.csv").write_text(INTERACTIONS_CSV, encoding="utf-8", newline="")
    (tmp_path / "items.csv").write_text(ITEMS_CSV, encoding="utf-8")
    arguments = [
        str(tmp_path / "log.csv"),
        *("--user-col", "who", "--item-col", "what", "--value-col", "amount"),
        *("--timestamp-col", "when", "--kind-col", "action"),
        *("--items-file", str(tmp_path / "items.csv"), "--item-title-col", "name"),
        *("--item-feature-col", "genre=genres", "--feature-sep", "|"),
    ]

    summary, errors = _run(*arguments)

    reasons = {row["line"]: row["reason"] for row in summary["bad_rows"] if row["file"] == "log.csv"}
    assert reasons == {
        6: "timestamp 'yesterday' is neither unix seconds nor ISO 8601",
        7: "unknown item id i404 (not in items.csv)",
        8: "unknown kind 'shout' (known: click, dislike, like, play, purchase, rating, view)",
        9: "value -2 is outside the play kind's range 0..",
        10: "value 9 is outside the rating kind's range 0.5..5",
        11: "empty user id",
        12: "expected at least 5 columns, found 3",
        13: "value 'lots' is not a number",
    }
    assert "log.csv:6: timestamp 'yesterday' is neither unix seconds nor ISO 8601" in errors
    # The item file's own bad row: a duplicate id (the first one stands).
    item_errors = [row for row in summary["bad_rows"] if row["file"] == "items.csv"]
    assert item_errors == [{"file": "items.csv", "line": 5, "reason": "duplicate item id i3 (first on line 4)"}]
    assert summary["bad_row_count"] == 9

    assert summary["added"]["items"] == 3 and summary["added"]["users"] == 3
    assert dict(Item.objects.values_list("external_id", "title")) == {
        "i1": "Song, the first",
        "i2": "Second",
        "i3": "i3",
    }
    assert set(Item.objects.get(external_id="i1").features.values_list("type", "value")) == {
        ("genre", "rock"),
        ("genre", "pop"),
    }
    rows = {
        (row.user.external_id, row.item.external_id, row.kind_id): row
        for row in Feedback.objects.select_related("user", "item")
    }
    assert set(rows) == {
        ("u1", "i1", "play"),
        ("u1", "i2", "view"),
        ("u2", "i1", "rating"),
        ("u2", "i3", "play"),
        ("u3", "i2", "play"),
    }
    noon = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert rows[("u1", "i1", "play")].created_at == noon and rows[("u1", "i1", "play")].is_current is True
    assert rows[("u1", "i2", "view")].created_at == datetime.fromtimestamp(1714564800, tz=UTC)
    assert rows[("u1", "i2", "view")].is_current is None  # a repeatable event
    assert (rows[("u2", "i1", "rating")].value, rows[("u2", "i1", "rating")].created_at) == (4.5, noon)
    assert rows[("u2", "i3", "play")].created_at == datetime(2024, 5, 1, tzinfo=UTC)
    assert Item.objects.get(external_id="i1").popularity == 2

    again, _ = _run(*arguments)
    assert set(again["added"].values()) == {0} and Feedback.objects.count() == 5


# The same rows without the ragged and the blank line: PostgreSQL reads this file itself (the
# fast path of catalog/importers/interactions_copy.py), and the rows its SQL rules cannot pass —
# the bad ones, and the good ones with ISO 8601 times — are judged by the Python parser.
FAST_PATH_CSV = "".join(
    line + "\r\n" for number, line in enumerate(INTERACTIONS_CSV.split("\r\n")[:-1], start=1) if number not in (12, 14)
)


def test_the_copy_fast_path_reports_the_same_bad_rows_and_keeps_the_same_good_ones(tmp_path, caplog):
    caplog.set_level("INFO", logger="catalog.importers.interactions_copy")
    (tmp_path / "log.csv").write_text(FAST_PATH_CSV, encoding="utf-8", newline="")
    (tmp_path / "items.csv").write_text(ITEMS_CSV, encoding="utf-8")
    arguments = [
        str(tmp_path / "log.csv"),
        *("--user-col", "who", "--item-col", "what", "--value-col", "amount"),
        *("--timestamp-col", "when", "--kind-col", "action"),
        *("--items-file", str(tmp_path / "items.csv"), "--item-title-col", "name"),
    ]

    summary, _ = _run(*arguments)

    # Rows 2, 4 and 5 (ISO times) and the seven bad ones went to Python; 3 and 13 stayed in SQL.
    assert "copy_fast_path used=True source=log.csv records=12 staged=2 suspects=10" in caplog.text
    reasons = {row["line"]: row["reason"] for row in summary["bad_rows"] if row["file"] == "log.csv"}
    assert reasons == {
        6: "timestamp 'yesterday' is neither unix seconds nor ISO 8601",
        7: "unknown item id i404 (not in items.csv)",
        8: "unknown kind 'shout' (known: click, dislike, like, play, purchase, rating, view)",
        9: "value -2 is outside the play kind's range 0..",
        10: "value 9 is outside the rating kind's range 0.5..5",
        11: "empty user id",
        12: "value 'lots' is not a number",
    }
    assert summary["events"] == 5
    assert set(Feedback.objects.values_list("user__external_id", "item__external_id", "kind_id")) == {
        ("u1", "i1", "play"),
        ("u1", "i2", "view"),
        ("u2", "i1", "rating"),
        ("u2", "i3", "play"),
        ("u3", "i2", "play"),
    }
    assert Item.objects.get(external_id="i1").popularity == 2
    again, _ = _run(*arguments)
    assert set(again["added"].values()) == {0} and Feedback.objects.count() == 5


def test_a_quoted_file_is_read_by_the_python_parser(tmp_path, caplog):
    caplog.set_level("INFO", logger="catalog.importers.interactions_copy")
    (tmp_path / "log.csv").write_text('user,item\nu1,"i1"\n', encoding="utf-8")

    summary, _ = _run(str(tmp_path / "log.csv"), "--user-col", "user", "--item-col", "item")

    assert "copy_fast_path used=False source=log.csv reason=the file holds a quote" in caplog.text
    assert summary["added"]["feedback"] == 1 and Item.objects.get().external_id == "i1"


def test_the_play_transform_reaches_the_training_weights(tmp_path):
    (tmp_path / "plays.tsv").write_text("u1\ta\t99\nu1\tb\t0\nu2\ta\t1\n", encoding="utf-8")
    (tmp_path / "views.tsv").write_text("u2\tb\t7\n", encoding="utf-8")
    _run(str(tmp_path / "plays.tsv"), "--user-col", "1", "--item-col", "2", "--value-col", "3")
    _run(str(tmp_path / "views.tsv"), "--user-col", "1", "--item-col", "2", "--value-col", "3", "--kind", "view")
    assert Item.objects.get(external_id="a").title == "a"  # no item file: the title is the id

    arrays = catalog_arrays_fetch()
    users, items = IdMap.from_ids(arrays.user_ids), IdMap.from_ids(arrays.item_ids)
    interactions = build_interactions(
        users.index_of(arrays.feedback_user),
        items.index_of(arrays.feedback_item),
        arrays.feedback_kind_weight,
        arrays.feedback_value,
        arrays.feedback_is_explicit,
        len(users),
        len(items),
        value_transform=arrays.feedback_value_transform,
        value_transform_names=arrays.value_transform_names,
    )
    weights = interactions.weights.toarray()

    def weight(user: str, item: str) -> float:
        profile = UserProfile.objects.get(external_id=user).pk
        row = users.index_of([profile])[0]
        column = items.index_of([Item.objects.get(external_id=item).pk])[0]
        return float(weights[row, column])

    play = FeedbackKind.objects.get(pk="play")
    assert (play.value_transform, play.weight) == ("log", 1.0)
    assert weight("u1", "a") == pytest.approx(math.log(100.0), rel=1e-6)
    assert weight("u2", "a") == pytest.approx(math.log(2.0), rel=1e-6)
    assert weight("u1", "b") == 0.0  # a count of 0 is no evidence of taste
    assert weight("u2", "b") == pytest.approx(0.5)  # a view: kind weight, value ignored as before
    assert np.count_nonzero(interactions.positives.toarray()) == 3


def test_header_detection_delimiters_and_encodings(tmp_path):
    # Semicolons, a header over positions (detected: "count" over a number), latin-1.
    (tmp_path / "log.txt").write_bytes("user;item;count\nJosé;café;3\n".encode("latin-1"))
    summary, _ = _run(
        str(tmp_path / "log.txt"), "--user-col", "1", "--item-col", "2", "--value-col", "3", "--encoding", "latin-1"
    )
    assert summary["added"]["feedback"] == 1 and "semicolon-separated, header on line 1" in summary["layout"]
    assert Feedback.objects.get().item.external_id == "café"

    with pytest.raises(CommandError, match="not valid utf-8"):
        _run(str(tmp_path / "log.txt"), "--user-col", "1", "--item-col", "2")
    with pytest.raises(CommandError, match="no column 'userId'; its header names 'user', 'item', 'count'"):
        _run(str(tmp_path / "log.txt"), "--user-col", "userId", "--item-col", "item", "--encoding", "latin-1")
    with pytest.raises(CommandError, match="Unknown feedback kind 'plays'"):
        _run(
            str(tmp_path / "log.txt"), "--user-col", "1", "--item-col", "2", "--kind", "plays", "--encoding", "latin-1"
        )
