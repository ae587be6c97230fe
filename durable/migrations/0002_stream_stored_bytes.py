from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce


def count_stored_bytes(apps, schema_editor):
    Stream = apps.get_model("durable", "Stream")
    StreamMessage = apps.get_model("durable", "StreamMessage")
    sizes = StreamMessage.objects.filter(stream=OuterRef("pk")).values("stream").annotate(total=Sum("size")).values("total")
    Stream.objects.update(stored_bytes=Coalesce(Subquery(sizes), 0))


class Migration(migrations.Migration):
    dependencies = [("durable", "0001_initial")]

    operations = [
        migrations.AddField(model_name="stream", name="stored_bytes", field=models.BigIntegerField(default=0)),
        migrations.RunPython(count_stored_bytes, migrations.RunPython.noop),
    ]
