"""Admin for the catalogue. Built to stay fast with 100k+ feedback rows: raw id widgets instead
of huge select boxes, joined list queries, and no exact row counts on the feedback list."""

from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from catalog.models import Feature, Feedback, FeedbackKind, Item, ItemFeature, UserFeature, UserProfile
from catalog.services import feedback_delete, item_change_announce


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    list_display = ("type", "value", "subject")
    list_filter = ("subject", "type")
    search_fields = ("type", "value")  # also feeds the autocomplete in the inlines below
    ordering = ("subject", "type", "value")


class ItemFeatureInline(admin.TabularInline):
    model = ItemFeature
    autocomplete_fields = ("feature",)
    extra = 0


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("external_id", "title", "provider", "published_at", "is_active", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("external_id", "title", "provider")
    readonly_fields = ("created_at", "updated_at")
    inlines = (ItemFeatureInline,)
    actions = ("deactivate", "activate")

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # The admin writes the model directly; the recommender still needs to hear about it.
        item_change_announce(item_id=form.instance.pk, created=not change)

    @admin.action(description="Deactivate selected items (hide from lists and recommendations)")
    def deactivate(self, request, queryset):
        self._set_active(queryset, False)

    @admin.action(description="Activate selected items")
    def activate(self, request, queryset):
        self._set_active(queryset, True)

    @staticmethod
    def _set_active(queryset, active: bool) -> None:
        item_ids = list(queryset.exclude(is_active=active).values_list("pk", flat=True))
        Item.objects.filter(pk__in=item_ids).update(is_active=active, updated_at=timezone.now())
        for item_id in item_ids:
            item_change_announce(item_id=item_id)


class UserFeatureInline(admin.TabularInline):
    model = UserFeature
    autocomplete_fields = ("feature",)
    extra = 0


@admin.register(UserProfile)
class UserProfileAdmin(admin.ModelAdmin):
    list_display = ("external_id", "user", "created_at")
    list_select_related = ("user",)
    search_fields = ("external_id", "user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at",)
    inlines = (UserFeatureInline,)


@admin.register(FeedbackKind)
class FeedbackKindAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "weight",
        "is_explicit",
        "is_stateful",
        "value_transform",
        "min_value",
        "max_value",
        "default_value",
    )
    list_editable = ("weight",)
    search_fields = ("code", "name")

    def get_readonly_fields(self, request, obj=None):
        # Changing a code or whether a kind is stateful would silently reinterpret stored history.
        return ("code", "is_stateful") if obj is not None else ()


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """Feedback is an append-only log written through ``catalog.services.feedback_record``
    (which keeps exactly one current row per stateful kind), so here it is read-only:
    staff can inspect and delete rows, not add or edit them."""

    list_display = ("id", "user", "item", "kind", "value", "is_current", "created_at")
    list_filter = ("kind", "is_current")
    list_select_related = ("user", "item", "kind")
    search_fields = ("=user__external_id", "=item__external_id", "=idempotency_key")
    raw_id_fields = ("user", "item")
    show_full_result_count = False  # avoids a second COUNT(*) over the whole log
    list_per_page = 50
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        feedback_delete(feedback=obj)  # sends feedback_deleted so recommendations are refreshed

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for feedback in queryset:
            feedback_delete(feedback=feedback)
