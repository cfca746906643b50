"""The run configuration: its schema, reading YAML with overrides, and pydantic errors as YAML
paths."""
