"""The daily partitions, defined once for every daily asset."""

import dagster as dg

from assets.resources import SETTINGS

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date,
    timezone=SETTINGS.timezone,
)
