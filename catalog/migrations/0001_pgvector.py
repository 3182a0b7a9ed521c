"""Create the pgvector extension first, and say clearly when the server does not have it."""
from django.db import migrations

MISSING_PGVECTOR = (
    "The PostgreSQL server at this DATABASE_URL has no pgvector extension available. "
    "Install pgvector on that server (for example use the pgvector/pgvector Docker image, or the "
    "postgresql-NN-pgvector package), or unset DATABASE_URL to use the embedded PostgreSQL."
)


def create_vector_extension(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if cursor.fetchone() is None:
            raise RuntimeError(MISSING_PGVECTOR)
        cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [migrations.RunPython(create_vector_extension, migrations.RunPython.noop)]
