"""The automation condition of the whole-history assets (classifiers, judges, prompts)."""

import dagster as dg

# Eager: rebuild when an upstream asset (new labels, say) was updated. The daily `logs`
# partitions are left out of the condition: eager would otherwise wait for every day
# since FLYWHEEL_START_DATE to be ingested, which never happens in a real deployment.
# New labels (consensus) are what the learning assets follow.
LEARN_ON_NEW_LABELS = dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("logs"))
