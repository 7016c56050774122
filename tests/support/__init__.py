"""Helpers shared by the tests: the app harness, a Hub stand-in, a fake launcher."""
