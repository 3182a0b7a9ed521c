"""The catalogue imports nothing from the recommender, and its templates name none of its URLs.

Data flows one way (catalog → recommender): the recommender reads the catalogue and adds to its
pages through registries (catalog/item_panels.py), never the other way round.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.urls import URLPattern, URLResolver, get_resolver

REPO = Path(__file__).resolve().parent.parent.parent
CATALOG_TEMPLATES = [
    "templates/catalog",
    "templates/registration",
    *(
        f"templates/partials/{name}.html"
        for name in ("catalogue_results", "item_card", "item_statistics", "rating_widget", "pagination")
    ),
]


def _url_names(patterns, *, module_prefix: str) -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            names |= _url_names(pattern.url_patterns, module_prefix=module_prefix)
        elif isinstance(pattern, URLPattern) and pattern.name and pattern.callback.__module__.startswith(module_prefix):
            names.add(pattern.name)
    return names


def test_catalog_imports_nothing_from_the_recommender():
    offenders = []
    for path in (REPO / "catalog").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from|import)\s+recommender\b", line) or 'import_module("recommender' in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_catalog_templates_name_no_recommender_url():
    recommender_names = _url_names(get_resolver().url_patterns, module_prefix="recommender")
    assert "item-related-panel" in recommender_names and "models" in recommender_names
    files = []
    for entry in CATALOG_TEMPLATES:
        path = REPO / entry
        files += sorted(path.rglob("*.html")) if path.is_dir() else [path]
    offenders = []
    for path in files:
        for name in re.findall(r"{%\s*url\s+['\"]([^'\"]+)['\"]", path.read_text()):
            if name in recommender_names:
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert files and not offenders, offenders
