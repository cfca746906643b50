"""From a data source's samples to training data: reading files, RoI crops, scanning, caching,
duplicate detection, label checks and patient-level splits."""
