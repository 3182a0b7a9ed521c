"""Forms of the dashboard pages."""

from __future__ import annotations

import json

from django import forms

from recommender.experiments.models import Experiment, VariantScorer
from recommender.experiments.selectors import servable_versions
from recommender.experiments.services import EXPERIMENT_FIELDS, VariantSpec
from recommender.rerank.selectors import rule_set_list


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".zip,.csv,.data,.item,.user,.genre"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(part, initial) for part in data]
        return [single(data, initial)]


class ImportUploadForm(forms.Form):
    files = MultipleFileField(
        label="MovieLens files",
        help_text="A MovieLens zip (ml-100k, ml-latest-small, …), or u.data + u.item (+ u.user), "
        "or ratings.csv + movies.csv (+ tags.csv).",
    )


_COLUMN_HELP = "A header name, or a 1-based position (1, 2, …)."


class InteractionsUploadForm(forms.Form):
    """Any interactions file with its column mapping (docs/importing.md, "Any interactions file")."""

    interactions = forms.FileField(label="Interactions file", help_text="CSV, TSV or .dat; one interaction a line.")
    user_col = forms.CharField(label="User column", max_length=100, help_text=_COLUMN_HELP)
    item_col = forms.CharField(label="Item column", max_length=100, help_text=_COLUMN_HELP)
    value_col = forms.CharField(label="Value or count column", max_length=100, required=False)
    timestamp_col = forms.CharField(
        label="Timestamp column", max_length=100, required=False, help_text="Unix seconds or ISO 8601."
    )
    kind_col = forms.CharField(label="Kind column", max_length=100, required=False)
    kind = forms.CharField(
        label="Kind for every row",
        max_length=32,
        required=False,
        help_text="When there is no kind column (default play).",
    )
    items_file = forms.FileField(
        label="Item file", required=False, help_text="Optional; interactions naming other items are bad rows."
    )
    item_id_col = forms.CharField(label="Item id column", max_length=100, required=False, help_text="Default 1.")
    item_title_col = forms.CharField(label="Item title column", max_length=100, required=False)
    item_feature_cols = forms.CharField(
        label="Item feature columns",
        max_length=500,
        required=False,
        help_text="Comma-separated [TYPE=]COLUMN, e.g. genre=genres.",
    )
    feature_sep = forms.CharField(label="Feature separator", max_length=1, required=False, strip=False)
    users_file = forms.FileField(label="User file", required=False)
    user_id_col = forms.CharField(label="User id column", max_length=100, required=False, help_text="Default 1.")
    delimiter = forms.ChoiceField(
        choices=[("", "detect"), ("tab", "tab"), ("comma", "comma"), ("semicolon", "semicolon"), ("pipe", "pipe")],
        required=False,
    )
    encoding = forms.ChoiceField(choices=[("utf-8", "UTF-8"), ("latin-1", "Latin-1")], initial="utf-8")
    header = forms.ChoiceField(
        label="Header line", choices=[("auto", "detect"), ("yes", "yes"), ("no", "no")], initial="auto"
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind_col") and cleaned.get("kind"):
            raise forms.ValidationError("Give a kind column or one kind for every row, not both.")
        return cleaned

    def command_options(self) -> dict:
        """The mapping as `import_interactions` options (files are added by the upload service)."""
        data = self.cleaned_data
        options = {
            key: data[key]
            for key in ("user_col", "item_col", "value_col", "timestamp_col", "kind_col", "kind", "delimiter")
            if data.get(key)
        }
        options |= {"encoding": data["encoding"], "header": data["header"]}
        if data.get("items_file"):
            options |= {key: data[key] for key in ("item_id_col", "item_title_col", "feature_sep") if data.get(key)}
            features = [spec.strip() for spec in (data.get("item_feature_cols") or "").split(",") if spec.strip()]
            if features:
                options["item_feature_col"] = features
        if data.get("users_file") and data.get("user_id_col"):
            options["user_id_col"] = data["user_id_col"]
        return options


class ViewAsForm(forms.Form):
    user = forms.CharField(
        label="View as user",
        required=False,
        max_length=128,
        help_text="External id of the user; empty to stop viewing as someone else.",
    )


class ExperimentForm(forms.ModelForm):
    """The experiment's own fields; the service validates it together with its variants."""

    class Meta:
        model = Experiment
        fields = list(EXPERIMENT_FIELDS)
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "starts_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
            "ends_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        }

    def service_fields(self) -> dict:
        return {name: self.cleaned_data[name] for name in self.Meta.fields}


class VariantForm(forms.Form):
    key = forms.SlugField(max_length=32, help_text="Short, e.g. A or new-model.")
    name = forms.CharField(max_length=100, required=False)
    share = forms.IntegerField(min_value=1, max_value=100, help_text="Percent of the traffic.")
    is_control = forms.BooleanField(label="Control", required=False)
    version = forms.ModelChoiceField(
        queryset=servable_versions(), required=False, empty_label="The active one", label="Model version"
    )
    rule_set = forms.ModelChoiceField(queryset=rule_set_list(), required=False, empty_label="Rules in force")
    scorer = forms.ChoiceField(choices=VariantScorer.choices, initial=VariantScorer.MODEL)
    candidate_sizes = forms.CharField(
        required=False,
        label="Candidate sizes (JSON)",
        widget=forms.TextInput(attrs={"placeholder": '{"popular": 50}'}),
        help_text="Optional: candidates per source; empty for the surface's sizes.",
    )

    def clean_candidate_sizes(self):
        text = self.cleaned_data["candidate_sizes"].strip()
        if not text:
            return None
        try:
            return json.loads(text)  # its shape is the service's to judge (experiment_problems)
        except json.JSONDecodeError as error:
            message = f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
            raise forms.ValidationError(message) from error

    def spec(self) -> VariantSpec:
        data = self.cleaned_data
        return VariantSpec(
            key=data["key"],
            share=data["share"],
            name=data["name"],
            is_control=data["is_control"],
            version=data["version"],
            rule_set=data["rule_set"],
            candidate_sizes=data["candidate_sizes"],
            scorer=data["scorer"],
        )


class BaseVariantFormSet(forms.BaseFormSet):
    def specs(self) -> list[VariantSpec]:
        """The filled-in rows (blank extra rows skipped: their cleaned data is empty), in order."""
        return [form.spec() for form in self.forms if form.cleaned_data]


# Two rows at least (blank extra rows are ignored); "at least two" itself is the service's rule.
VariantFormSet = forms.formset_factory(VariantForm, formset=BaseVariantFormSet, extra=1, min_num=2)

VARIANT_INITIAL = [{"key": "A", "share": 50, "is_control": True}, {"key": "B", "share": 50}]
