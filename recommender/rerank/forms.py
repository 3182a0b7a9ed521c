"""The admin form for rules: parameters as JSON, with every kind's parameters explained inline.

Validation itself is ``Rule.clean`` (run by the ModelForm), so the admin, the API and the
services refuse exactly the same parameters with the same messages.
"""

from __future__ import annotations

import json

from django import forms
from django.utils.html import format_html, format_html_join

from .models import Rule
from .params import KIND_HELP, RuleKind, params_help_lines

EXAMPLES: dict[str, dict] = {
    RuleKind.FILTER_SEEN: {"include_views": True, "impressions_within_days": None},
    RuleKind.FILTER_DISLIKED: {"rating_at_most": 2},
    RuleKind.FILTER_FEATURE: {"feature_type": "genre", "values": ["Horror"]},
    RuleKind.FILTER_AGE: {"max_age_days": 3650, "keep_undated": True},
    RuleKind.FILTER_INACTIVE: {},
    RuleKind.BOOST_FEATURE: {"feature_type": "genre", "values": ["Comedy"], "mode": "multiply", "amount": 1.2},
    RuleKind.BOOST_FRESHNESS: {"half_life_days": 30, "weight": 0.5},
    RuleKind.DEMOTE_SHOWN: {"within_hours": 24, "factor": 0.5},
    RuleKind.DIVERSITY_MMR: {"lambda": 0.7},
    RuleKind.DIVERSITY_FEATURE_CAP: {"feature_type": "genre", "max_per_value": 2},
    RuleKind.FAIRNESS_PROVIDER_CAP: {"max_percent": 30},
    RuleKind.FAIRNESS_LONG_TAIL: {"min_percent": 20, "percentile": 80},
    RuleKind.PIN: {"item": "<external id>", "slot": 1},
}


def params_help_html() -> str:
    """One entry per kind: what it does, its parameters, and an example."""
    entries = []
    for kind in RuleKind:
        lines = params_help_lines(kind) or ["no parameters"]
        entries.append(
            format_html(
                "<li><b>{}</b> ({}): {}<ul>{}</ul>example: <code>{}</code></li>",
                kind.label,
                kind.value,
                KIND_HELP[kind],
                format_html_join("", "<li>{}</li>", ((line,) for line in lines)),
                json.dumps(EXAMPLES[kind]),
            )
        )
    return format_html(
        "Parameters of each kind, as a JSON object:<ul>{}</ul>",
        format_html_join("", "{}", ((entry,) for entry in entries)),
    )


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = ["name", "kind", "enabled", "order", "scope", "params", "starts_at", "ends_at", "rule_set"]
        widgets = {"params": forms.Textarea(attrs={"rows": 4, "cols": 60})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["params"].help_text = params_help_html()
        self.fields["kind"].help_text = (
            "Filters first, then boosts, then diversity/fairness, then pins: "
            "rules apply in ascending order and a later one can undo an earlier one."
        )
