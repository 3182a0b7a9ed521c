"""Server-rendered catalogue pages. Views are thin: selectors read, services write.

Every page works without JavaScript; with htmx (``request.htmx``) the catalogue results and
the rating widget are swapped in place from the partials under ``templates/partials/``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from catalog import selectors, services
from catalog.forms import PAGE_SIZE_DEFAULT, CatalogueFilterForm, RateForm, SignUpForm
from catalog.item_panels import item_panels
from catalog.models import Feedback, Item

logger = logging.getLogger(__name__)


def catalogue(request: HttpRequest) -> HttpResponse:
    facets = selectors.feature_facets()
    form = CatalogueFilterForm(request.GET or None, facets=facets)
    form.is_valid()  # Invalid fields are shown and ignored; the valid ones still filter.
    data = getattr(form, "cleaned_data", {})
    items = selectors.item_list(
        search=data.get("q", ""),
        features=form.selected_features(),
        provider=form.selected_providers(),
        sort=data.get("sort") or "popular",
    )
    page_size = data.get("page_size") or PAGE_SIZE_DEFAULT
    page = Paginator(items, page_size).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode(), "facets": facets}
    if request.htmx and request.htmx.target == "results":
        return render(request, "partials/catalogue_results.html", context)
    return render(request, "catalog/catalogue.html", context)


def _item_or_404(external_id: str) -> Item:
    try:
        return selectors.item_detail(external_id=external_id)
    except Item.DoesNotExist:
        raise Http404("No item with this id.") from None


def _widget_context(request: HttpRequest, item: Item, form: RateForm | None = None, saved: bool = False) -> dict:
    profile = selectors.user_profile_for_user(user=request.user)
    state = selectors.user_item_state(profile=profile, item=item)
    return {
        "item": item,
        "rate_form": form,
        "state": state,
        "current_rating": state.get(selectors.RATING_KIND),
        "statistics": selectors.item_statistics(item=item),
        "saved": saved,
        "star_values": range(1, 6),
    }


def _item_page(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    return render(request, "catalog/item_detail.html", {**context, "item_panels": item_panels()}, status=status)


# Recommendation lists link their items with ?via=<surface>; opening one is the visitor's click.
CLICK_SURFACES = frozenset({"home", "related"})


def _page_click_record(request: HttpRequest, item: Item) -> None:
    """A ``click`` feedback for a signed-in visitor who opened ``item`` from a recommendation list.

    Only a same-site navigation counts (``Sec-Fetch-Site``; absent from old browsers and test
    clients): another site's link or image cannot plant clicks for a signed-in visitor. A click
    is telemetry: a failure to record it is logged and the page still renders.
    """
    if request.GET.get("via") not in CLICK_SURFACES or not request.user.is_authenticated:
        return
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return
    profile = selectors.user_profile_for_user(user=request.user)
    if profile is None:
        return
    try:
        services.feedback_record(profile=profile, item=item, kind="click")
    except ValidationError as error:  # e.g. the click kind deleted by an admin
        logger.warning("catalog.page_click_not_recorded item=%s error=%s", item.pk, error)


def item_detail(request: HttpRequest, external_id: str) -> HttpResponse:
    item = _item_or_404(external_id)
    _page_click_record(request, item)
    return _item_page(request, _widget_context(request, item))


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


@require_POST
def item_rate(request: HttpRequest, external_id: str) -> HttpResponse:
    item = _item_or_404(external_id)
    detail_url = reverse("item-detail", args=[item.external_id])
    if not request.user.is_authenticated:
        # Back to the item page, not here: a GET on this URL would only answer 405.
        login_url = redirect_to_login(detail_url).url
        return HttpResponseClientRedirect(login_url) if request.htmx else redirect(login_url)

    form = RateForm(request.POST)
    if form.is_valid():
        profile = services.user_profile_get_or_create_for_user(user=request.user)
        try:
            services.feedback_record(
                profile=profile,
                item=item,
                kind=form.cleaned_data["kind"],
                value=form.cleaned_data["value"],
            )
        except ValidationError as error:
            # The service validates against the kind's bounds too; show its words, never a 500.
            for message in error.messages:
                form.add_error(None, message)
        else:
            logger.info(
                "feedback.recorded_from_page item=%s user=%s kind=%s",
                item.external_id,
                request.user.pk,
                form.cleaned_data["kind"],
            )
            if request.htmx:
                return render(request, "partials/rating_widget.html", _widget_context(request, item, saved=True))
            messages.success(request, "Thanks, your feedback was saved.")
            return redirect(_safe_next(request, detail_url))

    context = _widget_context(request, item, form=form)
    if request.htmx:
        # htmx does not swap 4xx responses by default; the errors are in the fragment itself.
        return render(request, "partials/rating_widget.html", context)
    return _item_page(request, context, status=400)


@login_required
def my_activity(request: HttpRequest) -> HttpResponse:
    profile = selectors.user_profile_for_user(user=request.user)
    rows = selectors.user_feedback_list(profile=profile) if profile else Feedback.objects.none()
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "catalog/my_activity.html", {"page": page, "star_values": range(1, 6)})


@login_required
@require_POST
def feedback_delete(request: HttpRequest, feedback_id: int) -> HttpResponse:
    profile = selectors.user_profile_for_user(user=request.user)
    feedback = selectors.user_feedback_get(profile=profile, feedback_id=feedback_id)
    if feedback is None:
        # Someone else's row is reported as missing, so it leaks nothing about other people.
        raise Http404("No such feedback of yours.")
    services.feedback_delete(feedback=feedback)
    if request.htmx:
        return HttpResponse("")
    messages.success(request, f"Removed your {feedback.kind_id} of “{feedback.item.title}”.")
    return redirect("my-activity")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            services.user_profile_get_or_create_for_user(user=user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! Rate a few items to get recommendations.")
        return redirect(_safe_next(request, reverse("home")))
    next_url = request.POST.get("next") or request.GET.get("next", "")
    return render(request, "registration/signup.html", {"form": form, "next": next_url})
