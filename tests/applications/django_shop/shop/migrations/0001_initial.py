from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("email", models.CharField(max_length=200)),
                ("shipped", models.BooleanField(default=False)),
                ("shipped_by", models.IntegerField(null=True)),
            ],
        ),
    ]
