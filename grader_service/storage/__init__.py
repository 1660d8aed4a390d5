"""Storage: git repositories, upload extraction, release staging, data-dir layout."""
