"""The "view as user" switcher in the nav (staff only)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from catalog.models import UserProfile

from ..access import staff_required
from ..forms import ViewAsForm
from ..selectors import profile_search
from ..services import view_as_set


def _back(request: HttpRequest) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return "/"


@require_POST
@staff_required
def view_as(request: HttpRequest) -> HttpResponse:
    form = ViewAsForm(request.POST)
    external_id = form.cleaned_data["user"].strip() if form.is_valid() else ""
    if not external_id or "clear" in request.POST:
        view_as_set(session=request.session, profile=None)
        messages.info(request, "You see the site as yourself again.")
        return redirect(_back(request))
    profile = UserProfile.objects.filter(external_id=external_id).first()
    if profile is None:
        messages.error(request, f"No user has the external id {external_id!r}.")
    else:
        view_as_set(session=request.session, profile=profile)
        messages.info(request, f"Viewing the site as user {profile.external_id}.")
    return redirect(_back(request))


@staff_required
def view_as_suggestions(request: HttpRequest) -> HttpResponse:
    """<option> elements for the switcher's datalist, as the staff member types."""
    profiles = profile_search(query=request.GET.get("user", ""))
    return render(request, "partials/dashboard_view_as_options.html", {"profiles": profiles})
