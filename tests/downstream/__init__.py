"""Tests of the downstream package."""
