"""pytest integration: scenario files as test items (entry point `rolekit.testing.pytest_plugin`)."""
