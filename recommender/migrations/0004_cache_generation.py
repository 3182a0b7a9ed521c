"""The cache-generation counters (`recommender.generations`).

Before this migration the table was created on first use; ``IF NOT EXISTS`` adopts a table an
existing deployment already has.
"""
from django.db import migrations

CREATE = ("CREATE TABLE IF NOT EXISTS rec_cache_generation "
          "(scope text PRIMARY KEY, generation bigint NOT NULL DEFAULT 0)")


class Migration(migrations.Migration):
    dependencies = [("recommender", "0003_rule_impression")]

    operations = [migrations.RunSQL(CREATE, reverse_sql="DROP TABLE IF EXISTS rec_cache_generation")]
