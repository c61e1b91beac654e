from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=200)
    shipped = models.BooleanField(default=False)
    # The server process of the Django connection the SHIP_ORDER job shipped it on.
    shipped_by = models.IntegerField(null=True)
