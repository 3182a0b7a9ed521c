"""Experiments pages: the list, the create form, and one experiment's results with its status buttons.

Writes go through `recommender.experiments.services` (create, start, stop, promote), whose
refusals (ValidationError, ExperimentStateError) become form errors or messages, never a 500.
Results come from `recommender.experiments.results`, the same report the API shows.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from config.exception_handlers import ApplicationError
from recommender.experiments.models import Experiment, ExperimentStatus, Variant
from recommender.experiments.results import experiment_report, report_data
from recommender.experiments.selectors import experiment_events, experiment_list, experiment_variants
from recommender.experiments.services import experiment_create, experiment_promote, experiment_start, experiment_stop

from ..access import staff_required
from ..charts import line_chart
from ..forms import VARIANT_INITIAL, ExperimentForm, VariantFormSet
from ..selectors import forced_variants
from ..services import experiment_view_as_set

VARIANTS_PREFIX = "variants"
METRICS = (("click_through", "Click-through"), ("conversion", "Conversion"))


def _headline(data: dict) -> str:
    """One line for the list: the leader on click-through so far, and the verdict."""
    verdict = " ".join(data["verdicts"])
    if data["interleaving"] is not None:  # one mixed list: the verdict is the preference of clicking users
        return verdict if data["interleaving"]["clicking_users"] else "No clicks yet."
    measured = [v for v in data["variants"] if v["click_through"] and v["click_through"]["value"] is not None]
    if not measured:
        return "No traffic yet."
    leader = max(measured, key=lambda v: v["click_through"]["value"])
    return f"Leader: {leader['label']} ({100 * leader['click_through']['value']:.2f}% click-through). {verdict}"


@staff_required
def experiments_page(request: HttpRequest) -> HttpResponse:
    experiments = list(experiment_list())
    rows = []
    for experiment in experiments:
        running = experiment.status == ExperimentStatus.RUNNING
        rows.append(
            {
                "experiment": experiment,
                "variants": sorted(experiment.variants.all(), key=lambda v: (v.position, v.pk)),
                "headline": _headline(report_data(experiment_report(experiment))) if running else "",
            }
        )
    return render(request, "dashboard/experiments.html", {"rows": rows})


def _service_errors_show(error: ValidationError, form: ExperimentForm, formset) -> None:
    """The service's field → messages on the form's fields; "variants" (and the rest) at the formset."""
    problems = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
    for field, field_messages in problems.items():
        for message in field_messages:
            if field in form.fields:
                form.add_error(field, message)
            else:
                label = "" if field in ("variants", "__all__") else f"{field.replace('_', ' ').capitalize()}: "
                formset._non_form_errors.append(label + message)


@staff_required
def experiment_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ExperimentForm(request.POST)
        formset = VariantFormSet(request.POST, prefix=VARIANTS_PREFIX)
        if form.is_valid() and formset.is_valid():
            try:
                experiment = experiment_create(actor=request.user, variants=formset.specs(), **form.service_fields())
            except ValidationError as error:
                _service_errors_show(error, form, formset)
            else:
                messages.success(request, f"Experiment {experiment.name!r} created as a draft; start it when ready.")
                return redirect("experiments-detail", experiment_id=experiment.pk)
    else:
        form = ExperimentForm()
        formset = VariantFormSet(prefix=VARIANTS_PREFIX, initial=VARIANT_INITIAL)
    return render(request, "dashboard/experiment_new.html", {"form": form, "formset": formset})


def _p_shown(p_value: float | None) -> str:
    """A p-value as people read one: four decimals, and "< 0.0001" rather than a misleading 0.0000."""
    if p_value is None:
        return "–"
    return "< 0.0001" if p_value < 0.0001 else f"{p_value:.4f}"


def _percent(estimate: dict | None) -> dict | None:
    """An estimate as the table shows it: the rate and its 95% interval in percent.

    The normal interval of a rate from a few users can reach below 0 or above 1; a rate cannot,
    so the shown interval is clipped to [0%, 100%].
    """
    if not estimate or estimate["value"] is None:
        return None
    low, high = estimate["low"], estimate["high"]
    if low is None or high is None:
        return {"value": f"{100 * estimate['value']:.2f}%", "interval": "undefined"}
    return {
        "value": f"{100 * estimate['value']:.2f}%",
        "interval": f"{100 * max(low, 0.0):.2f}–{100 * min(high, 1.0):.2f}%",
    }


def _variant_rows(data: dict, variants: list[Variant]) -> list[dict]:
    by_id = {variant.pk: variant for variant in variants}
    rows = []
    for variant in data["variants"]:
        comparisons = variant["against_control"] or {}
        rating = variant["mean_rating"]
        rows.append(
            {
                **variant,
                "variant": by_id.get(variant["variant_id"]),
                "click_through_shown": _percent(variant["click_through"]),
                "conversion_shown": _percent(variant["conversion"]),
                "rating_shown": f"{rating['value']:.2f}" if rating and rating["value"] is not None else None,
                "ratings": rating["users"] if rating else 0,
                "p_values": [
                    (label, _p_shown(comparisons[metric]["p_value"]), comparisons[metric]["significant"])
                    for metric, label in METRICS
                    if metric in comparisons
                ],
            }
        )
    return rows


def _daily_charts(daily: list[dict], keys: list[str]) -> list[dict]:
    click_through: dict[str, list[tuple[str, float | None]]] = {key: [] for key in keys}
    impressions: dict[str, list[tuple[str, float | None]]] = {key: [] for key in keys}
    for row in daily:
        click_through.setdefault(row["variant"], []).append((row["day"], row["click_through"]))
        impressions.setdefault(row["variant"], []).append((row["day"], float(row["impressions"])))
    return [
        line_chart(click_through, label="Click-through by day of first showing", percent=True),
        line_chart(impressions, label="Impressions by day of first showing"),
    ]


@staff_required
def experiment_detail(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    variants = experiment_variants(experiment)
    data = report_data(experiment_report(experiment))
    winner_key = data["winner_key"] or (experiment.winner.key if experiment.winner else None)
    forced = forced_variants(request) or {}
    status = experiment.status
    context = {
        "experiment": experiment,
        "variants": variants,
        "rows": _variant_rows(data, variants),
        "verdicts": data["verdicts"],
        "interleaving": data["interleaving"],
        "winner_key": winner_key,
        "charts": _daily_charts(data["daily"], [variant.key for variant in variants]),
        "events": experiment_events(experiment),
        "can_start": status == ExperimentStatus.DRAFT,
        "can_stop": status == ExperimentStatus.RUNNING,
        "can_promote": status in (ExperimentStatus.RUNNING, ExperimentStatus.STOPPED),
        "can_view_as": status == ExperimentStatus.RUNNING,
        "forced_key": forced.get(str(experiment.pk)),
    }
    return render(request, "dashboard/experiment_detail.html", context)


def _refusal(request: HttpRequest, error: Exception) -> None:
    if isinstance(error, ValidationError):
        messages.error(request, "Refused: " + " ".join(error.messages))
    else:
        messages.error(request, getattr(error, "message", str(error)))


@require_POST
@staff_required
def experiment_start_view(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    try:
        experiment_start(experiment=experiment, actor=request.user)
    except (ApplicationError, ValidationError) as error:
        _refusal(request, error)
    else:
        messages.success(request, f"Experiment {experiment.name!r} is running.")
    return redirect("experiments-detail", experiment_id=experiment.pk)


@require_POST
@staff_required
def experiment_stop_view(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    try:
        experiment_stop(experiment=experiment, actor=request.user, reason=request.POST.get("reason", "")[:500])
    except (ApplicationError, ValidationError) as error:
        _refusal(request, error)
    else:
        messages.success(request, f"Experiment {experiment.name!r} stopped: its users get the normal lists again.")
    return redirect("experiments-detail", experiment_id=experiment.pk)


@require_POST
@staff_required
def experiment_promote_view(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    variant_id = request.POST.get("variant", "")
    variant = experiment.variants.filter(pk=int(variant_id)).first() if variant_id.isdigit() else None
    if variant is None:
        messages.error(request, "Pick the variant to promote.")
        return redirect("experiments-detail", experiment_id=experiment.pk)
    try:
        experiment_promote(experiment=experiment, variant=variant, actor=request.user)
    except (ApplicationError, ValidationError) as error:
        _refusal(request, error)
    else:
        messages.success(request, f"Variant {variant.label} promoted: everyone gets it now.")
    return redirect("experiments-detail", experiment_id=experiment.pk)


@require_POST
@staff_required
def experiment_view_as(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """See the site as one variant of the experiment (for this staff member's session only)."""
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    key = request.POST.get("variant", "").strip()
    if not key or "clear" in request.POST:
        experiment_view_as_set(session=request.session, experiment_id=experiment.pk, variant_key=None)
        messages.info(request, f"You get your own variant of {experiment.name!r} again.")
    elif not experiment.variants.filter(key=key).exists():
        messages.error(request, f"Experiment {experiment.name!r} has no variant {key!r}.")
    else:
        experiment_view_as_set(session=request.session, experiment_id=experiment.pk, variant_key=key)
        note = "" if experiment.status == ExperimentStatus.RUNNING else " (it applies once the experiment runs)"
        messages.info(request, f"You see the site as variant {key} of {experiment.name!r}{note}.")
    return redirect("experiments-detail", experiment_id=experiment.pk)
