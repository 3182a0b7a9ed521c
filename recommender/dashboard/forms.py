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


class ViewAsForm(forms.Form):
    user = forms.CharField(
        label="View as user",
        required=False,
        max_length=128,
        help_text="External id of the user; empty to stop viewing as someone else.",
    )
