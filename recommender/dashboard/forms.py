"""Forms of the dashboard pages."""

from __future__ import annotations

from django import forms


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
