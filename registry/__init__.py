"""The model registry: MLflow versions, semver tags, aliases and lineage."""
