# Partition tree for half-space reporting (filled in by the partition-tree issue).
