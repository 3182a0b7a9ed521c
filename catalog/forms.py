"""Forms for the catalogue pages: the filter bar, the rating widget and sign-up."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm

from catalog.selectors import ITEM_SORTS, PROVIDER_FACET

PAGE_SIZE_DEFAULT = 24
# A cap, not a validation error: a huge ?page_size= is clamped rather than refused.
PAGE_SIZE_MAX = 96
SORT_LABELS = {"popular": "Most popular", "newest": "Newest", "title": "Title A–Z"}


class CatalogueFilterForm(forms.Form):
    """GET filters for /catalogue/: one multiple-choice field per facet type in use."""

    q = forms.CharField(label="Search titles", required=False, max_length=200)
    sort = forms.ChoiceField(label="Sort by", required=False, choices=[(s, SORT_LABELS[s]) for s in ITEM_SORTS])
    page_size = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args, facets: dict[str, list[tuple[str, int]]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.facet_types = [feature_type for feature_type, values in facets.items() if values]
        for feature_type in self.facet_types:
            self.fields[feature_type] = forms.MultipleChoiceField(
                label=feature_type.replace("_", " ").capitalize(),
                required=False,
                choices=[(value, f"{value} ({count})") for value, count in facets[feature_type]],
                widget=forms.CheckboxSelectMultiple,
            )

    def clean_sort(self) -> str:
        return self.cleaned_data.get("sort") or "popular"

    def clean_page_size(self) -> int:
        size = self.cleaned_data.get("page_size") or PAGE_SIZE_DEFAULT
        return min(size, PAGE_SIZE_MAX)

    def selected_features(self) -> dict[str, list[str]]:
        """Feature filters from the fields that validated; invalid ones are ignored (and shown)."""
        data = getattr(self, "cleaned_data", {})
        return {t: data[t] for t in self.facet_types if data.get(t) and t != PROVIDER_FACET}

    def selected_providers(self) -> list[str]:
        return list(getattr(self, "cleaned_data", {}).get(PROVIDER_FACET) or [])


class RateForm(forms.Form):
    """One POST from the rating widget: a star rating, or a like/dislike button."""

    KIND_CHOICES = [("rating", "Rating"), ("like", "Like"), ("dislike", "Dislike")]

    kind = forms.ChoiceField(choices=KIND_CHOICES, initial="rating")
    value = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=5,
        error_messages=dict.fromkeys(("invalid", "min_value", "max_value"), "Choose a rating from 1 to 5 stars."),
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("kind") in ("like", "dislike"):
            # The widget is one form: a like also submits whichever star happens to be checked.
            self.errors.pop("value", None)
            data["value"] = None
        elif data.get("kind") == "rating" and data.get("value") is None and "value" not in self.errors:
            self.add_error("value", "Choose a rating from 1 to 5 stars.")
        return data


class SignUpForm(UserCreationForm):
    """Django's own user creation form; the view adds the recommender profile."""
