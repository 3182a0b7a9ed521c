"""A staff member runs an experiment from the dashboard in a real Chromium: creates it with the
form, starts it, watches traffic arrive on its page, and promotes the winner."""

from __future__ import annotations

import pytest

from catalog.services.feedback import feedback_record
from recommender import serving
from recommender.selectors import active_version
from recommender.serving import impressions_flush
from tests.browser.conftest import shot, sign_in
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.experiments.conftest import click_draw
from tests.recommender.test_training import train_inline

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _browse_and_click(catalog) -> int:
    """Every planted user opens their homepage; each clicks own-cluster items with probability 0.4."""
    cluster_of_item = {item.pk: cluster for cluster, items in catalog.items_by_cluster.items() for item in items}
    clicks = 0
    for cluster, profiles in catalog.profiles_by_cluster.items():
        for profile in profiles:
            for entry in serving.recommend_for_user(profile=profile, k=10).items:
                p = 0.4 if cluster_of_item[entry.item.pk] == cluster else 0.02
                if click_draw(0, profile.external_id, entry.item.external_id) < p:
                    feedback_record(profile=profile, item=entry.item, kind="click")
                    clicks += 1
    impressions_flush()
    return clicks


def test_staff_create_an_experiment_watch_traffic_arrive_and_promote_the_winner(page, staff_user, settings):
    settings.TRAINING_NUM_THREADS = 1
    catalog = build_planted_catalog(clusters=4, users_per_cluster=20, items_per_cluster=20, ratings_per_user=8)
    challenger = train_inline()
    incumbent = train_inline()  # active; the challenger stays ready
    assert active_version().pk == incumbent.pk

    sign_in(page, "staff")
    page.goto("/experiments/")
    page.click("text=New experiment")
    page.fill("#id_name", "Model against popular")
    page.select_option("#id_surface", "home")
    page.fill("#id_variants-0-key", "A")
    page.fill("#id_variants-0-name", "popular")
    page.fill("#id_variants-0-share", "50")
    page.check("#id_variants-0-is_control")
    page.select_option("#id_variants-0-scorer", "popularity")
    page.fill("#id_variants-0-candidate_sizes", '{"popular": 50}')
    page.fill("#id_variants-1-key", "B")
    page.fill("#id_variants-1-name", "challenger")
    page.fill("#id_variants-1-share", "50")
    page.select_option("#id_variants-1-version", str(challenger.pk))
    shot(page, "experiment-new")
    page.click("button:has-text('Create the draft')")
    page.wait_for_selector("[data-testid=experiment-status]:has-text('Draft')")

    page.click("[data-testid=start]")
    page.wait_for_selector("[data-testid=experiment-status]:has-text('Running')")
    assert page.locator("[data-testid=results] tr[data-variant=A] td").nth(2).inner_text() == "0"

    assert _browse_and_click(catalog) > 0
    page.reload()
    shot(page, "experiment-traffic")
    users = {
        key: int(page.locator(f"[data-testid=results] tr[data-variant={key}] td").nth(2).inner_text()) for key in "AB"
    }
    assert users["A"] > 0 and users["B"] > 0 and users["A"] + users["B"] == 80
    assert (
        "challenger is better than popular on click-through at 95%"
        in page.locator("[data-testid=verdicts]").inner_text()
    )
    assert page.locator("#promote-variant option:checked").inner_text().startswith("challenger")
    assert page.locator("[data-testid=daily-chart], svg").count() >= 1

    page.click("[data-testid=promote]")
    page.wait_for_selector("[data-testid=experiment-status]:has-text('Completed')")
    shot(page, "experiment-promoted")
    assert active_version().pk == challenger.pk
    audit = page.locator("[data-testid=audit]").inner_text()
    assert "Winner promoted" in audit and "Started" in audit and "Created" in audit
